//! Work trees: the local scratch area behind a mutable mount.
//!
//! A work tree is a directory holding `files/` (the working copy that the mount shows) and
//! `state.json` (repo, message, branch, label, the base bundle and the last committed one). A
//! commit uploads `files/` as a new bundle (advancing the branch and setting the label) and
//! records it in `state.json`. Nothing in the scratch area is removed until the caller says the
//! work is finished, so a failed commit (an unreachable store) loses nothing: a later commit, or
//! a recovery that reopens the scratch area, finishes it.
//!
//! Commits of one work tree are serialized with a lock file (`commit.lock`, holding the pid of
//! its owner; a lock whose owner is dead is taken over).
//!
//! ```no_run
//! use datamon::{Datamon, NoProgress, OpenOptions};
//! use datamon::worktree::WorkTreeState;
//! # async fn demo() -> datamon::Result<()> {
//! let dm = Datamon::open("file:///tmp/datamon-store", OpenOptions::default()).await?;
//! let state = WorkTreeState::new("notebooks".parse()?, "work in progress");
//! let wt = dm.worktree_create("/tmp/scratch-1".as_ref(), state, &NoProgress).await?;
//! std::fs::write(wt.files().join("hello.txt"), b"hi").map_err(datamon::Error::from)?;
//! let bundle = dm.worktree_commit(&wt, None, false, &NoProgress).await?;
//! assert!(bundle.is_some());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    BranchName, Bundle, BundleId, Datamon, DownloadOptions, Error, LabelName, Progress, RepoName,
    Result, UploadContext, UploadOptions,
};

const STATE: &str = "state.json";
const FILES: &str = "files";
const LOCK: &str = "commit.lock";

/// What a work tree commits to, and what it has committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkTreeState {
    /// The repo.
    pub repo: RepoName,
    /// The message of each commit (unless one is given).
    pub message: String,
    /// The branch commits advance (default `main`).
    pub branch: Option<BranchName>,
    /// The label each commit sets.
    pub label: Option<LabelName>,
    /// The bundle the work started from.
    pub base: Option<BundleId>,
    /// The last bundle committed from this work tree.
    pub last: Option<BundleId>,
    /// Where it is mounted (informational, for recovery).
    #[serde(default)]
    pub mountpoint: Option<PathBuf>,
}

impl WorkTreeState {
    /// A state for an empty work tree of `repo`.
    pub fn new(repo: RepoName, message: &str) -> Self {
        WorkTreeState {
            repo,
            message: message.to_owned(),
            branch: None,
            label: None,
            base: None,
            last: None,
            mountpoint: None,
        }
    }
}

/// An opened work tree (see the module docs).
#[derive(Debug, Clone)]
pub struct WorkTree {
    dir: PathBuf,
}

impl WorkTree {
    /// Opens an existing work tree.
    ///
    /// # Errors
    /// [`Error::BadPath`] when `dir` holds no work tree.
    pub fn open(dir: &Path) -> Result<WorkTree> {
        let wt = WorkTree {
            dir: dir.to_owned(),
        };
        if !wt.dir.join(STATE).is_file() || !wt.files().is_dir() {
            return Err(Error::BadPath {
                path: dir.to_owned(),
                reason: "is not a datamon work tree (no state.json and files/)".into(),
            });
        }
        Ok(wt)
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The working copy.
    pub fn files(&self) -> PathBuf {
        self.dir.join(FILES)
    }

    /// Its state.
    ///
    /// # Errors
    /// An unreadable or damaged `state.json`.
    pub fn state(&self) -> Result<WorkTreeState> {
        let p = self.dir.join(STATE);
        let b = std::fs::read(&p).map_err(Error::io(&p))?;
        serde_json::from_slice(&b).map_err(|e| Error::Corrupt {
            path: p.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// Replaces its state (atomically).
    ///
    /// # Errors
    /// A local I/O error.
    #[allow(clippy::disallowed_methods)] // writes a temporary file, then renames it
    pub fn save_state(&self, s: &WorkTreeState) -> Result<()> {
        let p = self.dir.join(STATE);
        let tmp = self
            .dir
            .join(format!(".state-{:016x}", rand::random::<u64>()));
        let b = serde_json::to_vec_pretty(s).expect("state always serializes");
        std::fs::write(&tmp, b).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(Error::io(&p))
    }

    /// Removes the scratch area (after the work is committed).
    ///
    /// # Errors
    /// A local I/O error.
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(Error::io(&self.dir))
    }

    /// Takes the commit lock, waiting up to `wait` for another committer.
    fn lock(&self, wait: Duration) -> Result<LockGuard> {
        let p = self.dir.join(LOCK);
        let deadline = std::time::Instant::now() + wait;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(LockGuard(p));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&p).unwrap_or_default();
                    let alive = owner
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if !alive {
                        let _ = std::fs::remove_file(&p);
                        continue;
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(Error::BadPath {
                            path: p,
                            reason: format!("another commit (process {}) is running", owner.trim()),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::io(&p)(e)),
            }
        }
    }
}

struct LockGuard(PathBuf);
impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Datamon {
    /// Creates a work tree in `dir` (which must not exist or be empty), starting from
    /// `state.base` (downloaded into `files/`) or empty.
    ///
    /// # Errors
    /// A non-empty `dir`; the base bundle not found; a store or local I/O error.
    pub async fn worktree_create(
        &self,
        dir: &Path,
        state: WorkTreeState,
        progress: &dyn Progress,
    ) -> Result<WorkTree> {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::DestinationNotEmpty {
                path: dir.to_owned(),
            });
        }
        self.get_repo(&state.repo).await?;
        let wt = WorkTree {
            dir: dir.to_owned(),
        };
        std::fs::create_dir_all(wt.files()).map_err(Error::io(wt.files()))?;
        if let Some(base) = &state.base {
            self.download(
                &state.repo,
                base,
                &wt.files(),
                &DownloadOptions::default(),
                progress,
            )
            .await?;
        }
        wt.save_state(&state)?;
        Ok(wt)
    }

    /// Whether the working copy differs from the last commit (or the base, or emptiness).
    ///
    /// # Errors
    /// A store or local I/O error.
    pub async fn worktree_changed(&self, wt: &WorkTree) -> Result<bool> {
        let s = wt.state()?;
        match s.last.or(s.base) {
            Some(id) => Ok(!self.diff_dir(&s.repo, &id, &wt.files()).await?.is_empty()),
            None => {
                let files = wt.files();
                let mut rd = std::fs::read_dir(&files).map_err(Error::io(&files))?;
                Ok(rd.next().is_some())
            }
        }
    }

    /// Commits the working copy as a new bundle (advancing the branch, setting the label), unless
    /// it is unchanged and `force` is not set (then `None`). `message` overrides the state's.
    ///
    /// # Errors
    /// Another commit holds the lock for more than a minute; a store or local I/O error (the
    /// working copy is untouched, so the commit can be retried).
    pub async fn worktree_commit(
        &self,
        wt: &WorkTree,
        message: Option<&str>,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Option<Bundle>> {
        let w = wt.clone();
        let _lock = tokio::task::spawn_blocking(move || w.lock(Duration::from_secs(60))).await??;
        if !force && !self.worktree_changed(wt).await? {
            return Ok(None);
        }
        let mut s = wt.state()?;
        let ctx = UploadContext {
            repo: s.repo.clone(),
            path: wt.files(),
            message: message.unwrap_or(&s.message).to_owned(),
        };
        let opts = UploadOptions {
            label: s.label.clone(),
            branch: s.branch.clone(),
            ..UploadOptions::default()
        };
        let report = self.upload(ctx, opts, progress).await?;
        s.last = Some(report.bundle.id);
        wt.save_state(&s)?;
        Ok(Some(report.bundle))
    }
}
