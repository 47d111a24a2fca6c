//! Errors of the data model: invalid names, ids and hashes.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An invalid value given to the data model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A repo, label or branch name that does not follow the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named (repo, label, branch).
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected and what is allowed.
        reason: &'static str,
    },
    /// A bundle id that is not a 27-character base62 KSUID.
    #[error("invalid bundle id {id:?}: a bundle id is 27 base62 characters, like 1INzQ5TV4vAAfU2PbRFgPfnzEwR")]
    InvalidBundleId {
        /// The rejected text.
        id: String,
    },
    /// A run id that is not a 27-character base62 KSUID.
    #[error(
        "invalid run id {id:?}: a run id is 27 base62 characters, like 1INzQ5TV4vAAfU2PbRFgPfnzEwR"
    )]
    InvalidRunId {
        /// The rejected text.
        id: String,
    },
    /// A hash that is not 64 hexadecimal characters.
    #[error("invalid hash {hash:?}: expected 64 hexadecimal characters")]
    InvalidHash {
        /// The rejected text.
        hash: String,
    },
}

/// What kind of failure an error is, shared by every datamon crate (`datamon_store::Error`,
/// `datamon::Error`) so that front ends map one set of kinds to exit codes, exceptions, gRPC
/// statuses and HTTP codes, and retry logic asks one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A repo, bundle, label, branch, run, file or object does not exist.
    NotFound,
    /// Something to create already exists.
    AlreadyExists,
    /// A compare-and-swap lost: the value changed meanwhile (retry with the new value).
    Conflict,
    /// The input is not valid (names, ids, paths, patterns, URLs, options).
    InvalidInput,
    /// Stored data is damaged or is not what its name says.
    Corrupt,
    /// A failure that may pass if retried: a timeout, a 5xx, throttling, a cut connection.
    Transient,
    /// A failure of the store that will not pass by retrying (denied, misconfigured, too new).
    Permanent,
    /// The caller may not do this (a store that answers 401/403, a local file it cannot open).
    PermissionDenied,
    /// Someone else holds what is needed (a commit in progress on the same work tree).
    Busy,
    /// The caller cancelled the operation (a cancellation token, Ctrl-C).
    Cancelled,
    /// A local filesystem operation failed for another reason (disk full, I/O error).
    Io,
    /// A bug or an unexpected failure inside datamon (a background task panicked).
    Internal,
}

impl ErrorKind {
    /// Classifies a local I/O error.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::InvalidInput => ErrorKind::InvalidInput,
            K::TimedOut | K::Interrupted | K::WouldBlock => ErrorKind::Transient,
            K::InvalidData => ErrorKind::Corrupt,
            _ => ErrorKind::Io,
        }
    }

    /// Whether retrying the same operation may help.
    pub fn is_transient(self) -> bool {
        self == ErrorKind::Transient
    }
}

impl Error {
    /// Classifies the error: always [`ErrorKind::InvalidInput`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}
