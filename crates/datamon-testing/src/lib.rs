//! Test support for datamon (not published).
//!
//! - [`backends`]: the stores to test against: memory and local always, and the real servers on
//!   loopback that the environment names (`DATAMON_TEST_S3_*`, `DATAMON_TEST_AZURE_*`), started
//!   by `scripts/servers/`.
//! - [`conformance`]: one suite of store behaviours (put, get, ranged get, list,
//!   create-if-absent, a 16-way create race with one winner, large multipart objects, concurrent
//!   appends) that every backend must pass.
//! - [`proxy`]: a TCP proxy on loopback that fails, stalls or refuses connections, to prove that
//!   transfers survive faults.
//! - [`fixtures`]: deterministic folders of random files and a tree comparison.
//!
//! Test helpers panic with a message on failure (they are assertions).
//!
//! ```no_run
//! # async fn demo() {
//! for backend in datamon_testing::backends::available() {
//!     let store = backend.fresh_store("demo").await;
//!     datamon_testing::conformance::run_all(&store).await;
//! }
//! # }
//! ```
#![allow(clippy::disallowed_methods)] // fixtures write test files directly

pub mod backends;
pub mod conformance;
pub mod fixtures;
pub mod proxy;
