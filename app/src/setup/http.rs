//! How a process serves HTTP: where it listens, its limits and TLS, and
//! the layers every API gets.

use std::time::Duration;

use anyhow::Context;

use super::Stop;

pub fn local_addr(listener: &tokio::net::TcpListener) -> anyhow::Result<std::net::SocketAddr> {
    listener
        .local_addr()
        .context("reading the listening address")
}

pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Serves `app` on `listener` until `stop`, within the connection limits
/// and timeouts of `config`, with its TLS (see [`http_edge::serve()`]), and
/// the request deadline of `http` ([`http_edge::deadline`]), refusing
/// state-changing requests a cross-site form could send
/// ([`http_edge::cross_site`]); each request in a span, counted in the
/// metrics ([`crate::telemetry::observe`]).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    http: &crate::HttpOptions,
    config: http_edge::ServeConfig,
    stop: &Stop,
) -> std::io::Result<()> {
    let app =
        http_edge::deadline::answer_within(app, Duration::from_millis(http.request_timeout_ms))
            .layer(axum::middleware::from_fn(
                http_edge::cross_site::refuse_cross_site,
            ))
            .layer(axum::middleware::from_fn(crate::telemetry::observe));
    http_edge::serve(listener, app, config, stop.wait()).await
}

/// How a process serves HTTP: the limits of `http`, and TLS from its
/// certificate and key files when given (read here, so a missing or
/// invalid file stops the start with one line naming it). Installs the
/// process's metrics recorder unless `--no-metrics`.
pub fn serve_config(http: &crate::HttpOptions) -> anyhow::Result<http_edge::ServeConfig> {
    // First, so that the store opened next records from its start.
    if !http.no_metrics {
        crate::telemetry::install();
    }
    let tls = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => Some(http_edge::tls::server_config(cert, key)?),
        (None, None) => None,
        // The command line requires both or neither; a caller building
        // the options by hand gets the same answer.
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
    };
    Ok(http_edge::ServeConfig {
        header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(http.idle_timeout_ms),
        uri_bytes_max: http.uri_bytes_max as usize,
        request_head_bytes_max: http.request_head_bytes_max as usize,
        header_fields_max: http.header_fields_max as usize,
        tls,
        connections_max: http.connections_max as usize,
    })
}

/// The URL scheme a process served with `config` answers on.
pub fn scheme(config: &http_edge::ServeConfig) -> &'static str {
    if config.tls.is_some() {
        "https"
    } else {
        "http"
    }
}
