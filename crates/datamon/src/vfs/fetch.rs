//! Fetching chunks from the store, at most once at a time per chunk.
//!
//! - **In flight.** A fetch first *claims* its chunks in the [`InFlight`] table. A reader that
//!   needs a chunk already claimed waits for that fetch (a `tokio::sync::watch` channel per
//!   fetch, no polling) and sees its outcome: on success it takes the chunk from the caches, on
//!   failure it returns the same error. A claim is released when its fetch ends, whichever way:
//!   also when the fetching future is dropped (a time limit, a cancelled read-ahead), and then
//!   its waiters fetch the chunks themselves.
//! - **Cache fill.** Missing chunks are grouped into runs contiguous in one pack, fetched with
//!   parallel range reads, decoded and verified (falling back to the store's replica), and put
//!   in the disk cache (in order) and the memory cache.
//! - **Eviction is not corruption.** The reader that fetched chunks uses the bytes it fetched,
//!   not what the caches still hold. A waiter whose chunks were evicted before it could read
//!   them waits or fetches again, at most [`WAITS`] times, and then fetches them itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datamon_types::{ChunkRef, Hash};
use futures::StreamExt;
use tokio::sync::watch;

use super::{lock, Vfs};
use crate::download::{fetch_run, plan_runs};
use crate::{Error, ErrorKind, Result};

/// How many times a reader waits for other fetches of the chunks it needs (their chunks may be
/// evicted before it takes them) before it fetches what is still missing itself.
const WAITS: usize = 2;

/// How a fetch ended: `None` while it runs.
type Outcome = Option<std::result::Result<(), Arc<Error>>>;

/// The chunks being fetched, each with the channel on which its fetch announces how it ended.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    map: Arc<Mutex<HashMap<Hash, watch::Receiver<Outcome>>>>,
}

impl InFlight {
    /// Whether a fetch of `hash` is in flight.
    pub(super) fn contains(&self, hash: &Hash) -> bool {
        lock(&self.map).contains_key(hash)
    }

    /// How many chunks are in flight.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Claims the chunks of `chunks` that no fetch has claimed (the caller fetches them), and
    /// returns the others with one [`Waiter`] per fetch they wait for.
    pub(super) fn claim(&self, chunks: &[ChunkRef]) -> (Claim, Vec<ChunkRef>, Vec<Waiter>) {
        let (tx, rx) = watch::channel(None);
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        let mut waiters: Vec<Waiter> = Vec::new();
        {
            let mut map = lock(&self.map);
            for c in chunks {
                match map.get(&c.0) {
                    Some(other) if other.same_channel(&rx) => {} // listed twice
                    Some(other) => {
                        if !theirs.contains(c) {
                            theirs.push(*c);
                        }
                        if !waiters.iter().any(|w| w.0.same_channel(other)) {
                            waiters.push(Waiter(other.clone()));
                        }
                    }
                    None => {
                        map.insert(c.0, rx.clone());
                        mine.push(*c);
                    }
                }
            }
        }
        let claim = Claim {
            map: self.map.clone(),
            chunks: mine,
            tx,
            rx,
        };
        (claim, theirs, waiters)
    }
}

/// Chunks claimed by one fetch (see [`InFlight::claim`]); released when dropped, which wakes the
/// fetch's waiters.
#[derive(Debug)]
pub(super) struct Claim {
    map: Arc<Mutex<HashMap<Hash, watch::Receiver<Outcome>>>>,
    chunks: Vec<ChunkRef>,
    tx: watch::Sender<Outcome>,
    /// The receiving end listed in the table (to tell our entries from others').
    rx: watch::Receiver<Outcome>,
}

impl Claim {
    /// The chunks claimed.
    pub(super) fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// Tells the waiters how the fetch ended, and releases the chunks.
    fn finish(self, outcome: std::result::Result<(), Arc<Error>>) {
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        for c in &self.chunks {
            if map.get(&c.0).is_some_and(|rx| self.rx.same_channel(rx)) {
                map.remove(&c.0);
            }
        }
        // The sender goes with the claim: a waiter of a fetch that never finished wakes up
        // (cancelled) and fetches the chunks itself.
    }
}

/// Waits for one fetch claimed by someone else.
#[derive(Debug)]
pub(super) struct Waiter(watch::Receiver<Outcome>);

impl Waiter {
    /// Waits until the fetch ends: its outcome, or `None` when it was dropped before it ended.
    async fn wait(mut self) -> Option<std::result::Result<(), Arc<Error>>> {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        }
    }
}

/// The error of a fetch, for a reader that waited for it (an [`Error`] cannot be cloned): a
/// time limit or corruption as it was; anything else as an I/O error of the same class whose
/// source is the fetch's error.
fn shared_error(e: &Arc<Error>) -> Error {
    use std::io::ErrorKind as Io;
    match &**e {
        Error::Timeout { what, seconds } => Error::Timeout {
            what: what.clone(),
            seconds: *seconds,
        },
        Error::Corrupt { path, detail } => Error::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => {
            let kind = match other.kind() {
                ErrorKind::NotFound => Io::NotFound,
                ErrorKind::AlreadyExists => Io::AlreadyExists,
                ErrorKind::PermissionDenied => Io::PermissionDenied,
                ErrorKind::InvalidInput => Io::InvalidInput,
                ErrorKind::Corrupt => Io::InvalidData,
                ErrorKind::Transient => Io::TimedOut,
                _ => Io::Other,
            };
            Error::Io {
                path: PathBuf::from("file data fetched by another request"),
                source: std::io::Error::new(kind, SharedError(e.clone())),
            }
        }
    }
}

/// The error of a fetch another reader waited for (see [`shared_error`]).
#[derive(Debug)]
struct SharedError(Arc<Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Vfs {
    /// The decoded, verified bytes of `chunks`, in order: from the caches, from fetches in
    /// flight (waiting for them), else from the store. Call outside the runtime.
    pub(super) fn chunks_blocking(&self, chunks: &[ChunkRef]) -> Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = chunks.iter().map(|c| self.cached(c)).collect();
        for attempt in 0..=WAITS {
            let mut missing: Vec<ChunkRef> = Vec::new();
            for (c, o) in chunks.iter().zip(&out) {
                if o.is_none() && !missing.contains(c) {
                    missing.push(*c);
                }
            }
            if missing.is_empty() {
                break;
            }
            let wait = attempt < WAITS;
            let this = self.clone();
            let fetched = self.block("reading file data", async move {
                this.fetch_or_wait(missing, wait).await
            })?;
            for (c, o) in chunks.iter().zip(out.iter_mut()) {
                if o.is_none() {
                    // What this reader fetched, else what the fetch it waited for cached (unless
                    // already evicted: then the next attempt).
                    *o = fetched.get(&c.0).cloned().or_else(|| self.cached(c));
                }
            }
        }
        chunks
            .iter()
            .zip(out)
            .map(|(c, o)| {
                o.ok_or_else(|| Error::Task(format!("chunk {} was fetched but not returned", c.0)))
            })
            .collect()
    }

    /// A verified chunk from memory or the disk cache.
    pub(super) fn cached(&self, c: &ChunkRef) -> Option<Bytes> {
        if let Some(b) = self.inner.memory.get(&c.0) {
            return Some(b);
        }
        let loc = self.inner.disk.locate(std::slice::from_ref(c))[0]?;
        let mut b = vec![0u8; c.1 as usize];
        self.inner.disk.read_at(loc.seg, loc.off, &mut b).ok()?;
        if self.inner.dm.store.hasher().hash(&b) != c.0 {
            self.inner.disk.invalidate(&c.0);
            return None;
        }
        Some(Bytes::from(b))
    }

    /// Fetches the chunks of `chunks` that no one else is fetching and returns their bytes;
    /// waits for the fetches of the others (their chunks are then in the caches, unless evicted
    /// meanwhile), unless `!wait`: then it fetches those too.
    ///
    /// # Errors
    /// This fetch's error, or that of a fetch waited for.
    async fn fetch_or_wait(
        &self,
        chunks: Vec<ChunkRef>,
        wait: bool,
    ) -> Result<HashMap<Hash, Bytes>> {
        let (claim, theirs, mut waiters) = self.inner.inflight.claim(&chunks);
        let mut mine = claim.chunks().to_vec();
        if !wait {
            mine.extend(theirs);
            waiters.clear();
        }
        #[cfg(test)]
        if !waiters.is_empty() {
            self.inner
                .hooks
                .waits
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let own = async {
            if mine.is_empty() {
                drop(claim);
                Ok(HashMap::new())
            } else {
                self.fetch(claim, mine, true).await
            }
        };
        let others = async {
            for w in waiters {
                if let Some(Err(e)) = w.wait().await {
                    return Err(e);
                }
            }
            Ok(())
        };
        let (own, others) = futures::join!(own, others);
        let fetched = own?;
        others.map_err(|e| shared_error(&e))?;
        Ok(fetched)
    }

    /// Fetches `chunks` from the store into both caches, then ends `claim` (which should hold
    /// them, or some of them) with the outcome. Returns the chunks' bytes if `keep`.
    ///
    /// Cancel-safe: dropping the future drops the claim, which releases the chunks and wakes
    /// the fetch's waiters.
    pub(super) async fn fetch(
        &self,
        claim: Claim,
        chunks: Vec<ChunkRef>,
        keep: bool,
    ) -> Result<HashMap<Hash, Bytes>> {
        match self.fetch_from_store(chunks, keep).await {
            Ok((fetched, None)) => {
                claim.finish(Ok(()));
                Ok(fetched)
            }
            // The reader goes on with its bytes; the fetch ends (and its waiters, who take
            // the chunks from the cache, wake) once they are written.
            Ok((fetched, Some(written))) => {
                tokio::spawn(async move {
                    let _ = written.await;
                    claim.finish(Ok(()));
                });
                Ok(fetched)
            }
            Err(e) => {
                self.inner.opts.metrics.error();
                tracing::warn!(error = %e, "cannot read file data from the store");
                let e = Arc::new(e);
                claim.finish(Err(e.clone()));
                // The error itself, unless a waiter holds it too.
                Err(Arc::try_unwrap(e).unwrap_or_else(|e| shared_error(&e)))
            }
        }
    }

    /// Runs contiguous in one pack, parallel range reads, decode and verify, then both caches.
    /// With a disk cache, the runs are written to it in order by a task of their own, whose
    /// handle is returned: at most [`PENDING_WRITES_MIB`] MiB wait to be written over all
    /// fetches (then fetches wait), so memory stays bounded when the disk is slower than the
    /// store.
    #[allow(clippy::type_complexity)]
    async fn fetch_from_store(
        &self,
        chunks: Vec<ChunkRef>,
        keep: bool,
    ) -> Result<(HashMap<Hash, Bytes>, Option<tokio::task::JoinHandle<()>>)> {
        #[cfg(test)]
        self.inner.hooks.enter().await?;
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
        let mut out = HashMap::new();
        let mut writer: Option<(std::sync::mpsc::Sender<Write>, tokio::task::JoinHandle<()>)> =
            None;
        while let Some(run) = fetched.next().await {
            let (chunks, data) = run?;
            self.inner.opts.metrics.fetched(chunks.len(), data.len());
            if keep {
                let mut at = 0;
                out.extend(chunks.iter().map(|c| {
                    let b = data.slice(at..at + c.1 as usize);
                    at += b.len();
                    (c.0, b)
                }));
            }
            if !self.inner.disk.enabled() {
                self.remember(&chunks, &data);
                continue;
            }
            let cost = u32::try_from(data.len().div_ceil(1 << 20))
                .unwrap_or(u32::MAX)
                .clamp(1, PENDING_WRITES_MIB);
            let permit = self
                .inner
                .pending_writes
                .clone()
                .acquire_many_owned(cost)
                .await
                .expect("the semaphore is never closed");
            let (tx, _) = writer.get_or_insert_with(|| {
                let (tx, rx) = std::sync::mpsc::channel::<Write>();
                let this = self.clone();
                let task = tokio::task::spawn_blocking(move || {
                    for (chunks, data, _permit) in rx {
                        if !this.inner.disk.put_run(&chunks, &data) {
                            this.remember(&chunks, &data);
                        }
                    }
                });
                (tx, task)
            });
            // The writer ends only after this sender is dropped.
            let _ = tx.send((chunks, data, permit));
        }
        Ok((out, writer.map(|(_, task)| task)))
    }

    /// Keeps the chunks of a run (back to back in `data`) in the memory cache: when there is
    /// no disk cache, or writing them to it failed. Copies: a slice would keep the whole run
    /// alive.
    fn remember(&self, chunks: &[ChunkRef], data: &[u8]) {
        let mut at = 0;
        for c in chunks {
            let b = Bytes::copy_from_slice(&data[at..at + c.1 as usize]);
            at += b.len();
            self.inner.memory.insert(c.0, b);
        }
    }
}

/// A run waiting to be written to the disk cache, with its share of [`PENDING_WRITES_MIB`].
type Write = (Vec<ChunkRef>, Bytes, tokio::sync::OwnedSemaphorePermit);

/// How many MiB of fetched runs may wait to be written to the disk cache, over all fetches
/// of one mount.
pub(super) const PENDING_WRITES_MIB: u32 = 64;

/// Test hooks: hold fetches, fail them, count them.
#[cfg(test)]
#[derive(Debug)]
pub(super) struct Hooks {
    /// Fetches wait before reading the store while this is `false`.
    pub(super) open: watch::Sender<bool>,
    /// How many of the next fetches fail (once let through).
    pub(super) fail_next: std::sync::atomic::AtomicUsize,
    /// Fetches started.
    pub(super) fetches: std::sync::atomic::AtomicUsize,
    /// Reads that waited for another's fetch.
    pub(super) waits: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            open: watch::channel(true).0,
            fail_next: Default::default(),
            fetches: Default::default(),
            waits: Default::default(),
        }
    }
}

#[cfg(test)]
impl Hooks {
    async fn enter(&self) -> Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.fetches.fetch_add(1, SeqCst);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        if self
            .fail_next
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Io {
                path: "injected".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;

    use super::*;
    use crate::vfs::{VfsOptions, ROOT_INODE};
    use crate::{BundleSelector, Datamon, NoProgress, OpenOptions, UploadContext, UploadOptions};
    use datamon_types::RepoName;

    fn chunk(i: u8) -> ChunkRef {
        ChunkRef(Hash::of(&[i]), 1)
    }

    #[test]
    fn claims_wake_their_waiters_with_the_outcome_and_are_released_when_dropped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = InFlight::default();
        let (a, theirs, waiters) = t.claim(&[chunk(1), chunk(2), chunk(1)]);
        assert_eq!(a.chunks(), [chunk(1), chunk(2)]);
        assert!(theirs.is_empty() && waiters.is_empty());
        let (b, theirs, waiters) = t.claim(&[chunk(2), chunk(3)]);
        assert_eq!(b.chunks(), [chunk(3)]);
        assert_eq!(theirs, [chunk(2)]);
        assert_eq!(waiters.len(), 1);
        let (_, _, more) = t.claim(&[chunk(1), chunk(2), chunk(3)]);
        assert_eq!(more.len(), 2, "one waiter per fetch");
        // Waiters sleep until the fetch ends, and see its error.
        let mut wait = Box::pin(waiters.into_iter().next().unwrap().wait());
        assert!(futures::FutureExt::now_or_never(&mut wait).is_none());
        a.finish(Err(Arc::new(Error::InvalidInput("boom".into()))));
        let outcome = rt.block_on(wait).expect("ended");
        assert_eq!(
            shared_error(&outcome.unwrap_err()).to_string(),
            "file data fetched by another request: boom"
        );
        assert!(!t.contains(&chunk(1).0) && !t.contains(&chunk(2).0));
        assert_eq!(t.len(), 1);
        // A claim dropped without an outcome (a cancelled fetch) is released too, and wakes
        // its waiters.
        let (_, _, waiters) = t.claim(&[chunk(3)]);
        drop(b);
        assert_eq!(t.len(), 0);
        let w = waiters.into_iter().next().unwrap();
        assert!(rt.block_on(w.wait()).is_none(), "cancelled");
    }

    /// A mount of a bundle holding one file `f` of `data`, on its own runtime.
    fn fixture(store: &str, data: &[u8], opts: VfsOptions) -> (tokio::runtime::Runtime, Vfs, u64) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), data).unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let vfs = rt.block_on(async {
            let dm = Datamon::open(&format!("memory://{store}"), OpenOptions::default())
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
            dm.vfs(&repo, &id, opts, rt.handle().clone()).await.unwrap()
        });
        let ino = vfs.lookup_blocking(ROOT_INODE, "f").unwrap().unwrap().ino;
        (rt, vfs, ino)
    }

    fn pseudo_random(n: u32) -> Vec<u8> {
        (0..n)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn read_all(vfs: &Vfs, ino: u64) -> Result<Bytes> {
        let size = vfs.getattr(ino).unwrap().size;
        let fh = vfs.open_blocking(ino).unwrap();
        let r = vfs.read_blocking(fh, 0, size as u32);
        vfs.release(fh);
        r
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out waiting until {what}");
    }

    /// Waits until `n` reads have waited for another's fetch.
    fn wait_for_waiter(vfs: &Vfs, n: usize) {
        wait_until("a read waits for another's fetch", || {
            vfs.inner.hooks.waits.load(SeqCst) >= n
        });
    }

    /// No disk cache, no read-ahead; a memory cache of `memory` bytes.
    fn no_disk(memory: u64) -> VfsOptions {
        VfsOptions {
            cache_dir: None,
            memory_cache: memory,
            readahead: 0,
            ..VfsOptions::default()
        }
    }

    /// Starts reading all of `ino` in another thread.
    fn spawn_read(vfs: &Vfs, ino: u64) -> std::thread::JoinHandle<Result<Bytes>> {
        let vfs = vfs.clone();
        std::thread::spawn(move || read_all(&vfs, ino))
    }

    #[test]
    fn metrics_count_reads_hits_misses_fetches_and_errors() {
        let data = pseudo_random(2_000_000);
        let cache = tempfile::tempdir().unwrap();
        let opts = VfsOptions {
            cache_dir: Some(cache.path().to_owned()),
            readahead: 0,
            ..VfsOptions::default()
        };
        let metrics = opts.metrics.clone();
        let (_rt, vfs, ino) = fixture("vfs-metrics", &data, opts);
        assert!(Arc::ptr_eq(vfs.metrics(), &metrics));
        assert!(read_all(&vfs, ino).unwrap() == data[..]);
        let cold = metrics.snapshot();
        assert_eq!(cold.reads, 1);
        assert_eq!(cold.read_bytes, data.len() as u64);
        assert!(cold.misses > 1, "a cold read misses every chunk: {cold:?}");
        assert_eq!(cold.memory_hits + cold.disk_hits, 0, "{cold:?}");
        assert_eq!(cold.fetched_chunks, cold.misses, "each chunk fetched once");
        assert_eq!(cold.fetched_bytes, data.len() as u64);
        assert!(cold.store_reads >= 1 && cold.store_reads <= cold.fetched_chunks);
        assert_eq!(cold.fetch_errors, 0);
        // Again: nothing is fetched again. Chunks still being written to the disk cache (the
        // writes run beside the reader) count as misses, and the read waits for their writes.
        assert!(read_all(&vfs, ino).unwrap() == data[..]);
        let warm = metrics.snapshot();
        assert_eq!(warm.reads, 2);
        assert_eq!(warm.read_bytes, 2 * data.len() as u64);
        let waited = warm.misses - cold.misses;
        assert_eq!(
            warm.memory_hits + warm.disk_hits + waited,
            cold.misses,
            "{warm:?}"
        );
        assert_eq!(
            warm.fetched_bytes, cold.fetched_bytes,
            "nothing fetched again"
        );
        // Once the writes are done, a read hits the cache for every chunk.
        let mut last = warm;
        let all_hits = (0..100).any(|_| {
            assert!(read_all(&vfs, ino).unwrap() == data[..]);
            let now = metrics.snapshot();
            let hits = now.memory_hits + now.disk_hits - last.memory_hits - last.disk_hits;
            let clean = now.misses == last.misses && hits == cold.misses;
            last = now;
            if !clean {
                std::thread::sleep(Duration::from_millis(20));
            }
            clean
        });
        assert!(all_hits, "the cache never held every chunk: {last:?}");
        assert_eq!(last.fetched_bytes, cold.fetched_bytes);
        // A failing store access is counted; the error reaches the reader.
        let (_rt2, vfs2, ino2) = fixture("vfs-metrics-err", &data, no_disk(64 << 20));
        vfs2.inner.hooks.fail_next.store(1, SeqCst);
        assert!(read_all(&vfs2, ino2).is_err());
        let m2 = vfs2.metrics().snapshot();
        assert_eq!(m2.fetch_errors, 1, "{m2:?}");
        assert_eq!(m2.reads, 0, "a failed read is not an answered one");
        assert!(read_all(&vfs2, ino2).unwrap() == data[..]);
        assert_eq!(vfs2.metrics().snapshot().fetch_errors, 1);
    }

    #[test]
    fn read_into_fills_any_range_like_read_blocking() {
        let data = pseudo_random(3_000_000);
        let cache = tempfile::tempdir().unwrap();
        for (i, opts) in [
            VfsOptions {
                cache_dir: Some(cache.path().to_owned()),
                ..VfsOptions::default()
            },
            no_disk(64 << 20),
            no_disk(1),
        ]
        .into_iter()
        .enumerate()
        {
            let (_rt, vfs, ino) = fixture(&format!("vfs-read-into-{i}"), &data, opts);
            let fh = vfs.open_blocking(ino).unwrap();
            // Whole file, cold; then ranges inside one chunk, across chunks, at chunk starts
            // (the file's first chunk), to the end and past it.
            let mut all = vec![0u8; data.len() + 10];
            assert_eq!(vfs.read_into_blocking(fh, 0, &mut all).unwrap(), data.len());
            assert!(all[..data.len()] == data[..]);
            let mut x = 12345u64;
            let mut cases = vec![(0u64, 1usize), (0, 700_000), (1, 2_999_999), (2_999_999, 5)];
            for _ in 0..40 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let off = (x >> 33) % data.len() as u64;
                let len = ((x >> 13) % 2_000_000) as usize + 1;
                cases.push((off, len));
            }
            for (off, len) in cases {
                let mut buf = vec![0xaau8; len];
                let n = vfs.read_into_blocking(fh, off, &mut buf).unwrap();
                let end = (off as usize + len).min(data.len());
                assert_eq!(n, end - off as usize, "at {off}+{len}");
                assert!(buf[..n] == data[off as usize..end], "at {off}+{len}");
                let b = vfs.read_blocking(fh, off, len as u32).unwrap();
                assert!(b[..] == buf[..n]);
            }
            let mut buf = [0u8; 4];
            assert_eq!(vfs.read_into_blocking(fh, 3_000_000, &mut buf).unwrap(), 0);
            assert_eq!(vfs.read_into_blocking(fh, 9_000_000, &mut buf).unwrap(), 0);
            assert_eq!(vfs.read_into_blocking(fh, 0, &mut []).unwrap(), 0);
            vfs.release(fh);
            assert!(vfs.read_into_blocking(fh, 0, &mut buf).is_err(), "closed");
        }
    }

    #[test]
    fn chunks_evicted_between_fetch_and_read_are_not_corruption() {
        // A memory cache smaller than one chunk and no disk cache: every chunk fetched is
        // evicted by the next one before the read takes it.
        let data = pseudo_random(1_000_000);
        let (_rt, vfs, ino) = fixture("vfs-evicted", &data, no_disk(1));
        match read_all(&vfs, ino) {
            Ok(got) => assert!(got == data[..]),
            Err(e) => panic!("evicted chunks are fetched again, not corrupt: {e}"),
        }
        assert!(read_all(&vfs, ino).unwrap() == data[..]);
    }

    #[test]
    fn waiters_see_the_error_of_the_fetch_they_waited_for() {
        let data = pseudo_random(300_000);
        let (_rt, vfs, ino) = fixture("vfs-wait-error", &data, no_disk(64 << 20));
        let hooks = &vfs.inner.hooks;
        hooks.open.send_replace(false);
        let a = spawn_read(&vfs, ino);
        wait_until("the first read is fetching", || {
            hooks.fetches.load(SeqCst) == 1
        });
        let b = spawn_read(&vfs, ino);
        wait_for_waiter(&vfs, 1);
        hooks.fail_next.store(1, SeqCst);
        hooks.open.send_replace(true);
        let a = a.join().unwrap();
        let b = b.join().unwrap();
        assert!(a.is_err_and(|e| e.to_string().contains("injected failure")));
        let Err(b) = b else {
            panic!("the waiter sees the failure of the fetch it waited for");
        };
        assert!(b.to_string().contains("injected failure"), "{b}");
        assert_eq!(
            hooks.fetches.load(SeqCst),
            1,
            "the waiter did not fetch itself"
        );
        assert_eq!(vfs.inner.inflight.len(), 0);
        // The store is fine again: the next read fetches.
        assert!(read_all(&vfs, ino).unwrap() == data[..]);
    }

    #[test]
    fn a_cancelled_fetch_is_forgotten_and_its_waiters_fetch_again() {
        let data = pseudo_random(300_000);
        let opts = VfsOptions {
            timeout: Duration::from_secs(2),
            ..no_disk(64 << 20)
        };
        let (_rt, vfs, ino) = fixture("vfs-wait-cancel", &data, opts);
        let hooks = &vfs.inner.hooks;
        hooks.open.send_replace(false);
        let a = spawn_read(&vfs, ino);
        wait_until("the first read is fetching", || {
            hooks.fetches.load(SeqCst) == 1
        });
        std::thread::sleep(Duration::from_millis(1000));
        let b = spawn_read(&vfs, ino);
        wait_for_waiter(&vfs, 1);
        // The first read times out: its fetch is dropped, the waiter wakes up and fetches.
        let a = a.join().unwrap();
        assert!(matches!(a, Err(Error::Timeout { .. })), "{:?}", a.err());
        hooks.open.send_replace(true);
        let b = b.join().unwrap();
        assert!(
            b.is_ok_and(|b| b == data[..]),
            "the waiter fetched the chunks itself"
        );
        assert_eq!(hooks.fetches.load(SeqCst), 2);
        assert_eq!(vfs.inner.inflight.len(), 0, "nothing is left in flight");
    }

    #[test]
    fn waiters_of_a_fetch_whose_chunks_were_evicted_fetch_again() {
        let data = pseudo_random(1_000_000);
        let (_rt, vfs, ino) = fixture("vfs-wait-evicted", &data, no_disk(1));
        let hooks = &vfs.inner.hooks;
        hooks.open.send_replace(false);
        let a = spawn_read(&vfs, ino);
        wait_until("the first read is fetching", || {
            hooks.fetches.load(SeqCst) == 1
        });
        let b = spawn_read(&vfs, ino);
        wait_for_waiter(&vfs, 1);
        hooks.open.send_replace(true);
        assert!(a.join().unwrap().unwrap() == data[..]);
        assert!(b.join().unwrap().unwrap() == data[..]);
        assert_eq!(
            hooks.fetches.load(SeqCst),
            2,
            "the waiter fetched what was evicted"
        );
    }
}
