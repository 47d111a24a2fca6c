//! A read-only virtual filesystem over one bundle: what a FUSE (or any other) front end calls.
//!
//! - **Lazy.** Only the root is known at first; a directory's tree node is fetched when it is
//!   first looked up or listed, and parsed nodes are kept in an LRU bounded by their number of
//!   entries. Inodes exist only for entries the kernel looked up, and are dropped again when it
//!   forgets them, so memory does not grow with the size of the bundle.
//! - **Reads fetch only what they need.** An open file keeps the prefix offsets of its chunks; a
//!   read maps `(offset, size)` to a range of chunks, served from the on-disk chunk cache shared
//!   by all mounts of the store (adjacent chunks with one read, each verified), then a small
//!   memory LRU, then the store: missing chunks are grouped into runs contiguous in one pack,
//!   fetched with parallel range reads, decoded and verified (falling back to the store's
//!   replica), and stored in both caches.
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

mod cache;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use datamon_store::Index;
use datamon_types::{Bundle, BundleId, ChunkRef, EntryKind, Hash, Node, RepoName, Tree};
use futures::StreamExt;
use tokio::runtime::Handle;

use self::cache::{DiskCache, Lru};
use crate::download::{fetch_run, plan_runs};
use crate::{Datamon, Error, Result, VfsErrorKind};

/// The root directory's inode number.
pub const ROOT_INODE: u64 = 1;

/// The first read-ahead window of a sequential reader.
const MIN_READAHEAD: u64 = 256 << 10;

/// How to serve a mount.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// The chunk cache root; chunks go to `<cache_dir>/<store id>/`, shared by all mounts of that
    /// store. `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bound of the on-disk chunk cache, in bytes (default 10 GiB).
    pub cache_size: u64,
    /// Bound of the in-memory chunk cache, in bytes (default 64 MiB).
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

#[derive(Debug, Clone)]
enum Content {
    Dir(Hash),
    File(Arc<[ChunkRef]>),
    Symlink(Arc<str>),
}

#[derive(Debug)]
struct Inode {
    parent: u64,
    name: Arc<str>,
    attr: Attr,
    content: Content,
    lookups: u64,
}

#[derive(Debug, Default)]
struct Inodes {
    map: HashMap<u64, Inode>,
    by_name: HashMap<(u64, Arc<str>), u64>,
    next: u64,
}

#[derive(Debug)]
struct OpenFile {
    chunks: Arc<[ChunkRef]>,
    /// `offsets[i]` is where chunk `i` starts; the last element is the size.
    offsets: Vec<u64>,
    /// Where the next sequential read would start, the current read-ahead window, and the chunk
    /// index up to which read-ahead was already issued.
    seq: Mutex<(u64, u64, usize)>,
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
    trees: Mutex<Lru<Hash, Arc<Tree>>>,
    memory: Mutex<Lru<Hash, Bytes>>,
    disk: DiskCache,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    inflight: Mutex<HashSet<Hash>>,
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
        let root_attr = Attr {
            ino: ROOT_INODE,
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime_ns: bundle.created_at.timestamp_nanos_opt().unwrap_or_default(),
        };
        let mut inodes = Inodes {
            next: ROOT_INODE + 1,
            ..Default::default()
        };
        inodes.map.insert(
            ROOT_INODE,
            Inode {
                parent: ROOT_INODE,
                name: Arc::from(""),
                attr: root_attr,
                content: Content::Dir(bundle.root),
                lookups: 1,
            },
        );
        Ok(Vfs {
            inner: Arc::new(Inner {
                dm: self.clone(),
                index,
                bundle,
                handle,
                trees: Mutex::new(Lru::new(opts.tree_cache.max(1) as u64)),
                memory: Mutex::new(Lru::new(opts.memory_cache)),
                disk,
                opts,
                inodes: Mutex::new(inodes),
                files: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                inflight: Mutex::new(HashSet::new()),
            }),
        })
    }
}

impl Vfs {
    /// The mounted bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.inner.bundle
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
            Err(_) => Err(Error::Timeout {
                what: what.to_owned(),
                seconds: limit.as_secs(),
            }),
        }
    }

    /// A directory node, from the LRU or the store.
    fn tree_blocking(&self, hash: &Hash) -> Result<Arc<Tree>> {
        if let Some(t) = lock(&self.inner.trees).get(hash) {
            return Ok(t);
        }
        let inner = &self.inner;
        let tree = Arc::new(
            self.block(&format!("reading directory node {hash}"), async {
                inner.dm.load_tree(&inner.index, hash).await
            })?,
        );
        let weight = tree.entries.len() as u64 + 1;
        lock(&self.inner.trees).insert(*hash, tree.clone(), weight);
        Ok(tree)
    }

    /// The attributes of a known inode.
    ///
    /// # Errors
    /// [`Error::Vfs`] (stale) for an unknown inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        lock(&self.inner.inodes)
            .map
            .get(&ino)
            .map(|i| i.attr)
            .ok_or_else(|| vfs_err(VfsErrorKind::Stale, format!("unknown inode {ino}")))
    }

    fn dir_hash(&self, ino: u64) -> Result<Hash> {
        match lock(&self.inner.inodes).map.get(&ino) {
            Some(Inode {
                content: Content::Dir(h),
                ..
            }) => Ok(*h),
            Some(_) => Err(vfs_err(
                VfsErrorKind::NotADirectory,
                format!("inode {ino} is not a directory"),
            )),
            None => Err(vfs_err(VfsErrorKind::Stale, format!("unknown inode {ino}"))),
        }
    }

    /// Looks `name` up in directory `parent`; `None` when there is no such entry. Each successful
    /// lookup counts one reference, dropped by [`Vfs::forget`].
    ///
    /// # Errors
    /// A stale or non-directory `parent`; a store failure or timeout.
    pub fn lookup_blocking(&self, parent: u64, name: &str) -> Result<Option<Attr>> {
        let dir = self.dir_hash(parent)?;
        {
            let mut inodes = lock(&self.inner.inodes);
            let key = (parent, Arc::<str>::from(name));
            if let Some(&ino) = inodes.by_name.get(&key) {
                if let Some(i) = inodes.map.get_mut(&ino) {
                    i.lookups += 1;
                    return Ok(Some(i.attr));
                }
            }
        }
        let tree = self.tree_blocking(&dir)?;
        Ok(tree.get(name).map(|e| self.intern(parent, e)))
    }

    /// Finds or creates the inode of entry `e` of directory `parent`, counting one lookup.
    fn intern(&self, parent: u64, e: &datamon_types::TreeEntry) -> Attr {
        let mut inodes = lock(&self.inner.inodes);
        let name: Arc<str> = Arc::from(e.name.as_str());
        if let Some(&ino) = inodes.by_name.get(&(parent, name.clone())) {
            if let Some(i) = inodes.map.get_mut(&ino) {
                i.lookups += 1;
                return i.attr;
            }
        }
        let content = match &e.node {
            Node::Dir { tree } => Content::Dir(*tree),
            Node::File { chunks, .. } => Content::File(Arc::from(chunks.as_slice())),
            Node::Symlink { target } => Content::Symlink(Arc::from(target.as_str())),
        };
        let ino = inodes.next;
        inodes.next += 1;
        let attr = Attr {
            ino,
            kind: e.kind(),
            size: e.size(),
            mode: e.mode,
            mtime_ns: e.mtime_ns,
        };
        inodes.by_name.insert((parent, name.clone()), ino);
        inodes.map.insert(
            ino,
            Inode {
                parent,
                name,
                attr,
                content,
                lookups: 1,
            },
        );
        attr
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
        let tree = self.tree_blocking(&self.dir_hash(ino)?)?;
        for (i, e) in tree.entries.iter().enumerate().skip(offset) {
            let attr = self.intern(ino, e);
            if add(i + 1, &e.name, attr) {
                self.forget(attr.ino, 1);
                break;
            }
        }
        Ok(())
    }

    /// Drops `n` lookup references; the inode is forgotten at zero (never the root).
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INODE {
            return;
        }
        let mut inodes = lock(&self.inner.inodes);
        let gone = match inodes.map.get_mut(&ino) {
            Some(i) => {
                i.lookups = i.lookups.saturating_sub(n);
                i.lookups == 0
            }
            None => false,
        };
        if gone {
            if let Some(i) = inodes.map.remove(&ino) {
                inodes.by_name.remove(&(i.parent, i.name));
            }
        }
    }

    /// How many inodes are known (for tests and metrics).
    pub fn inode_count(&self) -> usize {
        lock(&self.inner.inodes).map.len()
    }

    /// The oldest known entries beyond the first `keep`, as `(parent inode, name)`, oldest
    /// first (never the root). A front end asks the kernel to drop these names (FUSE
    /// `notify_inval_entry`); the kernel then forgets their inodes unless they are in use, which
    /// bounds this process's memory however many files are listed.
    pub fn entries_over(&self, keep: usize) -> Vec<(u64, String)> {
        let inodes = lock(&self.inner.inodes);
        let n = inodes.map.len().saturating_sub(keep);
        if n == 0 {
            return Vec::new();
        }
        let mut all: Vec<(u64, u64, &Arc<str>)> = inodes
            .map
            .iter()
            .filter(|(&ino, _)| ino != ROOT_INODE)
            .map(|(&ino, i)| (ino, i.parent, &i.name))
            .collect();
        let n = n.min(all.len());
        if n < all.len() {
            all.select_nth_unstable_by_key(n, |e| e.0);
        }
        all.truncate(n);
        all.sort_unstable_by_key(|e| e.0);
        all.into_iter()
            .map(|(_, parent, name)| (parent, name.to_string()))
            .collect()
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
        let tree = self.tree_blocking(&self.dir_hash(ino)?)?;
        for (i, e) in tree.entries.iter().enumerate().skip(offset) {
            let known = lock(&self.inner.inodes)
                .by_name
                .get(&(ino, Arc::from(e.name.as_str())))
                .copied();
            // Placeholder numbers live above the range real inodes use.
            let placeholder = || {
                let h = blake3::hash(format!("{ino}/{}", e.name).as_bytes());
                let mut b = [0u8; 8];
                b.copy_from_slice(&h.as_bytes()[..8]);
                u64::from_le_bytes(b) | (1 << 63)
            };
            let entry = DirEntry {
                ino: known.unwrap_or_else(placeholder),
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
        match lock(&self.inner.inodes).map.get(&ino) {
            Some(Inode {
                content: Content::Symlink(t),
                ..
            }) => Ok(t.to_string()),
            Some(_) => Err(vfs_err(
                VfsErrorKind::NotASymlink,
                format!("inode {ino} is not a symlink"),
            )),
            None => Err(vfs_err(VfsErrorKind::Stale, format!("unknown inode {ino}"))),
        }
    }

    /// Opens a file for reading; returns a handle for [`Vfs::read_blocking`].
    ///
    /// # Errors
    /// A stale inode, or a directory.
    pub fn open_blocking(&self, ino: u64) -> Result<u64> {
        let chunks = match lock(&self.inner.inodes).map.get(&ino) {
            Some(Inode {
                content: Content::File(c),
                ..
            }) => c.clone(),
            Some(_) => {
                return Err(vfs_err(
                    VfsErrorKind::IsADirectory,
                    format!("inode {ino} is not a regular file"),
                ))
            }
            None => return Err(vfs_err(VfsErrorKind::Stale, format!("unknown inode {ino}"))),
        };
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

    /// A handle reading a file made of `chunks`, and the file's size.
    fn open_chunks(&self, chunks: Arc<[ChunkRef]>) -> (u64, u64) {
        let mut offsets = Vec::with_capacity(chunks.len() + 1);
        let mut at = 0u64;
        for c in chunks.iter() {
            offsets.push(at);
            at += u64::from(c.1);
        }
        offsets.push(at);
        let fh = self.inner.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.files).insert(
            fh,
            Arc::new(OpenFile {
                chunks,
                offsets,
                seq: Mutex::new((0, 0, 0)),
            }),
        );
        (fh, at)
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
        let file = lock(&self.inner.files)
            .get(&fh)
            .cloned()
            .ok_or_else(|| vfs_err(VfsErrorKind::Stale, format!("unknown file handle {fh}")))?;
        let file_size = *file.offsets.last().expect("offsets has n+1 elements");
        if offset >= file_size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = file_size.min(offset + u64::from(size));
        let first = file.offsets.partition_point(|&o| o <= offset) - 1;
        let last = file.offsets.partition_point(|&o| o < end) - 1; // inclusive
        let (window, issued) = {
            let mut seq = lock(&file.seq);
            let w = if offset == seq.0 && self.inner.opts.readahead > 0 {
                (seq.1 * 2).clamp(MIN_READAHEAD, self.inner.opts.readahead)
            } else {
                seq.2 = 0;
                0
            };
            seq.0 = end;
            seq.1 = w;
            (w, seq.2)
        };
        let base = file.offsets[first];
        let mut buf = vec![0u8; (file.offsets[last + 1] - base) as usize];
        let starts: Vec<usize> = file.offsets[first..=last + 1]
            .iter()
            .map(|&o| (o - base) as usize)
            .collect();
        self.fill(&file.chunks[first..=last], &starts, &mut buf)?;
        if window > 0 {
            let upto = self.prefetch(&file, last + 1, issued, window);
            let mut seq = lock(&file.seq);
            seq.2 = seq.2.max(upto);
        }
        Ok(Bytes::from(buf).slice((offset - base) as usize..(end - base) as usize))
    }

    /// Fills `buf` with the decoded bytes of `chunks` (chunk `i` at `starts[i]..starts[i + 1]`):
    /// runs of chunks adjacent in the disk cache with one read each, then the memory cache, then
    /// the store. Everything taken from a cache is verified against its hash.
    fn fill(&self, chunks: &[ChunkRef], starts: &[usize], buf: &mut [u8]) -> Result<()> {
        let disk = &self.inner.disk;
        let locs = disk.locate(chunks);
        let mut missing = Vec::new();
        let mut i = 0;
        while i < chunks.len() {
            let Some(loc) = locs[i] else {
                match lock(&self.inner.memory).get(&chunks[i].0) {
                    Some(b) => buf[starts[i]..starts[i + 1]].copy_from_slice(&b),
                    None => missing.push(i),
                }
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < chunks.len()
                && locs[j].is_some_and(|next| locs[j - 1].is_some_and(|l| l.followed_by(&next)))
            {
                j += 1;
            }
            let run = &mut buf[starts[i]..starts[j]];
            match disk.read_at(loc.seg, loc.off, run) {
                Ok(()) => {
                    let before = missing.len();
                    for k in i..j {
                        let bytes = &buf[starts[k]..starts[k + 1]];
                        if Hash::of(bytes) != chunks[k].0 {
                            disk.invalidate(&chunks[k].0);
                            missing.push(k);
                        }
                    }
                    // Read again while about to be evicted: keep it (second chance).
                    if missing.len() == before && disk.is_old(loc.seg) {
                        disk.promote(&chunks[i..j], &buf[starts[i]..starts[j]]);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "chunk cache read failed");
                    missing.extend(i..j);
                }
            }
            i = j;
        }
        if !missing.is_empty() {
            let wanted: Vec<ChunkRef> = missing.iter().map(|&k| chunks[k]).collect();
            let data = self.chunks_blocking(&wanted)?;
            for (&k, bytes) in missing.iter().zip(&data) {
                buf[starts[k]..starts[k + 1]].copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// A verified chunk from memory or the disk cache.
    fn cached(&self, c: &ChunkRef) -> Option<Bytes> {
        if let Some(b) = lock(&self.inner.memory).get(&c.0) {
            return Some(b);
        }
        let loc = self.inner.disk.locate(std::slice::from_ref(c))[0]?;
        let mut b = vec![0u8; c.1 as usize];
        self.inner.disk.read_at(loc.seg, loc.off, &mut b).ok()?;
        if Hash::of(&b) != c.0 {
            self.inner.disk.invalidate(&c.0);
            return None;
        }
        Some(Bytes::from(b))
    }

    /// Whether a chunk is in a cache (not verified).
    fn is_cached(&self, c: &ChunkRef) -> bool {
        lock(&self.inner.memory).contains(&c.0) || self.inner.disk.contains(&c.0)
    }

    /// The decoded bytes of `chunks`, in order, fetching what no cache has.
    fn chunks_blocking(&self, chunks: &[ChunkRef]) -> Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = chunks.iter().map(|c| self.cached(c)).collect();
        let mut missing: Vec<ChunkRef> = Vec::new();
        for (c, o) in chunks.iter().zip(&out) {
            if o.is_none() && !missing.contains(c) {
                missing.push(*c);
            }
        }
        if !missing.is_empty() {
            // Wait a little for chunks a prefetch is already fetching.
            let wait = self.inner.opts.timeout.min(Duration::from_secs(5));
            let deadline = std::time::Instant::now() + wait;
            while std::time::Instant::now() < deadline {
                let inflight = lock(&self.inner.inflight);
                if !missing.iter().any(|c| inflight.contains(&c.0)) {
                    break;
                }
                drop(inflight);
                std::thread::sleep(Duration::from_millis(1));
            }
            missing.retain(|c| !self.is_cached(c));
            if !missing.is_empty() {
                let this = self.clone();
                self.block(
                    "reading file data",
                    async move { this.fetch(missing).await },
                )?;
            }
            for (c, o) in chunks.iter().zip(out.iter_mut()) {
                if o.is_none() {
                    *o = Some(self.cached(c).ok_or_else(|| Error::Corrupt {
                        path: format!("chunk {}", c.0),
                        detail: "fetched but not cached".into(),
                    })?);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Read-ahead for a sequential reader: of the chunks that start less than `window` bytes
    /// after chunk `next` (the reader's position), skipping those before `issued` (already
    /// requested), those in the disk cache are asked of the kernel (`posix_fadvise(WILLNEED)`,
    /// adjacent ones as one range) and the others fetched from the store in the background.
    /// Returns the index of the first chunk not considered.
    fn prefetch(&self, file: &OpenFile, next: usize, issued: usize, window: u64) -> usize {
        let from = next.max(issued);
        if next >= file.chunks.len() || from >= file.chunks.len() {
            return from;
        }
        let limit = file.offsets[next] + window;
        let upto = (from..file.chunks.len())
            .find(|&i| file.offsets[i] >= limit)
            .unwrap_or(file.chunks.len());
        let candidates = &file.chunks[from..upto];
        let locs = self.inner.disk.locate(candidates);
        let mut ranges: Vec<(u32, u32, u64)> = Vec::new();
        let mut from_store = Vec::new();
        let mut seen = HashSet::new();
        {
            let inflight = lock(&self.inner.inflight);
            let memory = lock(&self.inner.memory);
            for (c, loc) in candidates.iter().zip(&locs) {
                if let Some(l) = loc {
                    match ranges.last_mut() {
                        Some((seg, off, len))
                            if *seg == l.seg && u64::from(*off) + *len == u64::from(l.off) =>
                        {
                            *len += u64::from(l.len);
                        }
                        _ => ranges.push((l.seg, l.off, u64::from(l.len))),
                    }
                } else if !memory.contains(&c.0) && !inflight.contains(&c.0) && seen.insert(c.0) {
                    from_store.push(*c);
                }
            }
        }
        if !ranges.is_empty() {
            let this = self.clone();
            self.inner.handle.spawn_blocking(move || {
                for (seg, off, len) in ranges {
                    this.inner.disk.will_need(seg, off, len);
                }
            });
        }
        if !from_store.is_empty() {
            let this = self.clone();
            let timeout = self.inner.opts.timeout;
            self.inner.handle.spawn(async move {
                match tokio::time::timeout(timeout, this.fetch(from_store)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "read-ahead failed"),
                    Err(_) => tracing::debug!("read-ahead timed out"),
                }
            });
        }
        upto
    }

    /// Fetches chunks from the store: runs contiguous in one pack, parallel range reads, decode
    /// and verify, then both caches. Returns how many bytes were fetched. Cancel-safe: the
    /// chunks are marked in flight only while the returned future lives.
    async fn fetch(&self, chunks: Vec<ChunkRef>) -> Result<u64> {
        let _inflight = InFlight::new(self, &chunks);
        let r = self.fetch_inner(chunks).await;
        if let Err(e) = &r {
            tracing::warn!(error = %e, "cannot read file data from the store");
        }
        r
    }

    async fn fetch_inner(&self, chunks: Vec<ChunkRef>) -> Result<u64> {
        let runs = plan_runs(&chunks, &self.inner.index).map_err(|missing| Error::Corrupt {
            path: format!("chunk {missing}"),
            detail: "not in the store's index".into(),
        })?;
        let store = self.inner.dm.store();
        // Runs are read in parallel but cached in order, so that a file read in order lies in
        // order in the disk cache (one read per request when it is read again).
        let mut fetched = futures::stream::iter(runs.into_iter().map(|run| async move {
            // Read, decoded and verified; bytes that do not verify are read from the replica.
            let what = format!("pack {}", run.pack);
            let chunks: Vec<ChunkRef> = run.chunks.iter().map(|(c, _)| *c).collect();
            let data = fetch_run(store, &what, run).await?;
            Ok::<_, Error>((chunks, data))
        }))
        .buffered(self.inner.opts.parallel_fetches.max(1));
        let mut total = 0u64;
        while let Some(run) = fetched.next().await {
            let (chunks, data) = run?;
            let this = self.clone();
            total += tokio::task::spawn_blocking(move || {
                this.inner.disk.put_run(&chunks, &data);
                // Also in memory: the reader waiting for them finds them there even if a tiny
                // disk cache has already evicted them.
                let mut at = 0;
                let mut memory = lock(&this.inner.memory);
                for c in &chunks {
                    let b = Bytes::copy_from_slice(&data[at..at + c.1 as usize]);
                    at += b.len();
                    memory.insert(c.0, b, c.1.into());
                }
                at as u64
            })
            .await?;
        }
        Ok(total)
    }
}

/// Marks chunks as being fetched, until dropped (also when the fetch is cancelled by a timeout).
struct InFlight {
    vfs: Vfs,
    hashes: Vec<Hash>,
}

impl InFlight {
    fn new(vfs: &Vfs, chunks: &[ChunkRef]) -> Self {
        let hashes: Vec<Hash> = chunks.iter().map(|c| c.0).collect();
        lock(&vfs.inner.inflight).extend(hashes.iter().copied());
        InFlight {
            vfs: vfs.clone(),
            hashes,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inflight = lock(&self.vfs.inner.inflight);
        for h in &self.hashes {
            inflight.remove(h);
        }
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
