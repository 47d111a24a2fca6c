//! Diamonds: many writers, on any machines, make one bundle together.
//!
//! [`Datamon::diamond_initialize`] writes a diamond record; any number of jobs then run
//! [`Datamon::diamond_add_split`] concurrently, each storing one folder (the upload machinery:
//! packs, index objects, tree nodes) and then writing a write-once split record naming its root;
//! [`Datamon::diamond_commit`] merges the trees of every completed split into one bundle, with a
//! [`ConflictPolicy`] for paths written by more than one split. The records live under
//! `repos/<repo>/diamonds/<id>/` (see `docs/format/diamond.md`); there is no server and no lock:
//! - a split exists only once its record is written, after its data: a split killed or
//!   cancelled before leaves only packs that no record names (gc reclaims them);
//! - `commit.json` is written with create-if-absent and names the bundle (its id chosen before
//!   the write), so of two concurrent commits one wins and the other is told its bundle; a
//!   committer that dies after writing it leaves a commit that the next commit finishes, with
//!   the same bundle id, appended to its branch once;
//! - a committer first writes a `closing/` marker, then lists the splits; a split writer checks
//!   for a marker after writing its record, so a split told "added" is in the commit, and one
//!   that lost the race is told it is not;
//! - a committed or cancelled diamond refuses splits (checked before the upload and again before
//!   the split record).
//!
//! While a diamond is open its splits' trees are gc roots ([`Datamon::gc`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datamon_store::{keys, BlobKind, Index, PackWriter};
use datamon_types::{
    BranchName, Bundle, BundleId, BundleStats, Hash, LabelName, Node, RepoName, Tree, TreeEntry,
    DEFAULT_BRANCH,
};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::upload::save_stat_cache;
use crate::{CancellationToken, Datamon, Error, Progress, Result, UploadOptions};

/// The folder under which [`ConflictPolicy::KeepAll`] keeps every version of a conflicting path.
pub const CONFLICTS_DIR: &str = ".conflicts";

/// How long a split writer that finds a commit in progress waits for its outcome.
const CLOSING_WAIT: Duration = Duration::from_secs(60);

macro_rules! ksuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ": a KSUID, sortable by creation time.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(BundleId);

        impl $name {
            #[doc = concat!("A new ", $what, " id for the current time.")]
            pub fn generate() -> Self {
                Self(BundleId::generate())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                s.parse::<BundleId>().map(Self).map_err(|_| {
                    Error::InvalidInput(format!(
                        "{s:?} is not a {} id (27 base62 characters)",
                        $what
                    ))
                })
            }
        }
    };
}

ksuid_id!(DiamondId, "diamond");
ksuid_id!(SplitId, "split");

/// A diamond (`diamond.json`), written once when it is initialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diamond {
    /// Its id.
    pub id: DiamondId,
    /// The repo its bundle goes to.
    pub repo: RepoName,
    /// Who initialized it.
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// One completed split (`splits/<id>.json`), written once after all its data is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Its id, generated when its data was stored: splits sort by completion.
    pub id: SplitId,
    /// The diamond.
    pub diamond: DiamondId,
    /// Who wrote it.
    pub author: String,
    /// When its record was written.
    pub created_at: DateTime<Utc>,
    /// The folder it was uploaded from, as given (informational).
    pub source: String,
    /// Its root tree node.
    pub root: Hash,
    /// Its content and upload statistics.
    pub stats: BundleStats,
}

/// What to do with paths written by more than one split, chosen at commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ConflictPolicy {
    /// Commit nothing and list the conflicts ([`Error::DiamondConflicts`]).
    #[default]
    Fail,
    /// The version of the latest split (greatest split id, i.e. completed last) is kept.
    Latest,
    /// The latest split's version is kept at the path, and every version, the latest's
    /// included, is also kept at `.conflicts/<split id>/<path>`.
    KeepAll,
}

impl FromStr for ConflictPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail" => Ok(ConflictPolicy::Fail),
            "latest" => Ok(ConflictPolicy::Latest),
            "keep-all" => Ok(ConflictPolicy::KeepAll),
            _ => Err(Error::InvalidInput(format!(
                "unknown conflict policy {s:?} (fail, latest, keep-all)"
            ))),
        }
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictPolicy::Fail => "fail",
            ConflictPolicy::Latest => "latest",
            ConflictPolicy::KeepAll => "keep-all",
        })
    }
}

/// A path written by more than one split, with different content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The path, relative to the bundle's root.
    pub path: String,
    /// The splits that wrote it, oldest first (the last is the latest).
    pub splits: Vec<SplitId>,
}

/// The conflicts as "path (split, split), ..." (at most 10), for error messages.
pub(crate) fn describe_conflicts(conflicts: &[Conflict]) -> String {
    let mut s: Vec<String> = conflicts
        .iter()
        .take(10)
        .map(|c| {
            let ids: Vec<String> = c.splits.iter().map(ToString::to_string).collect();
            format!("{} ({})", c.path, ids.join(", "))
        })
        .collect();
    if conflicts.len() > 10 {
        s.push(format!("and {} more", conflicts.len() - 10));
    }
    s.join(", ")
}

/// A diamond's commit (`commit.json`), create-if-absent: the bundle is chosen before the record
/// is written, so whoever finishes the commit writes the same bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiamondCommit {
    /// The bundle record to commit (its parents are set by the branch append).
    pub bundle: Bundle,
    /// The branch it is committed on.
    pub branch: BranchName,
    /// The label to point at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelName>,
    /// The splits merged, oldest first.
    pub splits: Vec<SplitId>,
    /// The conflict policy used.
    pub policy: ConflictPolicy,
    /// The conflicts found (resolved by the policy).
    pub conflicts: Vec<Conflict>,
}

/// A diamond's cancellation (`cancel.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiamondCancel {
    /// Who cancelled it.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// A marker of a commit in progress (`closing/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClosingMarker {
    author: String,
    time: DateTime<Utc>,
}

/// Where a diamond is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiamondState {
    /// Accepting splits.
    Open,
    /// Committed as this bundle.
    Committed(BundleId),
    /// Cancelled: it will never make a bundle.
    Cancelled,
}

impl fmt::Display for DiamondState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiamondState::Open => f.write_str("open"),
            DiamondState::Committed(b) => write!(f, "committed as bundle {b}"),
            DiamondState::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// A diamond with its state and splits.
#[derive(Debug, Clone)]
pub struct DiamondInfo {
    /// The diamond record.
    pub diamond: Diamond,
    /// Its state.
    pub state: DiamondState,
    /// Its completed splits, oldest first (after a commit, some may have come too late: see
    /// `commit`'s list).
    pub splits: Vec<Split>,
    /// Its commit record, once committed.
    pub commit: Option<DiamondCommit>,
    /// Its cancellation, if cancelled.
    pub cancel: Option<DiamondCancel>,
}

/// How a split is uploaded.
#[derive(Debug, Clone, Default)]
pub struct SplitOptions {
    /// Leave out unreadable files instead of failing.
    pub skip_on_error: bool,
    /// Stops the split (seen between chunks); no split record is written.
    pub cancel: CancellationToken,
}

/// What a split upload did.
#[derive(Debug, Clone)]
pub struct SplitReport {
    /// The split record written.
    pub split: Split,
    /// Paths left out under `skip_on_error`, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Files whose chunks came from the stat cache without being read.
    pub unchanged_files: u64,
}

/// How a diamond is committed.
#[derive(Debug, Clone)]
pub struct DiamondCommitOptions {
    /// The bundle's message.
    pub message: String,
    /// A label to point at the bundle.
    pub label: Option<LabelName>,
    /// The branch to advance (default `main`).
    pub branch: Option<BranchName>,
    /// What to do with paths written by more than one split.
    pub policy: ConflictPolicy,
    /// User metadata recorded in the bundle.
    pub meta: BTreeMap<String, String>,
}

/// What a diamond commit did.
#[derive(Debug, Clone)]
pub struct DiamondCommitReport {
    /// The committed bundle.
    pub bundle: Bundle,
    /// The splits merged, oldest first.
    pub splits: Vec<SplitId>,
    /// The conflicts found and resolved by the policy.
    pub conflicts: Vec<Conflict>,
}

impl Datamon {
    /// Starts a diamond in `repo`: splits may be added from now on.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn diamond_initialize(&self, repo: &RepoName) -> Result<Diamond> {
        self.get_repo(repo).await?;
        let d = Diamond {
            id: DiamondId::generate(),
            repo: repo.clone(),
            author: self.author.clone(),
            created_at: Utc::now(),
        };
        self.store
            .create_json(&keys::diamond(repo.as_str(), &d.id.to_string()), &d)
            .await?;
        Ok(d)
    }

    /// Uploads `path` as a split of a diamond. Safe to run from many processes at once. The
    /// split exists only once its record is written, after all its data: a split cancelled or
    /// killed before never appears in the diamond.
    ///
    /// # Panics
    /// When called outside a multi-threaded tokio runtime (as [`Datamon::upload`]).
    ///
    /// # Errors
    /// [`Error::DiamondNotFound`]; [`Error::DiamondClosed`] when the diamond was committed or
    /// cancelled before the split was recorded, or committed without it while it was being
    /// recorded; the errors of [`Datamon::upload`].
    pub async fn diamond_add_split(
        &self,
        repo: &RepoName,
        diamond: &DiamondId,
        path: PathBuf,
        opts: SplitOptions,
        progress: &dyn Progress,
    ) -> Result<SplitReport> {
        self.get_repo(repo).await?;
        let d = self.read_diamond(repo, diamond).await?;
        self.ensure_open(repo, diamond).await?;
        let upload = UploadOptions {
            skip_on_error: opts.skip_on_error,
            cancel: opts.cancel.clone(),
            ..UploadOptions::default()
        };
        let stored = self.store_folder(&path, &upload, progress).await?;
        if opts.cancel.is_cancelled() {
            return Err(Error::cancelled("the split"));
        }
        self.ensure_open(repo, diamond).await?;
        let split = Split {
            id: SplitId::generate(),
            diamond: d.id,
            author: self.author.clone(),
            created_at: Utc::now(),
            source: path.display().to_string(),
            root: stored.root,
            stats: stored.stats,
        };
        let (r, id) = (repo.as_str(), diamond.to_string());
        // The data is durable before the record that names it.
        self.store.sync().await?;
        self.store
            .create_json(&keys::diamond_split(r, &id, &split.id.to_string()), &split)
            .await?;
        // A gc plan made while the split uploaded may have condemned data it reused.
        self.keep_for_commit_since(&[split.root], &split.id.0, Some(&stored.gc_seen))
            .await?;
        self.store.sync().await?;
        self.split_outcome(repo, diamond, &split.id).await?;
        save_stat_cache(stored.cache).await;
        Ok(SplitReport {
            split,
            skipped: stored.skipped,
            unchanged_files: stored.unchanged_files,
        })
    }

    /// After a split record is written: is the split part of the diamond? Yes if no commit had
    /// started listing splits (every commit lists after its `closing/` marker); otherwise the
    /// commit record decides (waiting for it a while).
    async fn split_outcome(
        &self,
        repo: &RepoName,
        diamond: &DiamondId,
        split: &SplitId,
    ) -> Result<()> {
        let (r, id) = (repo.as_str(), diamond.to_string());
        let started = std::time::Instant::now();
        loop {
            if let Some(c) = self.read_commit(repo, diamond).await? {
                return if c.splits.contains(split) {
                    Ok(())
                } else {
                    Err(self.closed(repo, diamond, &DiamondState::Committed(c.bundle.id)))
                };
            }
            if self.read_cancel(repo, diamond).await?.is_some() {
                return Err(self.closed(repo, diamond, &DiamondState::Cancelled));
            }
            if self
                .store
                .list(&keys::diamond_closing(r, &id))
                .await?
                .is_empty()
            {
                return Ok(());
            }
            if started.elapsed() > CLOSING_WAIT {
                // The committer is slow, or died before its commit record (then the next
                // commit lists the split): saying "added" could be wrong, so say "not known".
                return Err(Error::DiamondSplitUndecided {
                    repo: repo.to_string(),
                    diamond: diamond.to_string(),
                    split: split.to_string(),
                    waited_s: CLOSING_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Merges every completed split of a diamond into one bundle and commits it. Of concurrent
    /// commits exactly one makes the bundle; the others get [`Error::DiamondCommitted`] naming
    /// it (after finishing it, should its committer have died).
    ///
    /// # Errors
    /// [`Error::DiamondNotFound`], [`Error::DiamondClosed`] (cancelled),
    /// [`Error::DiamondCommitted`], [`Error::DiamondEmpty`], [`Error::DiamondConflicts`] (under
    /// [`ConflictPolicy::Fail`]; nothing is committed and splits may still be added); a store
    /// error.
    pub async fn diamond_commit(
        &self,
        repo: &RepoName,
        diamond: &DiamondId,
        opts: DiamondCommitOptions,
    ) -> Result<DiamondCommitReport> {
        self.get_repo(repo).await?;
        self.read_diamond(repo, diamond).await?;
        if let Some(c) = self.read_commit(repo, diamond).await? {
            return Err(self.finish_lost(repo, diamond, c).await);
        }
        if self.read_cancel(repo, diamond).await?.is_some() {
            return Err(self.closed(repo, diamond, &DiamondState::Cancelled));
        }
        let (r, id) = (repo.as_str(), diamond.to_string());
        let marker = keys::diamond_closing_marker(r, &id, &BundleId::generate().to_string());
        let m = ClosingMarker {
            author: self.author.clone(),
            time: Utc::now(),
        };
        self.store.create_json(&marker, &m).await?;
        let result = self.commit_marked(repo, diamond, opts).await;
        if let Err(e) = self.store.delete(&marker).await {
            tracing::debug!("could not remove {marker}: {e}");
        }
        result
    }

    /// The commit, once its `closing/` marker is written.
    async fn commit_marked(
        &self,
        repo: &RepoName,
        diamond: &DiamondId,
        opts: DiamondCommitOptions,
    ) -> Result<DiamondCommitReport> {
        let splits = self.list_splits(repo, diamond).await?;
        if splits.is_empty() {
            return Err(Error::DiamondEmpty {
                repo: repo.to_string(),
                diamond: diamond.to_string(),
            });
        }
        let index = self.store.load_index().await?;
        let merged = self.merge_splits(&index, &splits, opts.policy).await?;
        if opts.policy == ConflictPolicy::Fail && !merged.conflicts.is_empty() {
            return Err(Error::DiamondConflicts {
                repo: repo.to_string(),
                diamond: diamond.to_string(),
                conflicts: merged.conflicts,
            });
        }
        if self.read_cancel(repo, diamond).await?.is_some() {
            return Err(self.closed(repo, diamond, &DiamondState::Cancelled));
        }
        let branch = match opts.branch {
            Some(b) => b,
            None => DEFAULT_BRANCH
                .parse()
                .expect("the default branch name is valid"),
        };
        let mut meta = opts.meta;
        meta.insert("diamond".into(), diamond.to_string());
        let bundle = Bundle {
            id: BundleId::generate(),
            repo: repo.clone(),
            parents: Vec::new(),
            branch: Some(branch.clone()),
            message: opts.message,
            author: self.author.clone(),
            created_at: Utc::now(),
            root: merged.root,
            stats: merged.stats,
            meta,
        };
        let commit = DiamondCommit {
            bundle,
            branch,
            label: opts.label,
            splits: splits.iter().map(|s| s.id).collect(),
            policy: opts.policy,
            conflicts: merged.conflicts,
        };
        // The merged trees are durable before the record that names them.
        self.store.sync().await?;
        let key = keys::diamond_commit(repo.as_str(), &diamond.to_string());
        match self.store.create_json(&key, &commit).await {
            Err(datamon_store::Error::AlreadyExists { .. }) => {
                let winner: DiamondCommit = self.store.get_json(&key).await?;
                return Err(self.finish_lost(repo, diamond, winner).await);
            }
            r => r?,
        }
        let bundle = self.finish_commit(&commit).await?;
        Ok(DiamondCommitReport {
            bundle,
            splits: commit.splits,
            conflicts: commit.conflicts,
        })
    }

    /// Finishes a commit record another committer wrote (it may have died), and returns the
    /// error that tells this committer the winner's bundle.
    async fn finish_lost(&self, repo: &RepoName, diamond: &DiamondId, c: DiamondCommit) -> Error {
        if let Err(e) = self.finish_commit(&c).await {
            return e.context(format!(
                "finishing the commit of diamond {diamond} as bundle {}",
                c.bundle.id
            ));
        }
        Error::DiamondCommitted {
            repo: repo.to_string(),
            diamond: diamond.to_string(),
            bundle: c.bundle.id,
        }
    }

    /// Commits the bundle of a commit record (idempotent: any number of processes may run it).
    async fn finish_commit(&self, c: &DiamondCommit) -> Result<Bundle> {
        let bundle = self.commit_bundle_once(c.bundle.clone(), &c.branch).await?;
        if let Some(label) = &c.label {
            // Set once: a finisher that comes later does not move the label back.
            let set = match self.label_history(&bundle.repo, label).await {
                Ok(h) => h.iter().any(|r| r.bundle == bundle.id),
                Err(Error::LabelNotFound { .. }) => false,
                Err(e) => return Err(e),
            };
            if !set {
                self.set_label(&bundle.repo, label, &bundle.id, None)
                    .await?;
            }
        }
        self.store.sync().await?;
        Ok(bundle)
    }

    /// Cancels a diamond: it will accept no split and make no bundle. Cancelling a cancelled
    /// diamond succeeds.
    ///
    /// # Errors
    /// [`Error::DiamondNotFound`]; [`Error::DiamondClosed`] when it was committed (a commit
    /// that won its record before the cancellation stands); a store error.
    pub async fn diamond_cancel(&self, repo: &RepoName, diamond: &DiamondId) -> Result<()> {
        self.get_repo(repo).await?;
        self.read_diamond(repo, diamond).await?;
        if let Some(c) = self.read_commit(repo, diamond).await? {
            return Err(self.closed(repo, diamond, &DiamondState::Committed(c.bundle.id)));
        }
        let rec = DiamondCancel {
            author: self.author.clone(),
            time: Utc::now(),
        };
        let key = keys::diamond_cancel(repo.as_str(), &diamond.to_string());
        match self.store.create_json(&key, &rec).await {
            Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(c) = self.read_commit(repo, diamond).await? {
            return Err(self.closed(repo, diamond, &DiamondState::Committed(c.bundle.id)));
        }
        Ok(())
    }

    /// A diamond with its state and splits.
    ///
    /// # Errors
    /// [`Error::DiamondNotFound`], [`Error::RepoNotFound`]; a store error.
    pub async fn diamond_get(&self, repo: &RepoName, diamond: &DiamondId) -> Result<DiamondInfo> {
        self.get_repo(repo).await?;
        let d = self.read_diamond(repo, diamond).await?;
        let (commit, cancel, splits) = futures::try_join!(
            self.read_commit(repo, diamond),
            self.read_cancel(repo, diamond),
            self.list_splits(repo, diamond)
        )?;
        let state = match (&commit, &cancel) {
            (Some(c), _) => DiamondState::Committed(c.bundle.id),
            (None, Some(_)) => DiamondState::Cancelled,
            (None, None) => DiamondState::Open,
        };
        Ok(DiamondInfo {
            diamond: d,
            state,
            splits,
            commit,
            cancel,
        })
    }

    /// A repo's diamonds, oldest first.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn diamond_list(&self, repo: &RepoName) -> Result<Vec<DiamondInfo>> {
        self.get_repo(repo).await?;
        let ids = self.diamond_ids(repo).await?;
        futures::stream::iter(ids.into_iter().map(|id| async move {
            match self.diamond_get(repo, &id).await {
                Ok(d) => Ok(Some(d)),
                // A directory without its diamond record (not ours, or damaged) is skipped.
                Err(Error::DiamondNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .buffered(16)
        .try_filter_map(|d| async move { Ok(d) })
        .try_collect()
        .await
    }

    async fn diamond_ids(&self, repo: &RepoName) -> Result<Vec<DiamondId>> {
        let mut ids: Vec<DiamondId> = self
            .store
            .list_dirs(&keys::diamonds(repo.as_str()))
            .await?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The trees gc must keep for a repo's diamonds: the splits of open diamonds and the bundle
    /// of a commit record whose bundle is not committed yet. Once the bundle record exists, the
    /// bundle is a root like any other (and, deleted, no longer one).
    pub(crate) async fn diamond_gc_roots(&self, repo: &RepoName) -> Result<Vec<Hash>> {
        let mut roots = Vec::new();
        for id in self.diamond_ids(repo).await? {
            if let Some(c) = self.read_commit(repo, &id).await? {
                match self.get_bundle_record(repo, &c.bundle.id).await {
                    Err(Error::BundleNotFound { .. }) => roots.push(c.bundle.root),
                    Ok(_) | Err(Error::BundleDeleted { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else if self.read_cancel(repo, &id).await?.is_none() {
                roots.extend(self.list_splits(repo, &id).await?.iter().map(|s| s.root));
            }
        }
        Ok(roots)
    }

    async fn read_diamond(&self, repo: &RepoName, diamond: &DiamondId) -> Result<Diamond> {
        let key = keys::diamond(repo.as_str(), &diamond.to_string());
        match self.store.get_json(&key).await {
            Err(datamon_store::Error::NotFound { .. }) => Err(Error::DiamondNotFound {
                repo: repo.to_string(),
                diamond: diamond.to_string(),
            }),
            r => Ok(r?),
        }
    }

    async fn read_commit(
        &self,
        repo: &RepoName,
        diamond: &DiamondId,
    ) -> Result<Option<DiamondCommit>> {
        let key = keys::diamond_commit(repo.as_str(), &diamond.to_string());
        match self.store.get_json(&key).await {
            Err(datamon_store::Error::NotFound { .. }) => Ok(None),
            r => Ok(Some(r?)),
        }
    }

    async fn read_cancel(
        &self,
        repo: &RepoName,
        diamond: &DiamondId,
    ) -> Result<Option<DiamondCancel>> {
        let key = keys::diamond_cancel(repo.as_str(), &diamond.to_string());
        match self.store.get_json(&key).await {
            Err(datamon_store::Error::NotFound { .. }) => Ok(None),
            r => Ok(Some(r?)),
        }
    }

    /// Refuses a committed or cancelled diamond.
    async fn ensure_open(&self, repo: &RepoName, diamond: &DiamondId) -> Result<()> {
        if let Some(c) = self.read_commit(repo, diamond).await? {
            return Err(self.closed(repo, diamond, &DiamondState::Committed(c.bundle.id)));
        }
        if self.read_cancel(repo, diamond).await?.is_some() {
            return Err(self.closed(repo, diamond, &DiamondState::Cancelled));
        }
        Ok(())
    }

    #[allow(clippy::unused_self)]
    fn closed(&self, repo: &RepoName, diamond: &DiamondId, state: &DiamondState) -> Error {
        Error::DiamondClosed {
            repo: repo.to_string(),
            diamond: diamond.to_string(),
            state: state.to_string(),
        }
    }

    /// The completed splits, oldest first.
    async fn list_splits(&self, repo: &RepoName, diamond: &DiamondId) -> Result<Vec<Split>> {
        let prefix = keys::diamond_splits(repo.as_str(), &diamond.to_string());
        let keys: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with(".json"))
            .collect();
        let mut splits: Vec<Split> = futures::stream::iter(
            keys.into_iter()
                .map(|k| async move { self.store.get_json::<Split>(&k).await }),
        )
        .buffer_unordered(32)
        .try_collect()
        .await?;
        splits.sort_by_key(|s| s.id);
        Ok(splits)
    }

    /// Merges the splits' trees (oldest first) into one, storing the new tree nodes.
    async fn merge_splits(
        &self,
        index: &Index,
        splits: &[Split],
        policy: ConflictPolicy,
    ) -> Result<Merged> {
        let mut m = Merger {
            dm: self,
            index,
            policy,
            splits,
            pack: self.store.pack_writer(0),
            added: HashSet::new(),
            stored_bytes: 0,
            conflicts: Vec::new(),
            kept: Vec::new(),
            counted: HashMap::new(),
        };
        let mut inputs = Vec::with_capacity(splits.len());
        for (i, s) in splits.iter().enumerate() {
            inputs.push((i, self.load_tree(index, &s.root).await?));
        }
        let (mut tree, mut counts) = m.merge_dir(String::new(), inputs).await?;
        if policy == ConflictPolicy::KeepAll && !m.conflicts.is_empty() {
            if tree.get(CONFLICTS_DIR).is_some() {
                return Err(Error::InvalidInput(format!(
                    "the splits hold a top-level {CONFLICTS_DIR} folder, where the conflicts would go"
                )));
            }
            let mut top = Building::default();
            for (path, split, entry) in std::mem::take(&mut m.kept) {
                let mut parts: Vec<String> = vec![splits[split].id.to_string()];
                parts.extend(path.split('/').map(str::to_owned));
                top.insert(&parts, entry);
            }
            let (hash, c) = m.build(top).await?;
            counts.add(&c);
            counts.dirs += 1;
            tree.entries.push(TreeEntry {
                name: CONFLICTS_DIR.to_owned(),
                mode: 0o755,
                mtime_ns: 0,
                node: Node::Dir { tree: hash },
            });
            tree.entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let root = m.store_tree(&tree).await?;
        m.flush().await?;
        let stats = BundleStats {
            files: counts.files,
            dirs: counts.dirs,
            symlinks: counts.symlinks,
            bytes: counts.bytes,
            new_chunks: splits.iter().map(|s| s.stats.new_chunks).sum(),
            new_bytes: splits.iter().map(|s| s.stats.new_bytes).sum(),
            stored_bytes: splits.iter().map(|s| s.stats.stored_bytes).sum::<u64>() + m.stored_bytes,
        };
        Ok(Merged {
            root,
            stats,
            conflicts: m.conflicts,
        })
    }
}

/// The merged tree of a diamond.
struct Merged {
    root: Hash,
    stats: BundleStats,
    conflicts: Vec<Conflict>,
}

/// What a subtree holds (not counting itself).
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.bytes += o.bytes;
    }

    fn entry(&mut self, node: &Node) {
        match node {
            Node::File { size, .. } => {
                self.files += 1;
                self.bytes += size;
            }
            Node::Dir { .. } => self.dirs += 1,
            Node::Symlink { .. } => self.symlinks += 1,
        }
    }
}

/// A folder of `.conflicts/` being built.
#[derive(Default)]
struct Building {
    dirs: BTreeMap<String, Building>,
    leaves: BTreeMap<String, TreeEntry>,
}

impl Building {
    fn insert(&mut self, parts: &[String], entry: TreeEntry) {
        match parts {
            [] => {}
            [name] => {
                let mut e = entry;
                e.name.clone_from(name);
                self.leaves.insert(name.clone(), e);
            }
            [first, rest @ ..] => self
                .dirs
                .entry(first.clone())
                .or_default()
                .insert(rest, entry),
        }
    }
}

struct Merger<'a> {
    dm: &'a Datamon,
    index: &'a Index,
    policy: ConflictPolicy,
    splits: &'a [Split],
    pack: PackWriter,
    added: HashSet<Hash>,
    stored_bytes: u64,
    conflicts: Vec<Conflict>,
    /// Under `KeepAll`: every version of every conflicting path (path, split, entry).
    kept: Vec<(String, usize, TreeEntry)>,
    /// Counts of split subtrees taken whole.
    counted: HashMap<Hash, Counts>,
}

impl Merger<'_> {
    /// Merges one directory of several splits (oldest first); returns its tree (not stored)
    /// and what it holds.
    fn merge_dir(
        &mut self,
        path: String,
        inputs: Vec<(usize, Tree)>,
    ) -> BoxFuture<'_, Result<(Tree, Counts)>> {
        Box::pin(async move {
            let mut by_name: BTreeMap<String, Vec<(usize, TreeEntry)>> = BTreeMap::new();
            for (split, tree) in inputs {
                for e in tree.entries {
                    by_name.entry(e.name.clone()).or_default().push((split, e));
                }
            }
            let mut out = Tree {
                entries: Vec::with_capacity(by_name.len()),
            };
            let mut counts = Counts::default();
            for (name, mut versions) in by_name {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                let all_dirs = versions
                    .iter()
                    .all(|(_, e)| matches!(e.node, Node::Dir { .. }));
                if versions.len() > 1 && all_dirs {
                    let mut subs = Vec::with_capacity(versions.len());
                    for (s, e) in &versions {
                        if let Node::Dir { tree } = &e.node {
                            subs.push((*s, self.dm.load_tree(self.index, tree).await?));
                        }
                    }
                    let (sub, c) = self.merge_dir(child, subs).await?;
                    let hash = self.store_tree(&sub).await?;
                    counts.add(&c);
                    counts.dirs += 1;
                    let (_, mut e) = versions.pop().expect("more than one version");
                    e.node = Node::Dir { tree: hash };
                    out.entries.push(e);
                    continue;
                }
                let (last_split, last) = versions.pop().expect("at least one version");
                let same = versions
                    .iter()
                    .all(|(_, e)| e.node == last.node && e.mode == last.mode);
                if !same {
                    let mut ids: Vec<SplitId> =
                        versions.iter().map(|(s, _)| self.splits[*s].id).collect();
                    ids.push(self.splits[last_split].id);
                    self.conflicts.push(Conflict {
                        path: child.clone(),
                        splits: ids,
                    });
                    if self.policy == ConflictPolicy::KeepAll {
                        // Counted when `.conflicts` is built from them.
                        for (s, e) in &versions {
                            self.kept.push((child.clone(), *s, e.clone()));
                        }
                        self.kept.push((child.clone(), last_split, last.clone()));
                    }
                }
                counts.add(&self.count_entry(&last.node).await?);
                out.entries.push(last);
            }
            Ok((out, counts))
        })
    }

    /// What one entry adds to the counts (itself and, for a directory, what it holds).
    async fn count_entry(&mut self, node: &Node) -> Result<Counts> {
        let mut c = Counts::default();
        c.entry(node);
        if let Node::Dir { tree } = node {
            c.add(&self.count_tree(*tree).await?);
        }
        Ok(c)
    }

    /// What a stored subtree holds, memoized.
    fn count_tree(&mut self, hash: Hash) -> BoxFuture<'_, Result<Counts>> {
        Box::pin(async move {
            if let Some(c) = self.counted.get(&hash) {
                return Ok(*c);
            }
            let tree = self.dm.load_tree(self.index, &hash).await?;
            let mut c = Counts::default();
            for e in &tree.entries {
                c.add(&self.count_entry(&e.node).await?);
            }
            self.counted.insert(hash, c);
            Ok(c)
        })
    }

    /// Stores the `.conflicts` folder bottom-up; returns its hash and what it holds.
    fn build(&mut self, b: Building) -> BoxFuture<'_, Result<(Hash, Counts)>> {
        Box::pin(async move {
            let mut counts = Counts::default();
            let mut entries: Vec<TreeEntry> = Vec::new();
            for (name, sub) in b.dirs {
                let (hash, c) = self.build(sub).await?;
                counts.add(&c);
                counts.dirs += 1;
                entries.push(TreeEntry {
                    name,
                    mode: 0o755,
                    mtime_ns: 0,
                    node: Node::Dir { tree: hash },
                });
            }
            for (_, e) in b.leaves {
                counts.add(&self.count_entry(&e.node).await?);
                entries.push(e);
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let hash = self.store_tree(&Tree { entries }).await?;
            Ok((hash, counts))
        })
    }

    /// Packs a tree node unless the store has it; returns its hash.
    async fn store_tree(&mut self, tree: &Tree) -> Result<Hash> {
        let bytes = tree.to_bytes();
        let hash = self.dm.store.hasher().hash(&bytes);
        if self.index.contains(&hash) || !self.added.insert(hash) {
            return Ok(hash);
        }
        let (stored, _) = self.pack.add_blob(hash, BlobKind::Tree, &bytes, true);
        self.stored_bytes += stored as u64;
        if self.pack.len() >= self.dm.store.config().pack_size as usize {
            self.flush().await?;
        }
        Ok(hash)
    }

    async fn flush(&mut self) -> Result<()> {
        let pack = std::mem::replace(&mut self.pack, self.dm.store.pack_writer(0));
        if !pack.is_empty() {
            self.dm.store.put_pack(&pack.finish()).await?;
        }
        Ok(())
    }
}
