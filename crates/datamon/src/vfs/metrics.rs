//! Counters of what a [`super::Vfs`] served and fetched, for a front end to export (the
//! Prometheus endpoint of `datamon bundle mount` and of the CSI node plugin).
//!
//! One [`VfsMetrics`] may be shared by any number of mounts ([`super::VfsOptions::metrics`]),
//! so that a node's totals survive the mounts that made them. The counters only grow; they
//! are plain relaxed atomics, cheap enough to bump on every read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What mounts served and fetched (see the module docs). All counters start at zero and only
/// grow.
#[derive(Debug, Default)]
pub struct VfsMetrics {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    store_reads: AtomicU64,
    fetched_chunks: AtomicU64,
    fetched_bytes: AtomicU64,
    fetch_errors: AtomicU64,
}

/// The values of a [`VfsMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfsMetricsSnapshot {
    /// Read calls answered (with data or at end of file).
    pub reads: u64,
    /// Bytes returned to readers.
    pub read_bytes: u64,
    /// Chunks a reader needed that the memory cache held.
    pub memory_hits: u64,
    /// Chunks a reader needed that the disk cache held (and that verified).
    pub disk_hits: u64,
    /// Chunks a reader needed that neither cache held: fetched from the store, or waited for
    /// while another reader or the read-ahead fetched them.
    pub misses: u64,
    /// Range reads of the store (one per run of chunks contiguous in a pack), read-ahead
    /// included.
    pub store_reads: u64,
    /// Chunks fetched from the store, verified, read-ahead included.
    pub fetched_chunks: u64,
    /// Bytes of those chunks (decoded).
    pub fetched_bytes: u64,
    /// Store accesses that failed or timed out (chunk fetches, read-ahead and directory
    /// nodes alike).
    pub fetch_errors: u64,
}

impl VfsMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> VfsMetricsSnapshot {
        VfsMetricsSnapshot {
            reads: self.reads.load(Relaxed),
            read_bytes: self.read_bytes.load(Relaxed),
            memory_hits: self.memory_hits.load(Relaxed),
            disk_hits: self.disk_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            store_reads: self.store_reads.load(Relaxed),
            fetched_chunks: self.fetched_chunks.load(Relaxed),
            fetched_bytes: self.fetched_bytes.load(Relaxed),
            fetch_errors: self.fetch_errors.load(Relaxed),
        }
    }

    pub(super) fn read(&self, bytes: usize) {
        self.reads.fetch_add(1, Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub(super) fn lookups(&self, memory: usize, disk: usize, missing: usize) {
        self.memory_hits.fetch_add(memory as u64, Relaxed);
        self.disk_hits.fetch_add(disk as u64, Relaxed);
        self.misses.fetch_add(missing as u64, Relaxed);
    }

    pub(super) fn fetched(&self, chunks: usize, bytes: usize) {
        self.store_reads.fetch_add(1, Relaxed);
        self.fetched_chunks.fetch_add(chunks as u64, Relaxed);
        self.fetched_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub(super) fn error(&self) {
        self.fetch_errors.fetch_add(1, Relaxed);
    }
}
