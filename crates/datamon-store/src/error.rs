//! Errors of the storage layer, classified by [`ErrorKind`].

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use datamon_types::ErrorKind;

/// One of the checks of [`crate::Store::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreCheck {
    /// The store answers a list and a read.
    Reachable,
    /// An object can be written, read back and deleted.
    Writable,
    /// A second create-if-absent of one key fails.
    CreateIfAbsent,
}

impl std::fmt::Display for StoreCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreCheck::Reachable => "the store is not reachable",
            StoreCheck::Writable => "the store is not writable",
            StoreCheck::CreateIfAbsent => "the store does not honour create-if-absent",
        })
    }
}

/// An error of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL cannot be used.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// An object that should exist does not.
    #[error("object {key} not found in the store")]
    NotFound {
        /// Its key.
        key: String,
    },
    /// A create-if-absent write found an object already there.
    #[error("object {key} already exists")]
    AlreadyExists {
        /// Its key.
        key: String,
    },
    /// A sequence append lost its race too many times.
    #[error("could not append to {key}: too many concurrent writers, try again")]
    Precondition {
        /// The sequence's key prefix.
        key: String,
    },
    /// Stored bytes are damaged.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which object or blob.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store was written by a newer datamon.
    #[error("the store uses format version {found}, this datamon reads version {supported}: upgrade datamon")]
    UnsupportedVersion {
        /// The store's version.
        found: u32,
        /// This build's version.
        supported: u32,
    },
    /// The object store failed. The message condenses the backend's error chain (whose
    /// messages repeat each other) into one line ending with its root cause, so it is not
    /// exposed again as `source()`; the typed error stays in `error`.
    #[error("store {op} of {key} failed: {}", condense(error))]
    Backend {
        /// The operation (get, put, list...).
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The underlying error.
        error: object_store::Error,
    },
    /// A JSON record could not be decoded.
    #[error("cannot decode {key}: {source}")]
    Json {
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A check of [`crate::Store::check`] failed.
    #[error("{check}")]
    Check {
        /// Which check.
        check: StoreCheck,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUrl { .. } => ErrorKind::InvalidInput,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Precondition { .. } => ErrorKind::Conflict,
            Error::Corrupt { .. } | Error::Json { .. } => ErrorKind::Corrupt,
            Error::UnsupportedVersion { .. } => ErrorKind::Permanent,
            Error::Backend { error, .. } => match error {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                object_store::Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
                object_store::Error::Precondition { .. } => ErrorKind::Conflict,
                object_store::Error::Generic { .. } => ErrorKind::Transient,
                _ => ErrorKind::Permanent,
            },
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Check { source, .. } => source.kind(),
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    pub(crate) fn backend(op: &'static str, key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
                key: key.to_owned(),
            },
            error => Error::Backend {
                op,
                key: key.to_owned(),
                error,
            },
        }
    }
}

/// The message of `e`, followed by each cause in its chain that the message does not already
/// contain.
fn condense(e: &object_store::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_are_one_line_and_classified() {
        let e = Error::backend(
            "get",
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: "connection reset".into(),
            },
        );
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(
            e.to_string(),
            "store get of k failed: Generic S3 error: connection reset"
        );
        let denied = Error::backend(
            "put",
            "k",
            object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "403".into(),
            },
        );
        assert_eq!(denied.kind(), ErrorKind::Permanent);
        let check = Error::Check {
            check: StoreCheck::CreateIfAbsent,
            source: Box::new(e),
        };
        assert_eq!(check.kind(), ErrorKind::Transient);
        assert_eq!(
            check.to_string(),
            "the store does not honour create-if-absent"
        );
    }
}
