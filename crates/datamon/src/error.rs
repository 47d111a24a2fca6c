//! Errors of the datamon library, classified by [`ErrorKind`].

use std::path::PathBuf;

use datamon_types::BundleId;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use datamon_types::ErrorKind;

/// An error of the datamon library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] datamon_store::Error),
    /// An invalid name, id or hash.
    #[error(transparent)]
    Invalid(#[from] datamon_types::Error),
    /// No such repo.
    #[error("repo {repo:?} not found: create it with `datamon repo create --repo {repo} --description ...` or see `datamon repo list`")]
    RepoNotFound {
        /// The repo.
        repo: String,
    },
    /// The repo exists already.
    #[error("repo {repo:?} already exists: pick another name, or see it with `datamon repo get --repo {repo}`")]
    RepoExists {
        /// The repo.
        repo: String,
    },
    /// No such bundle.
    #[error("bundle {id} not found in repo {repo:?}: see `datamon bundle list --repo {repo}`")]
    BundleNotFound {
        /// The repo.
        repo: String,
        /// The bundle id.
        id: BundleId,
    },
    /// The repo has no bundle yet.
    #[error("repo {repo:?} has no bundles yet: upload one with `datamon bundle upload --repo {repo} --path DIR --message ...`")]
    NoBundles {
        /// The repo.
        repo: String,
    },
    /// No such label.
    #[error("label {label:?} not found in repo {repo:?}: see `datamon label list --repo {repo}`")]
    LabelNotFound {
        /// The repo.
        repo: String,
        /// The label.
        label: String,
    },
    /// No such branch, or a branch with no bundle.
    #[error("branch {branch:?} not found in repo {repo:?} (or it has no bundle yet): see `datamon branch list --repo {repo}`")]
    BranchNotFound {
        /// The repo.
        repo: String,
        /// The branch.
        branch: String,
    },
    /// The branch exists already.
    #[error("branch {branch:?} already exists in repo {repo:?}")]
    BranchExists {
        /// The repo.
        repo: String,
        /// The branch.
        branch: String,
    },
    /// A compare-and-set of a label found another value.
    #[error("label {label:?} points at {actual} but {expected} was expected: someone moved it; check with `datamon label get --history` and retry")]
    LabelConflict {
        /// The label.
        label: String,
        /// What the caller expected (`none` for absent).
        expected: String,
        /// What it is (`none` for absent).
        actual: String,
    },
    /// No such run.
    #[error("run {id} not found: see `datamon run list`")]
    RunNotFound {
        /// The run id.
        id: String,
    },
    /// A selector names neither a label nor a branch of the repo.
    #[error("repo {repo:?} has no label or branch named {name:?}: see `datamon label list --repo {repo}` and `datamon branch list --repo {repo}`")]
    SelectorNotFound {
        /// The repo.
        repo: String,
        /// The name.
        name: String,
    },
    /// A run with this id was recorded already.
    #[error("run {id} was recorded already: runs are written once")]
    RunExists {
        /// The run id.
        id: String,
    },
    /// A file or directory named in a bundle does not exist there.
    #[error("{path:?} is not in bundle {id}: see `datamon bundle list files --repo {repo} --bundle {id}`")]
    PathNotInBundle {
        /// The repo.
        repo: String,
        /// The bundle.
        id: BundleId,
        /// The path.
        path: String,
    },
    /// A local path to read does not exist or is not a directory.
    #[error("{path}: {reason}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A download destination that would be overwritten.
    #[error("destination {path} is not empty: choose an empty or new directory, or pass --force to overwrite its files")]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// A local I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Data read back does not match its hash.
    #[error("corrupt data for {path}: {detail}; nothing was written under that name (run `datamon fsck --read-data`)")]
    Corrupt {
        /// The file being restored, or the object.
        path: String,
        /// What did not match.
        detail: String,
    },
    /// Invalid input that is not a name (a pattern, a file list, an option).
    #[error("{0}")]
    InvalidInput(String),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// A store operation did not finish in time (the store is unreachable or too slow).
    #[error("{what} did not finish within {seconds} s: the store is unreachable or too slow")]
    Timeout {
        /// What was being done.
        what: String,
        /// The time limit.
        seconds: u64,
    },
    /// A mounted filesystem was asked about an inode or handle it does not know (or of the
    /// wrong kind).
    #[error("{what}")]
    Vfs {
        /// What was asked.
        what: String,
        /// What kind of request failure it is.
        kind: VfsErrorKind,
    },
}

/// Why a [`crate::vfs::Vfs`] request failed (front ends map it to an errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VfsErrorKind {
    /// Unknown inode or file handle (ESTALE/EBADF).
    Stale,
    /// A directory was expected (ENOTDIR).
    NotADirectory,
    /// A file was expected, found a directory (EISDIR).
    IsADirectory,
    /// A symlink was expected (EINVAL).
    NotASymlink,
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Invalid(_) | Error::BadPath { .. } | Error::InvalidInput(_) => {
                ErrorKind::InvalidInput
            }
            Error::RepoNotFound { .. }
            | Error::BundleNotFound { .. }
            | Error::NoBundles { .. }
            | Error::LabelNotFound { .. }
            | Error::BranchNotFound { .. }
            | Error::PathNotInBundle { .. }
            | Error::RunNotFound { .. }
            | Error::SelectorNotFound { .. } => ErrorKind::NotFound,
            Error::RepoExists { .. }
            | Error::BranchExists { .. }
            | Error::DestinationNotEmpty { .. }
            | Error::RunExists { .. } => ErrorKind::AlreadyExists,
            Error::LabelConflict { .. } => ErrorKind::Conflict,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Task(_) => ErrorKind::Internal,
            Error::Timeout { .. } => ErrorKind::Transient,
            Error::Vfs { .. } => ErrorKind::InvalidInput,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}

/// For readers that report plain I/O errors; callers replace the empty path with the file's.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            path: PathBuf::new(),
            source,
        }
    }
}
