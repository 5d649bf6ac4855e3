//! Testing an application the way it runs, with nothing in between faked.
//!
//! - **Aggregates**: given/when/then, pure ([`given`], re-exported from
//!   [`command_api::testkit`] so that one module serves every test).
//! - **Projections** ([`ProjectionTest`]): events appended to a real event
//!   store in a temporary directory, folded by the real projector into a
//!   real view database (a SQLite file, or a PostgreSQL database of the
//!   test's own), then read back as rows or through the application's
//!   query routes.
//! - **Services** ([`Service`]): the application's own binary, started on a
//!   loopback port over a temporary data directory, driven over HTTP,
//!   restarted, killed or stopped.
//! - **TLS** ([`TestCa`]): a CA of the test's own and a certificate it
//!   signed for loopback, to serve and trust.
//! - **PostgreSQL** ([`TestDatabase`]): a database of the test's own on the
//!   server at `ANNALS_TEST_POSTGRES` (default
//!   `postgres://postgres@127.0.0.1:5432`), dropped afterwards. Without a
//!   server a test is skipped with a notice, unless `CI` is set (to
//!   anything), where that is a failure.
//!
//! Everything here fails by panicking with what went wrong, as a test
//! does: it is meant for tests only.
//!
//! ```no_run
//! # use annals::testkit::ProjectionTest;
//! # async fn example(tasks: impl projector::Projection, routes: query_api::QueryRoutes) {
//! let view = ProjectionTest::sqlite(tasks).await;
//! // view.given::<Task>(id, [TaskEvent::TaskAdded { title: "milk".into() }]).await;
//! let rows = view.rows("SELECT title, done FROM tasks ORDER BY id").await;
//! let page = view.get(&routes, "/tasks?done=0").await;
//! assert_eq!(page.status, 200, "{}", page.body);
//! # }
//! ```

mod answer;
mod postgres;
mod projection;
mod service;
mod tls;

pub use answer::Answer;
pub use command_api::testkit::*;
pub use postgres::TestDatabase;
pub use projection::ProjectionTest;
pub use service::{Service, ServiceBuilder, output_within};
pub use tls::TestCa;

/// How long any one wait of the testkit may take before the test fails: a
/// loaded two-core CI machine is slow, but never this slow.
pub const WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);
