//! The data model of datamon: ids, names, hashes, bundles, trees, labels and branches.
//!
//! This crate is synchronous and does no I/O. Every type here that is written to a store is
//! serialized with serde; the byte layout is documented in `docs/format/` and pinned by golden
//! tests, so changing a field is a format change.
//!
//! ```
//! use datamon_types::{BundleId, Hash, RepoName};
//! let repo: RepoName = "imagenet-small".parse().unwrap();
//! let id = BundleId::generate();
//! assert_eq!(id.to_string().len(), 27);
//! assert_eq!(Hash::of(b"abc"), Hash::of(b"abc"));
//! # let _ = repo;
//! ```

mod error;
mod hash;
mod id;
mod model;
mod name;
mod run;
mod tree;

pub use error::{Error, ErrorKind, Result};
pub use hash::{ContentHasher, Hash};
pub use id::BundleId;
pub use model::{
    Branch, BranchRecord, Bundle, BundleStats, EncryptionConfig, LabelRecord, Repo, StoreConfig,
};
pub use name::{BranchName, LabelName, RepoName};
pub use run::{CodeVersion, Run, RunId, RunInput, RunOutput, RunStatus};
pub use tree::{ChunkRef, EntryKind, Node, Tree, TreeEntry};

/// The version of the on-store format of a plain store (the version this build writes unless
/// the store is encrypted).
pub const FORMAT_VERSION: u32 = 1;

/// The format version of an encrypted store (`docs/format/encryption.md`): a datamon that only
/// knows version 1 refuses to open one instead of misreading sealed objects.
pub const ENCRYPTED_FORMAT_VERSION: u32 = 2;

/// The newest format version this build reads.
pub const MAX_FORMAT_VERSION: u32 = ENCRYPTED_FORMAT_VERSION;

/// The name of the branch that uploads advance when none is given.
pub const DEFAULT_BRANCH: &str = "main";
