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
    #[error("invalid bundle id {id:?}: a bundle id is 27 base62 characters, like 1INzQ5TV4vAAfU2PbRFgPfnzEwR (see `datamon bundle list`)")]
    InvalidBundleId {
        /// The rejected text.
        id: String,
    },
    /// A run id that is not a 27-character base62 KSUID.
    #[error("invalid run id {id:?}: a run id is 27 base62 characters, like 1INzQ5TV4vAAfU2PbRFgPfnzEwR (see `datamon run list`)")]
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
