//! `File`: one open file of a bundle, read at any offset through the virtual filesystem (only
//! the chunks a read covers are fetched, verified, through the shared chunk cache).

use std::sync::atomic::{AtomicU64, Ordering};

use datamon::vfs::Vfs;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_py;

/// The size of one read of the virtual filesystem.
const PIECE: u64 = 8 << 20;

/// How many pieces of one large read are read at once, from scoped threads.
const PARALLEL: usize = 4;

/// Fills `part` (the file from `base` on, within its size) with pieces read concurrently.
fn read_pieces(vfs: &Vfs, fh: u64, base: u64, part: &mut [u8]) -> datamon::Result<()> {
    let read_one = |at: u64, piece: &mut [u8]| -> datamon::Result<()> {
        let want = u32::try_from(piece.len()).expect("a piece fits in u32");
        let data = vfs.read_blocking(fh, at, want)?;
        if data.len() != piece.len() {
            return Err(datamon::Error::Corrupt {
                path: format!("open file {fh}"),
                detail: format!("read {} of {} bytes at {at}", data.len(), piece.len()),
            });
        }
        piece.copy_from_slice(&data);
        Ok(())
    };
    if part.len() as u64 <= PIECE {
        return read_one(base, part);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = part
            .chunks_mut(PIECE as usize)
            .enumerate()
            .map(|(i, piece)| {
                let at = base + i as u64 * PIECE;
                s.spawn(move || read_one(at, piece))
            })
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
            // Batches of up to PARALLEL pieces read at once (a large read is as fast as the
            // store and the cache allow, not one piece at a time), signals checked between.
            let batch = PIECE as usize * PARALLEL;
            for (b, part) in buf.chunks_mut(batch).enumerate() {
                let base = offset + (b * batch) as u64;
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
