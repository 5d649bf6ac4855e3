//! `annals status`, `annals skip` and `annals resume`: the projector's
//! admin API from the command line, against a running `annals serve` or
//! `annals projector`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::{ProjectionArgs, StatusArgs};

#[derive(Debug, Deserialize)]
struct List {
    projections: Vec<Status>,
}

#[derive(Debug, Deserialize)]
struct Status {
    name: String,
    state: String,
    position: u64,
    head: u64,
    lag: u64,
    events_per_second: f64,
    last_error: Option<String>,
    error_position: Option<u64>,
    rebuild: Option<Rebuild>,
}

#[derive(Debug, Deserialize)]
struct Rebuild {
    state: String,
    position: u64,
}

#[derive(Debug, Deserialize)]
struct ProblemBody {
    detail: Option<String>,
    title: Option<String>,
}

/// The client of the admin API, presenting the credentials' key (an API
/// key's token) on every request when given, and trusting the CA
/// certificates of their CA file besides the public roots for an
/// https:// URL.
pub(crate) fn client(credentials: &crate::AdminCredentials) -> anyhow::Result<reqwest::Client> {
    let tls = http_edge::tls::client_config(credentials.ca_file.as_deref())?;
    let mut headers = reqwest::header::HeaderMap::new();
    // Rebuild, skip and resume have no body: the marker says a program,
    // not a cross-site form, sends them.
    headers.insert(
        http_edge::cross_site::REQUESTED_WITH,
        reqwest::header::HeaderValue::from_static("annals"),
    );
    if let Some(key) = &credentials.key {
        let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {key}"))
            .context("the API key cannot be sent in a header")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .context("setting up the HTTP client")
}

/// Sends a request to the admin API and decodes the answer, or turns a
/// problem document into one line.
pub(crate) async fn call<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    base: &str,
) -> anyhow::Result<T> {
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach {base}: `annals serve` must run there, or give the address of \
             `annals projector` with --url (ANNALS_URL)"
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        let problem: Option<ProblemBody> = response.json().await.ok();
        let detail = problem
            .and_then(|p| p.detail.or(p.title))
            .unwrap_or_else(|| status.to_string());
        anyhow::bail!("{detail}");
    }
    response
        .json()
        .await
        .with_context(|| format!("{base} answered something other than the admin API's JSON"))
}

fn line(s: &Status) -> String {
    let mut out = format!(
        "{:<12} {:<12} {:>12} {:>12} {:>10} {:>10.0}",
        s.name, s.state, s.position, s.head, s.lag, s.events_per_second
    );
    if let Some(r) = &s.rebuild {
        out.push_str(&format!("  rebuild {} at {}", r.state, r.position));
    }
    if let Some(e) = &s.last_error {
        match s.error_position {
            Some(p) => out.push_str(&format!("  error at {p}: {e}")),
            None => out.push_str(&format!("  error: {e}")),
        }
    }
    out
}

const HEADER: &str = "projection   state            position         head        lag   events/s";

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let admin = &args.admin;
    let base = admin.url.trim_end_matches('/');
    let answer: serde_json::Value = call(
        client(&admin.credentials)?.get(format!("{base}/projections")),
        base,
    )
    .await?;
    let list: List = serde_json::from_value(answer.clone())
        .with_context(|| format!("{base} answered something other than the admin API's JSON"))?;
    let failed = list.projections.iter().any(|s| s.state == "failed");
    if args.json {
        println!("{answer}");
    } else {
        println!("{HEADER}");
        for s in &list.projections {
            println!("{}", line(s));
        }
    }
    // A failed projection is worth a non-zero status to a script.
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn skip(args: ProjectionArgs, position: Option<u64>) -> anyhow::Result<ExitCode> {
    let base = args.admin.url.trim_end_matches('/');
    let mut request = client(&args.admin.credentials)?
        .post(format!("{base}/projections/{}/skip", args.projection));
    if let Some(position) = position {
        request = request.query(&[("position", position)]);
    }
    let s: Status = call(request, base)
        .await
        .with_context(|| format!("cannot skip the failed event of {}", args.projection))?;
    println!("{HEADER}\n{}", line(&s));
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(args: ProjectionArgs) -> anyhow::Result<ExitCode> {
    let base = args.admin.url.trim_end_matches('/');
    let request = client(&args.admin.credentials)?
        .post(format!("{base}/projections/{}/resume", args.projection));
    let s: Status = call(request, base)
        .await
        .with_context(|| format!("cannot resume {}", args.projection))?;
    println!("{HEADER}\n{}", line(&s));
    Ok(ExitCode::SUCCESS)
}
