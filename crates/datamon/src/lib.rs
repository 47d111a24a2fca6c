//! datamon: Git for data. The public library behind every front end (CLI, FUSE, CSI, Python).
//!
//! A **repo** is a dataset; a **bundle** is an immutable version of a repo's files; a **label**
//! names a bundle; a **branch** is a line of bundles. Everything lives in a content-addressed,
//! deduplicated store ([`datamon_store`]) reached through `object_store`, with no server.
//!
//! Main entry points, all on [`Datamon`]:
//! - repos: [`Datamon::create_repo`], [`Datamon::list_repos`], [`Datamon::get_repo`];
//! - bundles: [`Datamon::upload`], [`Datamon::list_bundles`], [`Datamon::resolve`],
//!   [`Datamon::download`], [`Datamon::list_files`], [`Datamon::diff_bundles`],
//!   [`Datamon::diff_dir`], [`Datamon::update_dir`];
//! - labels and branches: [`Datamon::set_label`], [`Datamon::label_history`],
//!   [`Datamon::create_branch`], [`Datamon::list_branches`];
//! - runs and lineage: [`Datamon::record_run`], [`Datamon::get_run`], [`Datamon::list_runs`],
//!   [`Datamon::diff_runs`], [`Datamon::lineage`], [`Datamon::log`], [`Datamon::find_bundles`];
//! - queries across runs: [`Datamon::compare_runs`] (a table), [`Datamon::vary_runs`] ("if only
//!   one component changes, how does the result vary?"), [`Datamon::diff_runs_deep`] (what
//!   differs, step by step upstream);
//! - many writers of one bundle: [`Datamon::diamond_initialize`], [`Datamon::diamond_add_split`],
//!   [`Datamon::diamond_commit`] ([`diamond`]);
//! - integrity: [`Datamon::fsck`];
//! - mounts: [`Datamon::vfs`] opens a bundle as a read-only virtual filesystem ([`vfs::Vfs`]);
//!   [`Datamon::worktree_create`] and [`Datamon::worktree_commit`] back mutable mounts
//!   ([`worktree::WorkTree`]).
//!
//! ```no_run
//! use datamon::{Datamon, OpenOptions, UploadContext, UploadOptions, NoProgress, BundleSelector};
//! # async fn demo() -> datamon::Result<()> {
//! let dm = Datamon::open("file:///tmp/datamon-store", OpenOptions::default()).await?;
//! dm.create_repo(&"images".parse()?, "training images").await?;
//! let ctx = UploadContext { repo: "images".parse()?, path: "/data/images".into(), message: "v1".into() };
//! let report = dm.upload(ctx, UploadOptions::default(), &NoProgress).await?;
//! let id = dm.resolve(&"images".parse()?, &BundleSelector::Latest).await?;
//! assert_eq!(id, report.bundle.id);
//! # Ok(()) }
//! ```

mod browse;
mod catalog;
pub mod cloud_env;
mod compare;
mod delete;
pub mod diamond;
mod diff;
mod download;
mod error;
pub mod exec;
mod fsck;
pub mod gc;
mod lineage;
pub mod placeholder;
mod progress;
mod refs;
mod repo;
mod retention;
mod rewrite;
mod run;
mod scan;
mod sdk;
pub mod sidecar;
mod statcache;
mod upload;
pub mod vfs;
mod walk;
pub mod worktree;

use std::path::PathBuf;

pub use browse::{BundlePage, BundlePageQuery};
pub use compare::{
    Cause, CauseKind, CompareQuery, Component, ComponentKind, ComponentValue, DeepDiff,
    DeepOptions, DeepStep, InputOrigin, InputTrace, LeftOut, RowBundle, RunFilter, RunRow, RunSort,
    RunTable, Variation, VaryGroup, VaryRun,
};
pub use datamon_store::{
    generate_key_file, Error as StoreError, Identity, KeyInfo, KeyKind, Secret, Store, StoreCheck,
    StoreUrl, SyncReport, TrustedKey, Unlock, ENV_KEY_FILE, ENV_PASSPHRASE, ENV_PASSPHRASE_FILE,
    ENV_SIGNING_KEY_FILE, ENV_TRUST_ROOT,
};
pub use datamon_types as types;
pub use datamon_types::{
    Branch, BranchName, Bundle, BundleId, BundleStats, CodeVersion, Hash, LabelName, LabelRecord,
    Repo, RepoName, Run, RunId, RunInput, RunOutput, RunStatus,
};
pub use delete::{DeleteOptions, DeleteReport, Tombstone};
pub use diamond::{
    Conflict, ConflictPolicy, Diamond, DiamondCommit, DiamondCommitOptions, DiamondCommitReport,
    DiamondId, DiamondInfo, DiamondState, Split, SplitId, SplitOptions, SplitReport,
};
pub use diff::{Change, ChangeKind};
pub use download::{DownloadOptions, DownloadReport};
pub use error::{Error, ErrorKind, PathRole, Result, VfsErrorKind};
pub use exec::{InputMounter, MaterializedInput, PlannedOutput, RunPlan, RunResult, RunSpec};
pub use fsck::FsckReport;
pub use gc::{GcOptions, GcPin, GcPlan, GcPurge, GcReport};
pub use lineage::{
    BundleQuery, EdgeKind, Lineage, LineageBundle, LineageDirection, LineageEdge, LineageOptions,
    LogEntry, META_RUN, META_STEP,
};
pub use progress::{NoProgress, Progress, Unit};
pub use refs::BundleSelector;
pub use retention::{RetentionPlan, RetentionRules};
pub use rewrite::{MovedRef, RemovePathsOptions, RemovePathsReport, Rewrite, RewrittenBundle};
pub use run::{BundleDiff, InputSpec, OutputSpec, RunDiff, RunQuery, ValueDiff};
pub use tokio_util::sync::CancellationToken;
pub use upload::{UploadContext, UploadOptions, UploadReport};
pub use walk::FileInfo;

/// Settings for opening a store.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Who is acting, recorded in bundles and refs (default: `unknown`).
    pub author: Option<String>,
    /// Where local caches live (the upload stat cache); `None` disables them.
    pub cache_dir: Option<PathBuf>,
    /// Backend settings passed to `object_store` (e.g. `aws_endpoint`).
    pub store_options: Vec<(String, String)>,
    /// How many files or objects to transfer at once (default: chosen from the CPU count).
    pub concurrency: Option<usize>,
    /// What opens an encrypted store (default: the secrets the environment names, see
    /// [`Unlock::from_env`]).
    pub unlock: Option<Unlock>,
}

impl OpenOptions {
    fn unlock(&self) -> Unlock {
        self.unlock.clone().unwrap_or_else(Unlock::from_env)
    }
}

/// An opened datamon store: the entry point of the library.
#[derive(Debug, Clone)]
pub struct Datamon {
    store: Store,
    author: String,
    cache_dir: Option<PathBuf>,
    concurrency: usize,
}

impl Datamon {
    /// Opens (and on first use initializes) the store at `url`.
    ///
    /// # Errors
    /// An invalid or unreachable store.
    pub async fn open(url: &str, options: OpenOptions) -> Result<Datamon> {
        let store = Store::open_with(url, &options.store_options, &options.unlock()).await?;
        Ok(Self::with_store(store, options))
    }

    /// Creates an encrypted store at `url` (`docs/security.md`) that `secret` opens, its key
    /// named `key_name`, and opens it. Every object but the config and the key objects is
    /// sealed, and chunk ids are keyed hashes.
    ///
    /// # Errors
    /// A store already at `url` (encryption is chosen when a store is created); a store error.
    pub async fn create_encrypted(
        url: &str,
        secret: &Secret,
        key_name: &str,
        options: OpenOptions,
    ) -> Result<Datamon> {
        let author = options.author.clone().unwrap_or_else(|| "unknown".into());
        let store =
            Store::create_encrypted(url, &options.store_options, secret, key_name, &author).await?;
        Ok(Self::with_store(store, options))
    }

    /// Opens the store at `url` with a replica at `replica`: every object is written to both,
    /// and reads fall back to the replica when the primary fails (see
    /// [`Store::open_with_replica`]).
    ///
    /// # Errors
    /// An invalid or unreachable store or replica.
    pub async fn open_with_replica(
        url: &str,
        replica: &str,
        options: OpenOptions,
    ) -> Result<Datamon> {
        let store = Store::open_with_replica_unlocked(
            url,
            replica,
            &options.store_options,
            &options.unlock(),
        )
        .await?;
        Ok(Self::with_store(store, options))
    }

    fn with_store(store: Store, options: OpenOptions) -> Datamon {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Datamon {
            store,
            author: options.author.unwrap_or_else(|| "unknown".to_owned()),
            cache_dir: options.cache_dir,
            concurrency: options.concurrency.unwrap_or(cores * 4).clamp(1, 256),
        }
    }

    /// Checks that the store at `url` is reachable, writable and honours create-if-absent
    /// (see [`Store::check`]), without initializing it.
    ///
    /// # Errors
    /// A store error of kind `Check` naming the first check that failed.
    pub async fn check_store(url: &str, options: &OpenOptions) -> Result<()> {
        Store::check(url, &options.store_options).await?;
        Ok(())
    }

    /// Copies into the store at `to` every object of the store at `from` that it lacks, in
    /// commit order (packs, index, repos, bundles, branches, labels), never overwriting a
    /// record; safe to interrupt and rerun (see [`Store::sync_to`]).
    ///
    /// # Errors
    /// A store error of either side.
    pub async fn sync_stores(from: &str, to: &str, options: &OpenOptions) -> Result<SyncReport> {
        let src = Store::open_with(from, &options.store_options, &options.unlock()).await?;
        Ok(src.sync_to(to, &options.store_options).await?)
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Who is acting.
    pub fn author(&self) -> &str {
        &self.author
    }
}
