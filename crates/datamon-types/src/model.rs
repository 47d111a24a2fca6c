//! Records written to the store: store config, repos, bundles, label and branch records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{BranchName, BundleId, Hash, RepoName};

/// The store's own settings, written once when the store is created (`config` at its root).
///
/// The chunking parameters are part of the format: two uploads dedup against each other only when
/// they cut data with the same parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// The format version; see [`crate::FORMAT_VERSION`].
    pub version: u32,
    /// A random id that names this store (used to key local caches).
    pub id: String,
    /// Minimum chunk size in bytes.
    pub chunk_min: u32,
    /// Average (target) chunk size in bytes.
    pub chunk_avg: u32,
    /// Maximum chunk size in bytes.
    pub chunk_max: u32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// When the store was created.
    pub created_at: DateTime<Utc>,
    /// Set on an encrypted store (format version 2): how objects are sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

/// How an encrypted store seals its objects (`docs/format/encryption.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// The AEAD: `xchacha20poly1305`.
    pub cipher: String,
    /// How chunk and tree ids are computed: `blake3-keyed`.
    pub ids: String,
    /// A value derived from the master key (BLAKE3 `derive_key`, context
    /// `datamon 2026-12 key check`), hex: a key that unwraps but does not match it is refused.
    pub key_check: String,
}

/// A repo: a dataset with one lifecycle (`repos/<name>/repo.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    /// Its name.
    pub name: RepoName,
    /// What it holds.
    pub description: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
}

/// Counts describing a bundle's content and what its upload added to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleStats {
    /// Regular files in the bundle.
    pub files: u64,
    /// Directories in the bundle (not counting the root).
    pub dirs: u64,
    /// Symbolic links in the bundle.
    pub symlinks: u64,
    /// Total size of the files' content.
    pub bytes: u64,
    /// Chunks this upload stored that the store did not have.
    pub new_chunks: u64,
    /// Uncompressed bytes of those new chunks.
    pub new_bytes: u64,
    /// Bytes this upload added to the store: new chunks and tree nodes, after compression.
    pub stored_bytes: u64,
}

/// A bundle: an immutable, point-in-time version of a repo (`repos/<repo>/bundles/<id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Its id, generated when it was committed.
    pub id: BundleId,
    /// The repo it belongs to.
    pub repo: RepoName,
    /// The bundles it follows: the head of its branch when it was committed.
    pub parents: Vec<BundleId>,
    /// The branch it was committed on.
    pub branch: Option<BranchName>,
    /// The message given at upload.
    pub message: String,
    /// Who uploaded it.
    pub author: String,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
    /// The hash of the root tree node.
    pub root: Hash,
    /// Content and upload statistics.
    pub stats: BundleStats,
    /// User metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// One entry of a label's history (`repos/<repo>/labels/<name>/<seq>`): the label points at
/// `bundle` from `time` on. The label's value is its entry with the greatest sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRecord {
    /// The bundle the label names from now on.
    pub bundle: BundleId,
    /// The bundle it named before, as the writer saw it.
    pub previous: Option<BundleId>,
    /// Who moved it.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// One entry of a branch's history (`repos/<repo>/branches/<name>/<seq>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchRecord {
    /// The branch head from now on; `None` for a branch created empty.
    pub head: Option<BundleId>,
    /// The head before, as the writer saw it.
    pub previous: Option<BundleId>,
    /// Who moved it.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// A branch and its current head, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// Its name.
    pub name: BranchName,
    /// Its current head, if any bundle was committed on it.
    pub head: Option<BundleId>,
    /// How many times it moved.
    pub updates: u64,
}
