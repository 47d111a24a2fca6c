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
    #[error("repo {repo:?} not found")]
    RepoNotFound {
        /// The repo.
        repo: String,
    },
    /// The repo exists already.
    #[error("repo {repo:?} already exists")]
    RepoExists {
        /// The repo.
        repo: String,
    },
    /// No such bundle.
    #[error("bundle {id} not found in repo {repo:?}")]
    BundleNotFound {
        /// The repo.
        repo: String,
        /// The bundle id.
        id: BundleId,
    },
    /// The bundle existed but was deleted (its record is kept until gc; readers refuse it).
    #[error("bundle {id} of repo {repo:?} was {} ({time} by {author})", replaced_by.map_or_else(|| "deleted".to_owned(), |n| format!("rewritten as bundle {n}")))]
    BundleDeleted {
        /// The repo.
        repo: String,
        /// The bundle id.
        id: BundleId,
        /// Who deleted it.
        author: String,
        /// When, RFC 3339.
        time: String,
        /// The bundle that replaced it, when a history rewrite deleted it.
        replaced_by: Option<BundleId>,
    },
    /// The repo existed but was deleted, or renamed (then `renamed_to` names it).
    #[error("repo {repo:?} was {}", renamed_to.as_ref().map_or_else(|| "deleted".to_owned(), |n| format!("renamed to {n:?}")))]
    RepoDeleted {
        /// The repo.
        repo: String,
        /// Its new name, when it was renamed.
        renamed_to: Option<String>,
    },
    /// A bundle to delete is still named by labels or branches.
    #[error("bundle {id} of repo {repo:?} is still named by {}", refs.join(", "))]
    BundleReferenced {
        /// The repo.
        repo: String,
        /// The bundle id.
        id: BundleId,
        /// The refs, as `label NAME` or `branch NAME`.
        refs: Vec<String>,
    },
    /// A commit reused data that a concurrent garbage collection removed before the commit
    /// could keep it; nothing was committed, and a retry uploads the data again.
    #[error("bundle {id} reused data that a concurrent garbage collection removed ({blob}); nothing was committed")]
    CollectedMeanwhile {
        /// The bundle that was being committed.
        id: BundleId,
        /// The blob that was gone.
        blob: String,
    },
    /// The repo has no bundle yet.
    #[error("repo {repo:?} has no bundles yet")]
    NoBundles {
        /// The repo.
        repo: String,
    },
    /// No such label.
    #[error("label {label:?} not found in repo {repo:?}")]
    LabelNotFound {
        /// The repo.
        repo: String,
        /// The label.
        label: String,
    },
    /// No such branch, or a branch with no bundle.
    #[error("branch {branch:?} not found in repo {repo:?} (or it has no bundle yet)")]
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
    #[error("label {label:?} points at {actual} but {expected} was expected: someone moved it")]
    LabelConflict {
        /// The label.
        label: String,
        /// What the caller expected (`none` for absent).
        expected: String,
        /// What it is (`none` for absent).
        actual: String,
    },
    /// No such run.
    #[error("run {id} not found")]
    RunNotFound {
        /// The run id.
        id: String,
    },
    /// A selector names neither a label nor a branch of the repo.
    #[error("repo {repo:?} has no label or branch named {name:?}")]
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
    #[error("{path:?} is not in bundle {id}")]
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
    #[error("destination {path} is not empty")]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The folder to upload cannot be read.
    #[error("{path}: cannot read the folder to upload ({error})")]
    UnreadableSource {
        /// The folder.
        path: PathBuf,
        /// Why (part of the message, so not a `source`).
        error: std::io::Error,
    },
    /// A file or folder inside the folder to upload cannot be read or stored (the caller did not
    /// ask to skip such entries).
    #[error("{path}: {reason}")]
    Unreadable {
        /// The entry.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A path that must be a directory is not.
    #[error("{path}: is not a directory{detail}")]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What the path was given as.
        role: PathRole,
        /// More about it (empty, or ` (the OS error)`).
        detail: String,
    },
    /// A local file that a download would overwrite (the caller did not allow it).
    #[error("{path}: already exists")]
    DestinationExists {
        /// The file.
        path: PathBuf,
    },
    /// A symlink or a file where a bundle has a directory (restoring through it could write
    /// outside the destination).
    #[error("{path}: is a symlink or a file where the bundle has a directory")]
    DestinationConflict {
        /// The symlink or file.
        path: PathBuf,
    },
    /// An error of one part of a larger operation (an input of a run, say): `what` names the
    /// part, the source says what went wrong.
    #[error("{what}")]
    Context {
        /// The part (`input raw@latest`, `cannot upload output model from /out`...).
        what: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// The command of a run step does not exist.
    #[error("command not found: {program:?}")]
    CommandNotFound {
        /// The program.
        program: String,
    },
    /// The caller cancelled the operation (its cancellation token); nothing was committed.
    #[error("{what} was cancelled")]
    Cancelled {
        /// What was stopped.
        what: String,
    },
    /// Someone else holds what is needed (a commit in progress on the same work tree).
    #[error("{path}: {what}")]
    Busy {
        /// The lock or resource.
        path: PathBuf,
        /// Who holds it.
        what: String,
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
    #[error("corrupt data for {path}: {detail}; nothing was written under that name")]
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
    /// The other side of a coordination protocol (the sidecar or the application of a pod)
    /// vanished or never started.
    #[error("{peer} is gone: {detail}")]
    PeerLost {
        /// Which side (`the sidecar`, `the application`).
        peer: String,
        /// What was seen.
        detail: String,
    },
    /// A wait of a coordination protocol reached its time limit.
    #[error("gave up waiting for {what} after {seconds} s")]
    WaitTimeout {
        /// What was awaited.
        what: String,
        /// The time limit.
        seconds: u64,
    },
    /// The pod's sidecar could not provide the inputs or finish the run; `reason` is its own
    /// message.
    #[error("the sidecar failed: {reason}")]
    SidecarFailed {
        /// What the sidecar reported.
        reason: String,
    },
    /// No such diamond in the repo.
    #[error("diamond {diamond} not found in repo {repo:?}")]
    DiamondNotFound {
        /// The repo.
        repo: String,
        /// The diamond id.
        diamond: String,
    },
    /// The diamond accepts no more splits or commits: it was committed or cancelled.
    #[error("diamond {diamond} of repo {repo:?} is {state}")]
    DiamondClosed {
        /// The repo.
        repo: String,
        /// The diamond id.
        diamond: String,
        /// "cancelled", or "committed as bundle ID".
        state: String,
    },
    /// Another commit of the diamond won: its bundle is the diamond's result.
    #[error("diamond {diamond} of repo {repo:?} was already committed as bundle {bundle}")]
    DiamondCommitted {
        /// The repo.
        repo: String,
        /// The diamond id.
        diamond: String,
        /// The bundle the winning commit made.
        bundle: BundleId,
    },
    /// A split was recorded while a commit of its diamond was listing the splits, and that
    /// commit has not ended within the wait: whether the split is in the bundle is not known.
    #[error("split {split} of diamond {diamond} of repo {repo:?} was recorded while a commit was in progress, and the commit has not ended within {waited_s} s: whether the split is in the bundle is not known yet (the diamond's splits say so once the commit ends)")]
    DiamondSplitUndecided {
        /// The repo.
        repo: String,
        /// The diamond id.
        diamond: String,
        /// The split id.
        split: String,
        /// How long the split writer waited, in seconds.
        waited_s: u64,
    },
    /// The diamond has no completed split to commit.
    #[error("diamond {diamond} of repo {repo:?} has no completed split")]
    DiamondEmpty {
        /// The repo.
        repo: String,
        /// The diamond id.
        diamond: String,
    },
    /// Splits of the diamond wrote the same paths, and the commit's policy was to fail.
    #[error("diamond {diamond} of repo {repo:?}: {} path(s) written by more than one split: {}", conflicts.len(), crate::diamond::describe_conflicts(conflicts))]
    DiamondConflicts {
        /// The repo.
        repo: String,
        /// The diamond id.
        diamond: String,
        /// The conflicting paths.
        conflicts: Vec<crate::diamond::Conflict>,
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

/// What a local path was given as, so front ends can say which of their arguments is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathRole {
    /// The folder whose content becomes a bundle.
    UploadSource,
    /// The folder a bundle is downloaded into.
    DownloadDestination,
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
            Error::Context { source, .. } => source.kind(),
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
            | Error::SelectorNotFound { .. }
            | Error::BundleDeleted { .. }
            | Error::RepoDeleted { .. }
            | Error::DiamondNotFound { .. } => ErrorKind::NotFound,
            Error::DiamondClosed { .. } | Error::DiamondConflicts { .. } => ErrorKind::Conflict,
            Error::DiamondCommitted { .. } => ErrorKind::AlreadyExists,
            Error::DiamondSplitUndecided { .. } => ErrorKind::Busy,
            Error::DiamondEmpty { .. } => ErrorKind::InvalidInput,
            Error::BundleReferenced { .. } => ErrorKind::InvalidInput,
            Error::CollectedMeanwhile { .. } => ErrorKind::Conflict,
            Error::RepoExists { .. }
            | Error::BranchExists { .. }
            | Error::DestinationNotEmpty { .. }
            | Error::DestinationExists { .. }
            | Error::RunExists { .. } => ErrorKind::AlreadyExists,
            Error::DestinationConflict { .. }
            | Error::NotADirectory { .. }
            | Error::CommandNotFound { .. } => ErrorKind::InvalidInput,
            Error::UnreadableSource { .. } => ErrorKind::InvalidInput,
            Error::Unreadable { .. } => ErrorKind::Io,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::LabelConflict { .. } => ErrorKind::Conflict,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Task(_) => ErrorKind::Internal,
            Error::Timeout { .. } => ErrorKind::Transient,
            Error::Vfs { .. } => ErrorKind::InvalidInput,
            Error::PeerLost { .. } | Error::WaitTimeout { .. } => ErrorKind::Transient,
            Error::SidecarFailed { .. } => ErrorKind::Permanent,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Wraps `self` with what was being done.
    pub(crate) fn context(self, what: impl Into<String>) -> Error {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error: the cause under any [`Error::Context`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// A cancellation of `what`.
    pub(crate) fn cancelled(what: impl Into<String>) -> Error {
        Error::Cancelled { what: what.into() }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
