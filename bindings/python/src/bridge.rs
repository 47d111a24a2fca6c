//! The bridge from Python threads to the module's tokio runtime: release the GIL, block on the
//! future, wake every 100 ms to check for signals (and report progress), cancel on interrupt.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use datamon::{CancellationToken, Progress, Unit};
use pyo3::prelude::*;

use crate::errors::to_py;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// How often a blocked call wakes up to check for signals.
const TICK: Duration = Duration::from_millis(100);

/// The module's runtime, built on first use.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("datamon")
        .build()
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!(
                "cannot start the datamon runtime: {e}"
            ))
        })?;
    // Another thread may have won the race: keep the first runtime, drop ours.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs the future `make` builds on the runtime with the GIL released, and returns its result
/// as a Python result.
///
/// The future runs on a helper thread, so the calling thread stays free whatever the future
/// does (an upload hashes in `block_in_place`, which would otherwise hold it): every 100 ms, and
/// at once when a phase of `progress` begins, it takes the GIL back to check for signals and to
/// report `progress`. On KeyboardInterrupt (or an exception of the progress callback): with
/// `cancel`, the token is cancelled and the future runs to its end (an upload stops within a
/// chunk and commits nothing), then the interrupt is raised; without, the future is dropped.
///
/// `make` builds the future on the helper thread (so the future itself need not be `Send`).
pub(crate) fn block<T, G, F>(
    py: Python<'_>,
    cancel: Option<&CancellationToken>,
    progress: Option<&PyProgress>,
    make: G,
) -> PyResult<T>
where
    T: Send,
    G: FnOnce() -> F + Send,
    F: Future<Output = datamon::Result<T>>,
{
    let rt = runtime()?;
    let (wake, woken) = mpsc::channel::<()>();
    if let Some(p) = progress {
        *p.wake.lock().unwrap_or_else(PoisonError::into_inner) = Some(wake.clone());
    }
    // Stops a future that has no cancellation token of its own.
    let drop_it = CancellationToken::new();
    let out: PyResult<Option<datamon::Result<T>>> = py.detach(move || {
        std::thread::scope(|scope| {
            let drop_it = &drop_it;
            let worker = std::thread::Builder::new()
                .name("datamon-call".into())
                .spawn_scoped(scope, move || {
                    let r = rt.block_on(async {
                        tokio::select! {
                            r = make() => Some(r),
                            () = drop_it.cancelled() => None,
                        }
                    });
                    let _ = wake.send(());
                    r
                })
                .map_err(|e| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "cannot start a datamon call thread: {e}"
                    ))
                })?;
            let mut interrupted: Option<PyErr> = None;
            while !worker.is_finished() {
                // Woken by the end of the call, by a new phase, or by the tick.
                let _ = woken.recv_timeout(TICK);
                if worker.is_finished() || interrupted.is_some() {
                    continue;
                }
                let checked = Python::attach(|py| {
                    py.check_signals()?;
                    if let Some(p) = progress {
                        p.report(py)?;
                        // A Ctrl-C that came during the callback (or that it raised itself,
                        // as `_thread.interrupt_main` does) is acted on now, not a tick later,
                        // when a fast call may have finished.
                        py.check_signals()?;
                    }
                    Ok::<(), PyErr>(())
                });
                if let Err(e) = checked {
                    match cancel {
                        Some(token) => token.cancel(),
                        None => drop_it.cancel(),
                    }
                    interrupted = Some(e);
                }
            }
            let r = match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            match interrupted {
                Some(e) => Err(e),
                None => Ok(r),
            }
        })
    });
    if let Some(p) = progress {
        *p.wake.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
    let r = match out? {
        Some(r) => r.map_err(|e| to_py(py, &e)),
        // Only an interrupt drops the future, and the interrupt was returned above.
        None => Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(
            "interrupted",
        )),
    };
    if let Some(p) = progress {
        p.report(py)?;
    }
    r
}

/// Runs a blocking, GIL-free piece of work (a read of the virtual filesystem) on this thread.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> datamon::Result<T> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(|e| to_py(py, &e))
}

/// Progress of a long call, reported to a Python callable `callback(phase, done, total)` from
/// the calling thread (never from the library's worker threads, which only count).
pub(crate) struct PyProgress {
    callback: Py<PyAny>,
    phase: Mutex<(String, u64)>,
    done: AtomicU64,
    dirty: AtomicBool,
    /// Wakes the calling thread of the running call, so that a new phase is reported at once.
    wake: Mutex<Option<mpsc::Sender<()>>>,
}

impl PyProgress {
    /// Progress reported to `callback`.
    pub(crate) fn new(callback: Py<PyAny>) -> PyProgress {
        PyProgress {
            callback,
            phase: Mutex::new((String::new(), 0)),
            done: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            wake: Mutex::new(None),
        }
    }

    /// Calls the callback if anything changed since the last call.
    pub(crate) fn report(&self, py: Python<'_>) -> PyResult<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let (what, total) = self
            .phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let done = self.done.load(Ordering::Acquire);
        self.callback.call1(py, (what, done, total))?;
        Ok(())
    }
}

impl Progress for PyProgress {
    fn begin(&self, what: &str, total: u64, _unit: Unit) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = (what.to_owned(), total);
        self.done.store(0, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = wake.send(());
        }
    }

    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::AcqRel);
        self.dirty.store(true, Ordering::Release);
    }

    fn end(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}
