//! Library errors as Python exceptions: the classes live in `datamon.errors` (pure Python, so
//! that a missing file can also be a `FileNotFoundError`); this picks the class by kind.

use std::error::Error as _;

use datamon::ErrorKind;
use pyo3::prelude::*;

/// The name of the `datamon.errors` class for an error.
fn class_name(e: &datamon::Error) -> &'static str {
    if matches!(e.root(), datamon::Error::PathNotInBundle { .. }) {
        return "PathNotFound";
    }
    match e.kind() {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::AlreadyExists => "AlreadyExists",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::Corrupt => "Corrupt",
        ErrorKind::Transient => "Transient",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::Busy => "Busy",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Io => "IOFailure",
        _ => "Error",
    }
}

/// The message: the error and its causes, each cause once.
pub(crate) fn message(e: &datamon::Error) -> String {
    let mut msg = e.to_string();
    if let datamon::Error::PathNotInBundle { repo, .. } = e.root() {
        if !msg.contains(&format!("{repo:?}")) {
            msg.push_str(&format!(" of repo {repo:?}"));
        }
    }
    // A lost guard on a ref: the context says it all (the store's retry text would mislead).
    if e.kind() == ErrorKind::Conflict && matches!(e, datamon::Error::Context { .. }) {
        return msg;
    }
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

/// The Python exception for a library error.
pub(crate) fn to_py(py: Python<'_>, e: &datamon::Error) -> PyErr {
    let msg = message(e);
    let kind = format!("{:?}", e.kind());
    let made = (|| -> PyResult<PyErr> {
        let module = py.import("datamon.errors")?;
        let class = module.getattr(class_name(e))?;
        let exc = class.call1((msg.clone(),))?;
        exc.setattr("kind", kind.clone())?;
        Ok(PyErr::from_value(exc))
    })();
    made.unwrap_or_else(|_| pyo3::exceptions::PyRuntimeError::new_err(msg))
}

/// An invalid-input error (a name, a selector, a pattern).
pub(crate) fn invalid(py: Python<'_>, what: String) -> PyErr {
    to_py(py, &datamon::Error::InvalidInput(what))
}
