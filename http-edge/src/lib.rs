//! What every annals HTTP surface shares at its edge.
//!
//! - [`serve`](mod@serve): serving an application on a listener within limits and
//!   timeouts, with a problem document for every error answer, including
//!   those the application never sees (a head that does not parse, is too
//!   large or stalls).
//! - [`tls`]: TLS configurations from PEM files, for the listeners and
//!   for the clients annals runs, on one crypto provider.
//! - [`problem`]: the one error answer of every surface, an RFC 9457
//!   problem document.
//! - [`ids`]: an id is a UUID in one spelling, the lowercase hyphenated
//!   form; the command and the query API parse ids here, so one id is one
//!   aggregate everywhere and one malformed id one problem everywhere.
//! - [`cross_site`]: a state-changing request must carry a JSON body or
//!   `X-Requested-With`, so that a form on another site cannot send it.
//! - [`deadline`]: every request answered within a limit, or `503`.
//! - [`json`]: request bodies decoded so that every struct is read from a
//!   JSON object only (serde's derives also read arrays, field by field).
//! - [`openapi`]: a surface's OpenAPI document read for what every
//!   surface's tests check against its router.
//! - [`waking`]: a task's wake-ups of itself kept inside it, for a task
//!   that polls a connection and the request on it together.

pub mod cross_site;
pub mod deadline;
pub mod ids;
pub mod json;
pub mod openapi;
pub mod problem;
pub mod serve;
pub mod tls;
pub mod waking;

pub use problem::{PROBLEM_CONTENT_TYPE, Problem};
pub use serve::{ServeConfig, serve};

/// Whether `error`, or an error it was caused by, is a timeout: how a
/// request body cut by the connection's idle timeout shows to whatever
/// reads it (an `io::Error` of kind `TimedOut` under the body's error).
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}
