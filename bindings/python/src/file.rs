//! `File`: one open file of a bundle, read at any offset through the virtual filesystem (only
//! the chunks a read covers are fetched, verified, through the shared chunk cache).

use std::sync::atomic::{AtomicU64, Ordering};

use datamon::vfs::Vfs;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_py;

/// The largest piece read with the GIL released before signals are checked again.
const PIECE: u64 = 8 << 20;

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
            let mut done = 0usize;
            while done < buf.len() {
                let want = u32::try_from(PIECE.min((buf.len() - done) as u64))
                    .expect("a piece fits in u32");
                let at = offset + done as u64;
                let piece = &mut buf[done..];
                let got = py
                    .detach(|| -> datamon::Result<usize> {
                        let data = vfs.read_blocking(fh, at, want)?;
                        piece[..data.len()].copy_from_slice(&data);
                        Ok(data.len())
                    })
                    .map_err(|e| to_py(py, &e))?;
                if got == 0 {
                    return Err(to_py(
                        py,
                        &datamon::Error::Corrupt {
                            path: self.path.clone(),
                            detail: format!("the file ended at {at} of {} bytes", self.size),
                        },
                    ));
                }
                done += got;
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
