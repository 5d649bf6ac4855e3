//! `annals verify`: checks a data directory offline and reports what it
//! holds and any damage.

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
        #[derive(serde::Serialize)]
        struct Json<'a> {
            ok: bool,
            #[serde(flatten)]
            report: &'a event_store::VerifyReport,
        }
        let json = serde_json::to_string(&Json {
            ok: report.is_ok(),
            report: &report,
        })
        .context("writing the report as JSON")?;
        println!("{json}");
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
