//! `annals verify`: checks a data directory offline, or the log in
//! PostgreSQL, and reports what it holds and any damage.

use std::process::ExitCode;

use anyhow::Context;

use crate::VerifyArgs;

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = event_store::verify(&args.data_dir).context("cannot verify the data directory")?;
    let code = if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.json {
        print_json(report.is_ok(), &report)?;
        return Ok(code);
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    print_damage(&report);
    println!(
        "{} segments, {} events, {} streams, {} snapshot files, {} snapshots, {} live subject keys, {} erased, {} spare keys: {}",
        report.segments,
        report.events,
        report.streams,
        report.snapshot_files,
        report.snapshots,
        report.key_subjects,
        report.erased_subjects,
        report.spare_keys,
        if report.is_ok() { "ok" } else { "DAMAGED" }
    );
    Ok(code)
}

/// `annals verify --store postgres://...`.
pub async fn verify_postgres(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let url = args.store.unwrap_or_default();
    if !crate::setup::is_postgres(&url) {
        anyhow::bail!(
            "--store {} is not a PostgreSQL URL (postgres://...)",
            crate::setup::redacted(&url)
        );
    }
    let store = pg_store::PgStore::connect(
        &url,
        pg_store::PgOptions {
            schema: args.store_schema.name.clone(),
            ..pg_store::PgOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot use the store at {}", crate::setup::redacted(&url)))?;
    let check = store.check().await;
    store.close().await;
    let check = check.context("cannot verify the store")?;
    let code = if check.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.json {
        print_json(check.is_ok(), &check)?;
        return Ok(code);
    }
    for problem in &check.problems {
        println!("DAMAGE {problem}");
    }
    println!(
        "schema {}: {} events, {} streams, {} snapshots, {} live subject keys, {} erased: {}",
        args.store_schema.name,
        check.events,
        check.streams,
        check.snapshots,
        check.live_subject_keys,
        check.erased_subjects,
        if check.is_ok() { "ok" } else { "DAMAGED" }
    );
    Ok(code)
}

/// `report` as one JSON object, with `ok` beside its own fields.
fn print_json(ok: bool, report: &impl serde::Serialize) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Json<'a, R> {
        ok: bool,
        #[serde(flatten)]
        report: &'a R,
    }
    let json = serde_json::to_string(&Json { ok, report }).context("writing the report as JSON")?;
    println!("{json}");
    Ok(())
}

/// Each damaged place of `report` on a line of its own.
pub(crate) fn print_damage(report: &event_store::VerifyReport) {
    for p in &report.problems {
        println!(
            "DAMAGE {} at offset {}: {}",
            p.file.display(),
            p.offset,
            p.detail
        );
    }
}
