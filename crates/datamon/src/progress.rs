//! Progress reporting for long operations, implemented by front ends.

/// Receives progress of long operations (upload, download, fsck). Implementations must be cheap:
/// `advance` is called for every chunk.
pub trait Progress: Send + Sync {
    /// A phase starts: `what` names it, `total` is its size in `unit`s (0 when unknown).
    fn begin(&self, what: &str, total: u64, unit: Unit) {
        let _ = (what, total, unit);
    }
    /// `n` more units are done.
    fn advance(&self, n: u64) {
        let _ = n;
    }
    /// The phase is over.
    fn end(&self) {}
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of file content.
    Bytes,
    /// Items (files, objects).
    Items,
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
