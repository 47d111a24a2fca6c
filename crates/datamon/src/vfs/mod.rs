//! A read-only virtual filesystem over one bundle: what a FUSE (or any other) front end calls.
//!
//! - **Lazy.** Only the root is known at first; a directory's tree node is fetched when it is
//!   first looked up or listed, and parsed nodes are kept in a memory cache bounded by their
//!   number of entries. Inodes exist only for entries the kernel looked up, and are dropped again when it
//!   forgets them, so memory does not grow with the size of the bundle.
//! - **Reads fetch only what they need.** An open file keeps the prefix offsets of its chunks; a
//!   read maps `(offset, size)` to a range of chunks, served from the on-disk chunk cache shared
//!   by all mounts of the store (adjacent chunks with one read, each verified), then a small
//!   memory cache, then the store: missing chunks are grouped into runs contiguous in one pack,
//!   fetched with parallel range reads, decoded and verified (falling back to the store's
//!   replica), and stored in both caches. A chunk is fetched by one request at a time; others
//!   that need it wait for that fetch.
//! - **Read-ahead.** Sequential reads of an open file grow a window (up to
//!   [`VfsOptions::readahead`]) whose chunks are fetched in the background, or, when cached,
//!   handed to the kernel's read-ahead.
//! - **Never hangs.** Every store access has a time limit ([`VfsOptions::timeout`]); a failure is
//!   logged with `tracing` and returned as an error (front ends answer EIO).
//!
//! The methods are synchronous (`*_blocking`): FUSE calls them from its own threads, and they
//! bridge to the async store through the runtime [`Handle`] given at creation. They must not be
//! called from inside an async task.
//!
//! ```no_run
//! use datamon::{BundleSelector, Datamon, OpenOptions};
//! use datamon::vfs::{VfsOptions, ROOT_INODE};
//! # async fn demo() -> datamon::Result<()> {
//! let dm = Datamon::open("file:///tmp/datamon-store", OpenOptions::default()).await?;
//! let repo = "images".parse()?;
//! let id = dm.resolve(&repo, &BundleSelector::Latest).await?;
//! let vfs = dm.vfs(&repo, &id, VfsOptions::default(), tokio::runtime::Handle::current()).await?;
//! std::thread::spawn(move || {
//!     let attr = vfs.lookup_blocking(ROOT_INODE, "a.txt")?.expect("exists");
//!     let fh = vfs.open_blocking(attr.ino)?;
//!     let first = vfs.read_blocking(fh, 0, 4096)?;
//!     vfs.release(fh);
//!     Ok::<_, datamon::Error>(first)
//! });
//! # Ok(()) }
//! ```
//!
//! Modules: `inodes` (the inode table), `read` (open files, the read path, read-ahead), `fetch`
//! (fetches in flight, store reads, cache fill), `cache` (the memory caches and the disk cache).

mod cache;
mod fetch;
mod inodes;
mod metrics;
mod read;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use datamon_store::Index;
use datamon_types::{Bundle, BundleId, EntryKind, Hash, Node, RepoName, Tree};
use tokio::runtime::Handle;

use self::cache::{DiskCache, WeightedCache};
use self::fetch::InFlight;
use self::inodes::Inodes;
pub use self::metrics::{VfsMetrics, VfsMetricsSnapshot};
use self::read::OpenFile;
use crate::{Datamon, Error, Result, VfsErrorKind};

/// The root directory's inode number.
pub const ROOT_INODE: u64 = 1;

/// How to serve a mount.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// The chunk cache root; chunks go to `<cache_dir>/<store id>/`, shared by all mounts of that
    /// store. `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bound of the on-disk chunk cache, in bytes (default 10 GiB).
    pub cache_size: u64,
    /// Bound of the in-memory chunk cache, in bytes (default 64 MiB; 0: none).
    pub memory_cache: u64,
    /// How many directory entries the cache of parsed directory nodes holds, over all nodes
    /// (default 200,000: about 40 MiB).
    pub tree_cache: usize,
    /// The largest read-ahead window of a sequential reader, in bytes (default 8 MiB; 0 turns
    /// read-ahead off).
    pub readahead: u64,
    /// Range reads in flight per fetch (default 8).
    pub parallel_fetches: usize,
    /// Time limit of each store access (default 60 s).
    pub timeout: Duration,
    /// Where the mount counts what it serves and fetches (default: its own counters). Give
    /// several mounts one to total them.
    pub metrics: Arc<VfsMetrics>,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            cache_dir: None,
            cache_size: 10 << 30,
            memory_cache: 64 << 20,
            tree_cache: 200_000,
            readahead: 8 << 20,
            parallel_fetches: 8,
            timeout: Duration::from_secs(60),
            metrics: Arc::default(),
        }
    }
}

/// The attributes of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Size in bytes (a symlink: the length of its target).
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its inode number if it was looked up, else a stable placeholder.
    pub ino: u64,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: EntryKind,
}

/// Sizes of a mounted bundle (for `statfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfsStats {
    /// Files in the bundle.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Bytes in the on-disk chunk cache, as this process accounts them.
    pub cache_bytes: u64,
}

/// A read-only view of one bundle (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Vfs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dm: Datamon,
    index: Index,
    bundle: Bundle,
    handle: Handle,
    opts: VfsOptions,
    inodes: Mutex<Inodes>,
    trees: WeightedCache<Hash, Arc<Tree>>,
    memory: WeightedCache<Hash, Bytes>,
    disk: DiskCache,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    inflight: InFlight,
    /// Bounds the bytes waiting to be written to the disk cache (see `fetch`).
    pending_writes: Arc<tokio::sync::Semaphore>,
    #[cfg(test)]
    hooks: fetch::Hooks,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn vfs_err(kind: VfsErrorKind, what: String) -> Error {
    Error::Vfs { what, kind }
}

impl Datamon {
    /// Opens a bundle as a read-only virtual filesystem. Loads the bundle record and the store's
    /// index, and opens the chunk cache; nothing else is read until asked for.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`]; a store error; an unusable cache directory.
    pub async fn vfs(
        &self,
        repo: &RepoName,
        id: &BundleId,
        opts: VfsOptions,
        handle: Handle,
    ) -> Result<Vfs> {
        let (bundle, index) = self.open_bundle(repo, id).await?;
        let dir = opts
            .cache_dir
            .as_ref()
            .map(|d| d.join(&self.store.config().id));
        let (size, dir2) = (opts.cache_size, dir.clone());
        let disk = tokio::task::spawn_blocking(move || DiskCache::open(dir2, size))
            .await?
            .map_err(|e| Error::Io {
                path: dir.unwrap_or_default(),
                source: e,
            })?;
        let root = Attr {
            ino: ROOT_INODE,
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime_ns: bundle.created_at.timestamp_nanos_opt().unwrap_or_default(),
        };
        let inodes = Inodes::new(root, bundle.root);
        Ok(Vfs {
            inner: Arc::new(Inner {
                dm: self.clone(),
                index,
                bundle,
                handle,
                // Weights: entries per directory node, bytes per chunk (16 KiB on average).
                trees: WeightedCache::new(opts.tree_cache.max(1) as u64, 64),
                memory: WeightedCache::new(opts.memory_cache, 16 << 10),
                disk,
                opts,
                inodes: Mutex::new(inodes),
                files: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                inflight: InFlight::default(),
                pending_writes: Arc::new(tokio::sync::Semaphore::new(
                    fetch::PENDING_WRITES_MIB as usize,
                )),
                #[cfg(test)]
                hooks: fetch::Hooks::default(),
            }),
        })
    }
}

impl Vfs {
    /// The mounted bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.inner.bundle
    }

    /// Its counters (shared with every mount given the same [`VfsOptions::metrics`]).
    pub fn metrics(&self) -> &Arc<VfsMetrics> {
        &self.inner.opts.metrics
    }

    /// Sizes for `statfs`.
    pub fn stats(&self) -> VfsStats {
        VfsStats {
            files: self.inner.bundle.stats.files,
            bytes: self.inner.bundle.stats.bytes,
            cache_bytes: self.inner.disk.size(),
        }
    }

    /// Runs a store access on the runtime, with the time limit.
    fn block<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.inner.opts.timeout;
        let r = self
            .inner
            .handle
            .block_on(async { tokio::time::timeout(limit, fut).await });
        match r {
            Ok(r) => r,
            Err(_) => {
                self.inner.opts.metrics.error();
                Err(Error::Timeout {
                    what: what.to_owned(),
                    seconds: limit.as_secs(),
                })
            }
        }
    }

    /// A directory node, from the cache or the store.
    fn tree_blocking(&self, hash: &Hash) -> Result<Arc<Tree>> {
        if let Some(t) = self.inner.trees.get(hash) {
            return Ok(t);
        }
        let inner = &self.inner;
        let tree = Arc::new(
            self.block(&format!("reading directory node {hash}"), async {
                let r = inner.dm.load_tree(&inner.index, hash).await;
                if r.is_err() {
                    inner.opts.metrics.error();
                }
                r
            })?,
        );
        self.inner.trees.insert(*hash, tree.clone());
        Ok(tree)
    }

    /// The attributes of a known inode.
    ///
    /// # Errors
    /// [`Error::Vfs`] (stale) for an unknown inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        lock(&self.inner.inodes).attr(ino)
    }

    /// Looks `name` up in directory `parent`; `None` when there is no such entry. Each successful
    /// lookup counts one reference, dropped by [`Vfs::forget`].
    ///
    /// # Errors
    /// A stale or non-directory `parent`; a store failure or timeout.
    pub fn lookup_blocking(&self, parent: u64, name: &str) -> Result<Option<Attr>> {
        let dir = {
            let mut inodes = lock(&self.inner.inodes);
            let dir = inodes.dir_hash(parent)?;
            if let Some(attr) = inodes.lookup(parent, name) {
                return Ok(Some(attr));
            }
            dir
        };
        let tree = self.tree_blocking(&dir)?;
        Ok(tree
            .get(name)
            .map(|e| lock(&self.inner.inodes).intern(parent, e)))
    }

    /// Lists directory `ino` from entry number `offset` on with each entry's attributes (FUSE
    /// `readdirplus`), calling `add` per entry until it returns `true` (buffer full, entry not
    /// taken). Every entry taken counts one lookup, as [`Vfs::lookup_blocking`] does.
    ///
    /// # Errors
    /// A stale or non-directory inode; a store failure or timeout.
    pub fn readdir_plus_blocking(
        &self,
        ino: u64,
        offset: usize,
        mut add: impl FnMut(usize, &str, Attr) -> bool,
    ) -> Result<()> {
        let dir = lock(&self.inner.inodes).dir_hash(ino)?;
        let tree = self.tree_blocking(&dir)?;
        for (i, e) in tree.entries.iter().enumerate().skip(offset) {
            let attr = lock(&self.inner.inodes).intern(ino, e);
            if add(i + 1, &e.name, attr) {
                self.forget(attr.ino, 1);
                break;
            }
        }
        Ok(())
    }

    /// Drops `n` lookup references; the inode is forgotten at zero (never the root).
    pub fn forget(&self, ino: u64, n: u64) {
        lock(&self.inner.inodes).forget(ino, n);
    }

    /// How many inodes are known (for tests and metrics).
    pub fn inode_count(&self) -> usize {
        lock(&self.inner.inodes).len()
    }

    /// The oldest known entries beyond the first `keep`, as `(parent inode, name)`, oldest
    /// first (never the root). A front end asks the kernel to drop these names (FUSE
    /// `notify_inval_entry`); the kernel then forgets their inodes unless they are in use, which
    /// bounds this process's memory however many files are listed.
    pub fn entries_over(&self, keep: usize) -> Vec<(u64, String)> {
        lock(&self.inner.inodes).entries_over(keep)
    }

    /// Lists directory `ino` from entry number `offset` on, calling `add` per entry until it
    /// returns `true` (buffer full).
    ///
    /// # Errors
    /// A stale or non-directory inode; a store failure or timeout.
    pub fn readdir_blocking(
        &self,
        ino: u64,
        offset: usize,
        mut add: impl FnMut(usize, DirEntry) -> bool,
    ) -> Result<()> {
        let dir = lock(&self.inner.inodes).dir_hash(ino)?;
        let tree = self.tree_blocking(&dir)?;
        for (i, e) in tree.entries.iter().enumerate().skip(offset) {
            let known = lock(&self.inner.inodes).known(ino, &e.name);
            let entry = DirEntry {
                ino: known.unwrap_or_else(|| inodes::placeholder_ino(ino, &e.name)),
                name: e.name.clone(),
                kind: e.kind(),
            };
            if add(i + 1, entry) {
                break;
            }
        }
        Ok(())
    }

    /// A symlink's target.
    ///
    /// # Errors
    /// A stale inode, or one that is not a symlink.
    pub fn readlink(&self, ino: u64) -> Result<String> {
        lock(&self.inner.inodes).symlink_target(ino)
    }

    /// Opens a file for reading; returns a handle for [`Vfs::read_blocking`].
    ///
    /// # Errors
    /// A stale inode, or a directory.
    pub fn open_blocking(&self, ino: u64) -> Result<u64> {
        let chunks = lock(&self.inner.inodes).file_chunks(ino)?;
        Ok(self.open_chunks(chunks).0)
    }

    /// Opens entry number `entry` of the directory node `tree` (any tree node of the store, such
    /// as the base entry of a work tree's placeholder) for reading; returns a handle for
    /// [`Vfs::read_blocking`] and the file's size.
    ///
    /// # Errors
    /// No such file in that node ([`VfsErrorKind::Stale`]); a store failure or timeout.
    pub fn open_entry_blocking(&self, tree: &Hash, entry: u32) -> Result<(u64, u64)> {
        let node = self.tree_blocking(tree)?;
        let Some(Node::File { chunks, .. }) = node.entries.get(entry as usize).map(|e| &e.node)
        else {
            return Err(vfs_err(
                VfsErrorKind::Stale,
                format!("no file at entry {entry} of tree node {tree}"),
            ));
        };
        Ok(self.open_chunks(Arc::from(chunks.as_slice())))
    }

    /// Closes a handle.
    pub fn release(&self, fh: u64) {
        lock(&self.inner.files).remove(&fh);
    }

    /// Reads up to `size` bytes at `offset` (fewer only at the end of the file).
    ///
    /// # Errors
    /// A stale handle; a store failure or timeout; data that does not verify.
    pub fn read_blocking(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let data = self.read_file(fh, offset, size)?;
        self.inner.opts.metrics.read(data.len());
        Ok(data)
    }

    /// Reads into `buf` from `offset`, filling it unless the file ends first; returns how many
    /// bytes were read (0 at or past the end). Whole chunks are written straight into `buf`
    /// (no buffer of its own, no copy): the read for large buffers.
    ///
    /// # Errors
    /// As [`Vfs::read_blocking`].
    pub fn read_into_blocking(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.read_file_into(fh, offset, buf, true)?;
        self.inner.opts.metrics.read(n);
        Ok(n)
    }

    /// [`Vfs::read_into_blocking`] for one piece of a larger read that the caller splits and
    /// reads in parallel itself: no read-ahead, and the file's sequential reader (whose
    /// read-ahead it would confuse) is left as it was.
    ///
    /// # Errors
    /// As [`Vfs::read_blocking`].
    pub fn read_piece_into_blocking(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.read_file_into(fh, offset, buf, false)?;
        self.inner.opts.metrics.read(n);
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use super::*;
    use crate::{BundleSelector, NoProgress, OpenOptions, UploadContext, UploadOptions};

    #[test]
    fn lazy_lookup_read_readahead_and_forget() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let src = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::create_dir_all(src.path().join("d/e")).unwrap();
        std::fs::write(src.path().join("d/e/big"), &big).unwrap();
        std::fs::write(src.path().join("small"), b"hi").unwrap();
        std::os::unix::fs::symlink("small", src.path().join("ln")).unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let opts = VfsOptions {
            cache_dir: Some(cache.path().to_owned()),
            ..VfsOptions::default()
        };
        let (dm, id, vfs) = rt.block_on(async {
            let dm = Datamon::open("memory://vfs-test", OpenOptions::default())
                .await
                .unwrap();
            dm.create_repo(&repo, "t").await.unwrap();
            let ctx = UploadContext {
                repo: repo.clone(),
                path: src.path().to_owned(),
                message: "m".into(),
            };
            dm.upload(ctx, UploadOptions::default(), &NoProgress)
                .await
                .unwrap();
            let id = dm.resolve(&repo, &BundleSelector::Latest).await.unwrap();
            let vfs = dm
                .vfs(&repo, &id, opts.clone(), rt.handle().clone())
                .await
                .unwrap();
            (dm, id, vfs)
        });
        assert_eq!(vfs.inode_count(), 1, "only the root at first");
        let mut names = Vec::new();
        vfs.readdir_blocking(ROOT_INODE, 0, |_, e| {
            names.push(e.name);
            false
        })
        .unwrap();
        assert_eq!(names, ["d", "ln", "small"]);
        assert!(vfs.lookup_blocking(ROOT_INODE, "nope").unwrap().is_none());
        let ln = vfs.lookup_blocking(ROOT_INODE, "ln").unwrap().unwrap();
        assert_eq!(vfs.readlink(ln.ino).unwrap(), "small");
        let d = vfs.lookup_blocking(ROOT_INODE, "d").unwrap().unwrap();
        let e = vfs.lookup_blocking(d.ino, "e").unwrap().unwrap();
        let f = vfs.lookup_blocking(e.ino, "big").unwrap().unwrap();
        assert_eq!(f.size, big.len() as u64);
        assert_eq!(vfs.inode_count(), 5);
        assert_eq!(
            vfs.entries_over(3),
            [(ROOT_INODE, "ln".to_owned()), (ROOT_INODE, "d".to_owned())],
            "the oldest entries past the bound, oldest first"
        );
        assert!(vfs.entries_over(5).is_empty());
        let fh = vfs.open_blocking(f.ino).unwrap();
        // Sequential reads (read-ahead kicks in), then random ones.
        let mut at = 0u64;
        while at < f.size {
            let d = vfs.read_blocking(fh, at, 131_072).unwrap();
            assert_eq!(d, big[at as usize..(at as usize + d.len())]);
            at += d.len() as u64;
        }
        for (off, len) in [(0u64, 1u32), (1_234_567, 100_000), (2_999_990, 4096)] {
            let d = vfs.read_blocking(fh, off, len).unwrap();
            let end = (off as usize + len as usize).min(big.len());
            assert_eq!(d, big[off as usize..end]);
        }
        assert!(vfs.read_blocking(fh, 5_000_000, 10).unwrap().is_empty());
        vfs.release(fh);
        assert!(vfs.stats().cache_bytes > 0, "chunks went to the disk cache");
        assert!(matches!(
            vfs.open_blocking(d.ino),
            Err(Error::Vfs {
                kind: VfsErrorKind::IsADirectory,
                ..
            })
        ));
        vfs.forget(f.ino, 1);
        vfs.forget(e.ino, 1);
        assert_eq!(vfs.inode_count(), 3);
        assert!(vfs.getattr(f.ino).is_err());
        // readdirplus counts a lookup per entry taken, none for the one that did not fit.
        let mut taken = Vec::new();
        vfs.readdir_plus_blocking(ROOT_INODE, 0, |next, name, a| {
            if next == 3 {
                return true;
            }
            taken.push((name.to_owned(), a.ino));
            false
        })
        .unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0], ("d".to_owned(), d.ino), "known inodes are reused");
        assert_eq!(vfs.inode_count(), 3, "small was not taken, so not kept");
        vfs.forget(d.ino, 2);
        vfs.forget(ln.ino, 2);
        assert_eq!(vfs.inode_count(), 1);

        // Damage every cached chunk on disk: a new mount of the same cache notices (the hashes
        // do not match), fetches the chunks again and returns the right bytes.
        let segments = cache.path().join(&dm.store().config().id).join("segments");
        let mut damaged = 0;
        for e in std::fs::read_dir(&segments).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "seg") {
                let mut b = std::fs::read(e.path()).unwrap();
                for i in (0..b.len()).step_by(4096) {
                    b[i] ^= 0xff;
                }
                std::fs::write(e.path(), b).unwrap();
                damaged += 1;
            }
        }
        assert!(damaged > 0, "the cache has segments");
        let vfs2 = rt
            .block_on(dm.vfs(&repo, &id, opts, rt.handle().clone()))
            .unwrap();
        let d = vfs2.lookup_blocking(ROOT_INODE, "d").unwrap().unwrap();
        let e = vfs2.lookup_blocking(d.ino, "e").unwrap().unwrap();
        let f = vfs2.lookup_blocking(e.ino, "big").unwrap().unwrap();
        let fh = vfs2.open_blocking(f.ino).unwrap();
        let all = vfs2.read_blocking(fh, 0, big.len() as u32).unwrap();
        assert!(all == big[..], "damaged cache data is never returned");
    }
}
