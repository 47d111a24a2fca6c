//! `datamon._native`: the datamon library for Python (PyO3). The pure-Python package `datamon`
//! (`python/datamon/`) wraps these classes; users never import this module directly.
//!
//! - One multi-threaded tokio runtime, owned by the module, runs every call (`bridge.rs`).
//! - Every call releases the GIL while it waits; long calls check for signals every 100 ms and
//!   stop on KeyboardInterrupt, cancelling uploads through their `CancellationToken` so that
//!   nothing is committed.
//! - Library errors become `datamon.errors` exceptions, one class per [`datamon::ErrorKind`]
//!   (`errors.rs`).
//! - Records (bundles, runs...) cross as JSON text (their serde form), which the Python layer
//!   turns into objects; listings of files cross as tuples.

mod bridge;
mod config;
mod errors;
mod file;
mod plan;
mod store;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<store::Store>()?;
    m.add_class::<file::File>()?;
    m.add_class::<plan::Plan>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
