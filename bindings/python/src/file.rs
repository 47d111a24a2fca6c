//! `File`: one open file of a bundle, read at any offset through the virtual filesystem (only
//! the chunks a read covers are fetched, verified, through the shared chunk cache).

use std::sync::atomic::{AtomicU64, Ordering};

use datamon::vfs::Vfs;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_py;

/// The size of one read of the virtual filesystem.
const PIECE: u64 = 4 << 20;

/// How many threads read the pieces of one large read, each taking the next piece not yet
/// taken (so a slow piece does not hold the others up).
const PARALLEL: usize = 4;

/// How much of a large read is read between two checks for signals (Ctrl-C).
const BATCH: usize = 128 << 20;

/// Fills `part` (the file from `base` on, within its size) with pieces read concurrently.
fn read_pieces(vfs: &Vfs, fh: u64, base: u64, part: &mut [u8]) -> datamon::Result<()> {
    let whole = part.len() as u64 <= PIECE;
    let read_one = |at: u64, piece: &mut [u8]| -> datamon::Result<()> {
        // Straight into the bytes object Python gets: no buffer of its own, no copy. A read of
        // one piece is a sequential reader's (the vfs reads ahead for it); the pieces of a
        // larger read are read in parallel here, with no read-ahead.
        let n = if whole {
            vfs.read_into_blocking(fh, at, piece)?
        } else {
            vfs.read_piece_into_blocking(fh, at, piece)?
        };
        if n != piece.len() {
            return Err(datamon::Error::Corrupt {
                path: format!("open file {fh}"),
                detail: format!("read {n} of {} bytes at {at}", piece.len()),
            });
        }
        Ok(())
    };
    if whole {
        return read_one(base, part);
    }
    let pieces: Vec<std::sync::Mutex<Option<&mut [u8]>>> = part
        .chunks_mut(PIECE as usize)
        .map(|p| std::sync::Mutex::new(Some(p)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || -> datamon::Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= pieces.len() || failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let piece = pieces[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .expect("each piece is taken once");
            if let Err(e) = read_one(base + i as u64 * PIECE, piece) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL.min(pieces.len()))
            .map(|_| s.spawn(work))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(datamon::Error::Task("a read thread panicked".into())))
        })
    })
}

/// An open file of a bundle (positionless: the Python layer keeps the position).
#[pyclass(frozen, module = "datamon._native")]
pub(crate) struct File {
    vfs: Vfs,
    /// The handle; 0 once closed.
    fh: AtomicU64,
    size: u64,
    path: String,
}

impl File {
    pub(crate) fn new(vfs: Vfs, fh: u64, size: u64, path: String) -> File {
        File {
            vfs,
            fh: AtomicU64::new(fh),
            size,
            path,
        }
    }

    fn handle(&self, py: Python<'_>) -> PyResult<u64> {
        match self.fh.load(Ordering::Acquire) {
            0 => Err(to_py(
                py,
                &datamon::Error::InvalidInput(format!("{}: the file is closed", self.path)),
            )),
            fh => Ok(fh),
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let fh = self.fh.swap(0, Ordering::AcqRel);
        if fh != 0 {
            self.vfs.release(fh);
        }
    }
}

#[pymethods]
impl File {
    /// The file's size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// The path in the bundle.
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// Reads up to `n` bytes at `offset` (`n < 0`: to the end); fewer only at the end.
    fn read_at<'py>(&self, py: Python<'py>, offset: u64, n: i64) -> PyResult<Bound<'py, PyBytes>> {
        let fh = self.handle(py)?;
        let end = if n < 0 {
            self.size
        } else {
            self.size.min(offset.saturating_add(n.unsigned_abs()))
        };
        let len = end.saturating_sub(offset);
        let len = usize::try_from(len)
            .map_err(|_| pyo3::exceptions::PyMemoryError::new_err("read too large"))?;
        let vfs = &self.vfs;
        PyBytes::new_with(py, len, |buf| {
            // Batches whose pieces PARALLEL threads read at once (a large read is as fast as
            // the store and the cache allow, not one piece at a time), signals checked between.
            for (b, part) in buf.chunks_mut(BATCH).enumerate() {
                let base = offset + (b * BATCH) as u64;
                py.detach(|| read_pieces(vfs, fh, base, part))
                    .map_err(|e| to_py(py, &e))?;
                py.check_signals()?;
            }
            Ok(())
        })
    }

    /// Releases the handle; later reads fail.
    fn close(&self) {
        let fh = self.fh.swap(0, Ordering::AcqRel);
        if fh != 0 {
            self.vfs.release(fh);
        }
    }
}
