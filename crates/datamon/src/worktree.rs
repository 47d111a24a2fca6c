//! Work trees: the local scratch area behind a mutable mount.
//!
//! A work tree is a directory holding `files/` (the working copy that the mount shows) and
//! `state.json` (repo, message, branch, label, the base bundle and the last committed one).
//! Started from a bundle, `files/` holds its namespace with a [`crate::placeholder`] for each
//! non-empty file (copy-on-write: nothing is downloaded; a commit reuses the base chunks of the
//! placeholders left, unread). A commit uploads `files/` as a new bundle (advancing the branch and setting the label) and
//! records it in `state.json`. Nothing in the scratch area is removed until the caller says the
//! work is finished, so a failed commit (an unreachable store) loses nothing: a later commit, or
//! a recovery that reopens the scratch area, finishes it.
//!
//! Commits of one work tree are serialized with a kernel lock (`flock`) on `commit.lock`: the
//! kernel releases it when its holder exits, however it exits, so a dead committer never blocks
//! the next one and two committers never both hold it. The file holds the holder's pid, for
//! messages only.
//!
//! ```no_run
//! use datamon::{Datamon, NoProgress, OpenOptions};
//! use datamon::worktree::WorkTreeState;
//! # async fn demo() -> datamon::Result<()> {
//! let dm = Datamon::open("file:///tmp/datamon-store", OpenOptions::default()).await?;
//! let state = WorkTreeState::new("notebooks".parse()?, "work in progress");
//! let wt = dm.worktree_create("/tmp/scratch-1".as_ref(), state, &NoProgress).await?;
//! std::fs::write(wt.files().join("hello.txt"), b"hi").expect("write");
//! let bundle = dm.worktree_commit(&wt, None, false, &NoProgress).await?;
//! assert!(bundle.is_some());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::unix::fs::PermissionsExt;

use datamon_types::Node;
use serde::{Deserialize, Serialize};

use crate::{
    BranchName, Bundle, BundleId, Datamon, DownloadOptions, Error, LabelName, Progress, RepoName,
    Result, Unit, UploadContext, UploadOptions,
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
    /// User metadata recorded in each bundle committed from it (e.g. the pod that wrote it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
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
            meta: Default::default(),
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
        use rustix::fs::{flock, FlockOperation};
        use std::io::{Read as _, Seek as _, Write as _};
        let p = self.dir.join(LOCK);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(Error::io(&p))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match flock(&f, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if std::time::Instant::now() >= deadline {
                        let mut owner = String::new();
                        let _ = f.read_to_string(&mut owner);
                        let owner = owner.trim();
                        let who = if owner.is_empty() {
                            "another process".to_owned()
                        } else {
                            format!("process {owner}")
                        };
                        return Err(Error::Busy {
                            path: p,
                            what: format!("another commit ({who}) is running"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::io(&p)(e.into())),
            }
        }
        // The pid is for messages; the kernel lock is what excludes.
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        Ok(LockGuard(f))
    }
}

/// Holds the commit lock; closing the file releases it.
struct LockGuard(#[allow(dead_code)] std::fs::File);

impl Datamon {
    /// Creates a work tree in `dir` (which must not exist or be empty), starting from
    /// `state.base` (laid out as placeholders, reading only its tree nodes; downloaded in full
    /// when the filesystem has no user extended attributes) or empty.
    ///
    /// # Panics
    /// When called outside a multi-threaded tokio runtime (the layout runs under
    /// `block_in_place`).
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
            let files = wt.files();
            if crate::placeholder::supported(&files)? {
                self.materialize(&state.repo, base, &files, progress)
                    .await?;
            } else {
                tracing::info!(
                    "{} has no user extended attributes: downloading the base bundle in full",
                    files.display()
                );
                self.download(
                    &state.repo,
                    base,
                    &files,
                    &DownloadOptions::default(),
                    progress,
                )
                .await?;
            }
        }
        wt.save_state(&state)?;
        Ok(wt)
    }

    /// Lays out bundle `id` in the empty folder `dest` as placeholders (see
    /// [`crate::placeholder`]): directories, symlinks and empty files as they are, and every
    /// other file as a sparse file of its size, mode and mtime naming its base entry. Reads tree
    /// nodes only.
    async fn materialize(
        &self,
        repo: &RepoName,
        id: &BundleId,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (bundle, index) = self.open_bundle(repo, id).await?;
        // (path, (the tree node holding the entry, its position), the entry), parents first.
        let entries = self.walk_located(&index, bundle.root).await?;
        progress.begin("lay out", entries.len() as u64, Unit::Items);
        tokio::task::block_in_place(|| -> Result<()> {
            let mut dirs = Vec::new();
            for (path, (tree, index), e) in &entries {
                let target = dest.join(path);
                match &e.node {
                    Node::Dir { .. } => {
                        std::fs::create_dir(&target).map_err(Error::io(&target))?;
                        dirs.push((target, e));
                    }
                    Node::Symlink { target: link } => {
                        std::os::unix::fs::symlink(link, &target).map_err(Error::io(&target))?;
                        crate::download::set_mtime(&target, e.mtime_ns, true)?;
                    }
                    Node::File { size, .. } => {
                        let f = std::fs::File::create(&target).map_err(Error::io(&target))?;
                        if *size > 0 {
                            f.set_len(*size).map_err(Error::io(&target))?;
                            let base = crate::placeholder::BaseRef {
                                tree: *tree,
                                entry: *index,
                            };
                            crate::placeholder::write(&target, &base)?;
                        }
                        f.set_permissions(std::fs::Permissions::from_mode(e.mode))
                            .map_err(Error::io(&target))?;
                        drop(f);
                        crate::download::set_mtime(&target, e.mtime_ns, false)?;
                    }
                }
                progress.advance(1);
            }
            // Directory modes and mtimes last, deepest first.
            for (target, e) in dirs.iter().rev() {
                std::fs::set_permissions(target, std::fs::Permissions::from_mode(e.mode))
                    .map_err(Error::io(target))?;
                crate::download::set_mtime(target, e.mtime_ns, false)?;
            }
            Ok(())
        })?;
        progress.end();
        Ok(())
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
            meta: s.meta.clone(),
            ..UploadOptions::default()
        };
        let report = self.upload(ctx, opts, progress).await?;
        s.last = Some(report.bundle.id);
        wt.save_state(&s)?;
        Ok(Some(report.bundle))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use std::os::unix::fs::{FileExt, MetadataExt};

    use super::*;
    use crate::vfs::VfsOptions;
    use crate::{placeholder, NoProgress, OpenOptions};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn data(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// A bundle with nested files, an empty file, a symlink and an empty directory; returns the
    /// store, the repo, the bundle and its source folder.
    fn base(
        rt: &tokio::runtime::Runtime,
        name: &str,
    ) -> (Datamon, RepoName, Bundle, tempfile::TempDir) {
        let src = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(src.path().join("d/e")).expect("dirs");
        std::fs::create_dir_all(src.path().join("empty-dir")).expect("dirs");
        std::fs::write(src.path().join("d/e/big"), data(3_000_000, 1)).expect("write");
        std::fs::write(src.path().join("d/small"), b"small").expect("write");
        std::fs::write(src.path().join("other"), data(100_000, 2)).expect("write");
        std::fs::write(src.path().join("empty"), b"").expect("write");
        std::fs::set_permissions(
            src.path().join("d/small"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("d/small", src.path().join("ln")).expect("symlink");
        let repo: RepoName = "r".parse().expect("name");
        let bundle = rt.block_on(async {
            let dm = Datamon::open(&format!("memory://{name}"), OpenOptions::default())
                .await
                .expect("open");
            dm.create_repo(&repo, "t").await.expect("repo");
            let ctx = UploadContext {
                repo: repo.clone(),
                path: src.path().to_owned(),
                message: "base".into(),
            };
            let r = dm
                .upload(ctx, UploadOptions::default(), &NoProgress)
                .await
                .expect("upload");
            (dm, r.bundle)
        });
        (bundle.0, repo, bundle.1, src)
    }

    fn new_tree(
        rt: &tokio::runtime::Runtime,
        dm: &Datamon,
        repo: &RepoName,
        b: &Bundle,
    ) -> (WorkTree, tempfile::TempDir) {
        let scratch = tempfile::tempdir().expect("tmp");
        let state = WorkTreeState {
            base: Some(b.id),
            ..WorkTreeState::new(repo.clone(), "work")
        };
        let wt = rt
            .block_on(dm.worktree_create(&scratch.path().join("wt"), state, &NoProgress))
            .expect("create");
        (wt, scratch)
    }

    #[test]
    fn untouched_work_tree_commits_the_base_tree_without_reading_files() {
        let rt = rt();
        let (dm, repo, b, src) = base(&rt, "wt-untouched");
        let (wt, _scratch) = new_tree(&rt, &dm, &repo, &b);
        let big = wt.files().join("d/e/big");
        let m = std::fs::metadata(&big).expect("stat");
        assert_eq!(m.len(), 3_000_000);
        assert!(m.blocks() * 512 < 100_000, "a sparse placeholder");
        assert!(placeholder::read(&big).expect("xattr").is_some());
        assert!(placeholder::read(&wt.files().join("empty"))
            .expect("xattr")
            .is_none());
        assert_eq!(
            std::fs::metadata(wt.files().join("d/small"))
                .expect("stat")
                .mode()
                & 0o7777,
            0o600
        );
        assert!(!rt.block_on(dm.worktree_changed(&wt)).expect("changed"));
        let c = rt
            .block_on(dm.worktree_commit(&wt, None, true, &NoProgress))
            .expect("commit")
            .expect("forced");
        assert_eq!(c.root, b.root, "the same tree as the base");
        assert_eq!(c.stats.new_chunks, 0);
        // Bytes on disk are never content: damage a placeholder's zeros, the commit is the same.
        std::fs::OpenOptions::new()
            .write(true)
            .open(wt.files().join("other"))
            .and_then(|f| f.write_all_at(b"junk", 10))
            .expect("write");
        assert!(!rt.block_on(dm.worktree_changed(&wt)).expect("changed"));
        // Metadata of a placeholder is committed; content still comes from the base.
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        filetime::set_file_mtime(&big, filetime::FileTime::from_unix_time(1_000_000, 7))
            .expect("touch");
        assert!(rt.block_on(dm.worktree_changed(&wt)).expect("changed"));
        let c2 = rt
            .block_on(dm.worktree_commit(&wt, None, false, &NoProgress))
            .expect("commit")
            .expect("changed");
        let changes = rt
            .block_on(dm.diff_bundles(&repo, &b.id, &c2.id))
            .expect("diff");
        assert_eq!(
            changes.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["M d/e/big"]
        );
        let dl = tempfile::tempdir().expect("tmp");
        rt.block_on(dm.download(
            &repo,
            &c2.id,
            &dl.path().join("x"),
            &DownloadOptions::default(),
            &NoProgress,
        ))
        .expect("download");
        let got = dl.path().join("x/d/e/big");
        assert_eq!(
            std::fs::read(&got).expect("read"),
            std::fs::read(src.path().join("d/e/big")).expect("read")
        );
        let gm = std::fs::metadata(&got).expect("stat");
        assert_eq!(
            (gm.mode() & 0o7777, gm.mtime(), gm.mtime_nsec()),
            (0o640, 1_000_000, 7)
        );
    }

    #[test]
    fn hydrate_clear_and_interrupted_states() {
        let rt = rt();
        let (dm, repo, b, src) = base(&rt, "wt-hydrate");
        let (wt, _scratch) = new_tree(&rt, &dm, &repo, &b);
        let vfs = rt
            .block_on(dm.vfs(&repo, &b.id, VfsOptions::default(), rt.handle().clone()))
            .expect("vfs");
        let big = wt.files().join("d/e/big");
        let before = std::fs::metadata(&big).expect("stat");
        // Read-only mode: hydration still writes, and keeps the mode and mtime.
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        assert!(placeholder::hydrate_blocking(&vfs, &big).expect("hydrate"));
        assert!(!placeholder::hydrate_blocking(&vfs, &big).expect("again"));
        assert!(placeholder::read(&big).expect("xattr").is_none());
        assert_eq!(
            std::fs::read(&big).expect("read"),
            std::fs::read(src.path().join("d/e/big")).expect("read")
        );
        let after = std::fs::metadata(&big).expect("stat");
        assert_eq!(after.mode() & 0o7777, 0o444);
        assert_eq!(
            (after.mtime(), after.mtime_nsec()),
            (before.mtime(), before.mtime_nsec())
        );
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(!rt.block_on(dm.worktree_changed(&wt)).expect("changed"));

        // Truncation to zero; then an interrupted one (size 0, attribute still there).
        let other = wt.files().join("other");
        let other_ref = placeholder::read(&other)
            .expect("xattr")
            .expect("a placeholder");
        assert!(placeholder::clear_blocking(&other).expect("clear"));
        assert_eq!(std::fs::metadata(&other).expect("stat").len(), 0);
        let small = wt.files().join("d/small");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&small)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        assert!(placeholder::read(&small).expect("xattr").is_some());
        let c = rt
            .block_on(dm.worktree_commit(&wt, None, false, &NoProgress))
            .expect("commit")
            .expect("changed");
        let mut changes: Vec<String> = rt
            .block_on(dm.diff_bundles(&repo, &b.id, &c.id))
            .expect("diff")
            .iter()
            .map(|c| c.to_string())
            .collect();
        changes.sort();
        assert_eq!(changes, ["M d/small", "M other"]);
        let files = rt.block_on(dm.list_files(&repo, &c.id)).expect("list");
        assert!(files
            .iter()
            .filter(|f| f.path == "other" || f.path == "d/small")
            .all(|f| f.size == 0));

        // A placeholder whose size changed behind the mount's back is refused, not guessed.
        let third = wt.files().join("fresh");
        std::fs::write(&third, b"abc").expect("write");
        placeholder::write(&third, &other_ref).expect("xattr");
        let err = rt
            .block_on(dm.worktree_commit(&wt, None, true, &NoProgress))
            .expect_err("size mismatch");
        assert!(matches!(err, Error::BadPath { .. }), "{err}");
    }

    /// The commit lock is the kernel's: what the lock file says about its owner does not
    /// matter. A pid file check would take over a lock whose file names a dead process while
    /// its real holder is still committing.
    #[test]
    fn commit_lock_excludes_whatever_the_lock_file_says() {
        let dir = tempfile::tempdir().expect("tmp");
        let wt = WorkTree {
            dir: dir.path().to_owned(),
        };
        let held = wt.lock(Duration::ZERO).expect("first lock");
        // The file now names a process that does not exist (pid reuse, a copied scratch area).
        std::fs::write(dir.path().join(LOCK), "999999999").expect("write");
        let err = wt
            .lock(Duration::from_millis(200))
            .err()
            .expect("a second committer must wait while the lock is held");
        assert_eq!(err.kind(), crate::ErrorKind::Busy, "{err}");
        assert!(err.to_string().contains("another commit"), "{err}");
        drop(held);
        // Released with its holder: the next committer takes it at once.
        let again = wt.lock(Duration::ZERO).expect("lock after release");
        drop(again);
    }
}
