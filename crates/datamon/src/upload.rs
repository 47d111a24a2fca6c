//! Upload: a local folder becomes a bundle.
//!
//! Pipeline (see ARCHITECTURE.md): scan -> per file, the stat cache or read + chunk + hash ->
//! dedup against the index -> compress -> per-worker packs -> concurrent pack uploads (bounded
//! channel, so readers wait when the store is slower) -> tree nodes bottom-up, packed too ->
//! the commit (`Datamon::commit_bundle`: staged record -> branch record -> bundle record) -> the
//! label record. A bundle becomes visible only when its branch record is written, after
//! everything it references; a killed upload leaves only packs (and perhaps a staged record),
//! which the next upload recovers and reuses. Cancellation is seen between chunks of every reader
//! and at every step before the commit; once the commit starts it finishes.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::Utc;
use datamon_chunk::{Chunker, ChunkerParams};
use datamon_store::{BlobKind, FinishedPack, Index, PackWriter, Store};
use datamon_types::{
    BranchName, Bundle, BundleId, BundleStats, ChunkRef, ContentHasher, Hash, LabelName, Node,
    RepoName, Tree, TreeEntry, DEFAULT_BRANCH,
};
use tokio::sync::mpsc;

use crate::exec::cancellable;
use crate::scan::{scan, FileJob, Scan, ScanDir, ScanKind};
use crate::statcache::{cache_path, StatCache};
use crate::{CancellationToken, Datamon, Error, Progress, Result, Unit};

/// What to upload, where.
#[derive(Debug, Clone)]
pub struct UploadContext {
    /// The repo (must exist).
    pub repo: RepoName,
    /// The folder whose content becomes the bundle.
    pub path: PathBuf,
    /// The bundle's message.
    pub message: String,
}

/// How to upload.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Label to point at the new bundle.
    pub label: Option<LabelName>,
    /// Branch to advance (default `main`); its head becomes the bundle's parent.
    pub branch: Option<BranchName>,
    /// Upload only these paths (relative to the folder; files or directories).
    pub files: Option<Vec<String>>,
    /// Leave out unreadable files instead of failing.
    pub skip_on_error: bool,
    /// User metadata recorded in the bundle.
    pub meta: BTreeMap<String, String>,
    /// Stops the upload when cancelled (seen between chunks, so within a chunk of every
    /// reader); nothing is committed, and what was stored is reused by the next attempt.
    pub cancel: CancellationToken,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadReport {
    /// The committed bundle.
    pub bundle: Bundle,
    /// Paths left out under `skip_on_error`, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Files whose chunks came from the stat cache without being read.
    pub unchanged_files: u64,
    /// Packs from an interrupted earlier upload that this upload recovered and reused.
    pub recovered_packs: usize,
}

/// Buffers of packs already stored, reused for the next packs.
type BufferPool = std::sync::Arc<Mutex<Vec<Vec<u8>>>>;

/// The largest pack an upload builds in memory (the store's `pack_size` may ask for less).
const MAX_PACK_IN_MEMORY: usize = 4 << 20;

/// Decides, per file, whether trying zstd on the next chunk is worth it. After 4 chunks in a
/// row that did not compress, only every 32nd chunk is tried, so a file of random or already
/// compressed data (images, archives, model weights) costs almost no compression work; a chunk
/// that compresses makes it try every chunk again.
#[derive(Debug, Default)]
struct CompressProbe {
    misses: u32,
    skipped: u32,
}

impl CompressProbe {
    fn should_try(&mut self) -> bool {
        if self.misses < 4 || self.skipped >= 31 {
            self.skipped = 0;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    fn record(&mut self, compressed: bool) {
        self.misses = if compressed {
            0
        } else {
            self.misses.saturating_add(1)
        };
    }
}

/// State shared by the reader threads of one upload.
struct Shared<'a> {
    /// The store: its pack writers seal, and its hasher names content, in an encrypted store.
    store: &'a Store,
    hasher: ContentHasher,
    index: &'a Index,
    /// Blobs added by this upload (so two workers never store the same chunk twice).
    added: Mutex<HashSet<Hash>>,
    tx: mpsc::Sender<FinishedPack>,
    /// Buffers of stored packs, for reuse.
    buffers: BufferPool,
    params: ChunkerParams,
    pack_size: usize,
    progress: &'a dyn Progress,
    cancel: &'a CancellationToken,
    failed: AtomicBool,
    new_chunks: AtomicU64,
    new_bytes: AtomicU64,
    stored_bytes: AtomicU64,
}

impl Shared<'_> {
    /// Stores `raw` unless the store or this upload has it; sends the pack when it is full.
    /// Stores `raw` unless the store or this upload has it; sends the pack when it is full.
    /// `probe` (for file data) decides whether compressing is worth trying.
    fn store_blob(
        &self,
        pack: &mut PackWriter,
        hash: Hash,
        kind: BlobKind,
        raw: &[u8],
        probe: Option<&mut CompressProbe>,
    ) -> Result<()> {
        if self.index.contains(&hash) || !self.added.lock().expect("not poisoned").insert(hash) {
            return Ok(());
        }
        let stored = match probe {
            Some(p) => {
                let tried = p.should_try();
                let (stored, compressed) = pack.add_blob(hash, kind, raw, tried);
                if tried {
                    p.record(compressed);
                }
                stored
            }
            None => pack.add_blob(hash, kind, raw, true).0,
        };
        if kind == BlobKind::Data {
            self.new_chunks.fetch_add(1, Ordering::Relaxed);
            self.new_bytes
                .fetch_add(raw.len() as u64, Ordering::Relaxed);
        }
        self.stored_bytes
            .fetch_add(stored as u64, Ordering::Relaxed);
        if pack.len() >= self.pack_size {
            self.send(std::mem::replace(pack, self.new_pack()))?;
        }
        Ok(())
    }

    /// An empty pack, on a recycled buffer when one is free.
    fn new_pack(&self) -> PackWriter {
        match self.buffers.lock().expect("not poisoned").pop() {
            Some(buf) => self.store.pack_writer_with_buffer(buf),
            None => self.store.pack_writer(self.pack_size),
        }
    }

    fn send(&self, pack: PackWriter) -> Result<()> {
        if pack.is_empty() {
            return Ok(());
        }
        self.tx
            .blocking_send(pack.finish())
            .map_err(|_| Error::Task("the pack uploader stopped".into()))
    }

    /// Reads, chunks and stores one file; returns its chunk list.
    fn file(
        &self,
        job: &FileJob,
        chunker: &mut Chunker,
        pack: &mut PackWriter,
    ) -> Result<Vec<ChunkRef>> {
        let f = std::fs::File::open(&job.path).map_err(Error::io(&job.path))?;
        let mut chunks = Vec::with_capacity((job.size / u64::from(self.params.avg)) as usize + 1);
        let mut probe = CompressProbe::default();
        let read = chunker.chunk_reader(f, |data: &[u8]| -> Result<(), ReadError> {
            // Cancellation first: a reader stopped because another one saw the cancellation
            // reports the cancellation, not a failure.
            if self.cancel.is_cancelled() {
                return Err(ReadError::Other(Error::cancelled("the upload")));
            }
            if self.failed.load(Ordering::Relaxed) {
                return Err(ReadError::Other(Error::Task("upload aborted".into())));
            }
            let hash = self.hasher.hash(data);
            chunks.push(ChunkRef(hash, data.len() as u32));
            self.store_blob(pack, hash, BlobKind::Data, data, Some(&mut probe))
                .map_err(ReadError::Other)?;
            self.progress.advance(data.len() as u64);
            Ok(())
        });
        let read = read.map_err(|e| match e {
            ReadError::Io(source) => Error::Io {
                path: job.path.clone(),
                source,
            },
            ReadError::Other(e) => e,
        })?;
        if read != job.size {
            tracing::warn!(path = %job.rel, "file changed size while it was read; stored what was read");
        }
        Ok(chunks)
    }
}

impl Datamon {
    /// Uploads a folder as a new bundle and moves the branch (and label) to it.
    ///
    /// # Panics
    /// When called outside a multi-threaded tokio runtime (the reader threads run under
    /// `block_in_place`).
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::UnreadableSource`], [`Error::NotADirectory`] or [`Error::Unreadable`] for an unreadable folder or file (unless
    /// `skip_on_error`), a store error. On error no bundle is listed; what was stored is reused
    /// by the next attempt.
    pub async fn upload(
        &self,
        ctx: UploadContext,
        opts: UploadOptions,
        progress: &dyn Progress,
    ) -> Result<UploadReport> {
        self.get_repo(&ctx.repo).await?;
        let branch = match &opts.branch {
            Some(b) => b.clone(),
            None => DEFAULT_BRANCH
                .parse()
                .expect("the default branch name is valid"),
        };
        let stored = self.store_folder(&ctx.path, &opts, progress).await?;
        let StoredFolder {
            root,
            gc_seen,
            stats,
            skipped,
            unchanged_files,
            recovered_packs,
            cache,
        } = stored;

        if opts.cancel.is_cancelled() {
            return Err(Error::cancelled("the upload"));
        }
        // Commit: the bundle record and the branch (see `commit_bundle`), then the label.
        let bundle = Bundle {
            id: BundleId::generate(),
            repo: ctx.repo.clone(),
            parents: Vec::new(),
            branch: Some(branch.clone()),
            message: ctx.message.clone(),
            author: self.author.clone(),
            created_at: Utc::now(),
            root,
            stats,
            meta: opts.meta.clone(),
        };
        // Packs, index objects and trees are durable before the record that points to them
        // (a local store's writes sit in the page cache until then).
        self.store.sync().await?;
        let bundle = self.commit_bundle(bundle, &branch, Some(&gc_seen)).await?;
        if let Some(label) = &opts.label {
            self.set_label(&ctx.repo, label, &bundle.id, None).await?;
        }
        self.store.sync().await?;
        save_stat_cache(cache).await;
        Ok(UploadReport {
            bundle,
            skipped,
            unchanged_files,
            recovered_packs,
        })
    }

    /// Stores a folder's chunks and tree nodes (everything a bundle of it needs but its
    /// records) and returns its root; the first half of [`Datamon::upload`], shared with the
    /// splits of a diamond. Only `files`, `skip_on_error` and `cancel` of `opts` are used.
    pub(crate) async fn store_folder(
        &self,
        path: &Path,
        opts: &UploadOptions,
        progress: &dyn Progress,
    ) -> Result<StoredFolder> {
        let started_ns = Utc::now().timestamp_nanos_opt().unwrap_or_default();

        let root = path.to_path_buf();
        let (only, skip) = (opts.files.clone(), opts.skip_on_error);
        let scanned: Scan = cancellable(&opts.cancel, "the upload", async {
            tokio::task::spawn_blocking(move || scan(&root, only.as_deref(), skip)).await?
        })
        .await?;
        if opts.cancel.is_cancelled() {
            return Err(Error::cancelled("the upload"));
        }

        // The gc plans carried out before the index is loaded: the commit checks every other
        // one (see `docs/format/gc.md`, "Commits keep what they reuse").
        let gc_seen = self.gc_done_plans().await?;
        let mut index = cancellable(&opts.cancel, "the upload", async {
            Ok(self.store.load_index().await?)
        })
        .await?;
        let recovered_packs = cancellable(&opts.cancel, "the upload", async {
            Ok(self.store.recover_packs(&mut index).await?)
        })
        .await?;
        if recovered_packs > 0 {
            tracing::info!(
                recovered_packs,
                "reusing packs left by an interrupted upload"
            );
        }

        // Placeholders of a work tree: their chunks come from the base bundle, unread.
        let known = cancellable(
            &opts.cancel,
            "the upload",
            self.resolve_placeholders(&index, &scanned.files),
        )
        .await?;

        let cache_file = self
            .cache_dir
            .as_ref()
            .map(|d| cache_path(d, &self.store.config().id, path));
        let cache = match &cache_file {
            Some(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || StatCache::load(&p)).await?
            }
            None => StatCache::default(),
        };

        let (tx, rx) = mpsc::channel::<FinishedPack>(1);
        let buffers = BufferPool::default();
        let uploader = tokio::spawn(upload_packs(
            self.store.clone(),
            rx,
            self.concurrency.min(2),
            buffers.clone(),
        ));

        let config = self.store.config().clone();
        // Two reader threads per core: while one waits for the disk, the other hashes.
        let workers = (2 * std::thread::available_parallelism().map_or(2, usize::from)).clamp(4, 8);
        let progress_total: u64 = scanned.files.iter().map(|f| f.size).sum();
        progress.begin("upload", progress_total, Unit::Bytes);

        // The CPU-bound part runs on dedicated threads; packs cross to the async uploader
        // through the bounded channel. block_in_place lets those threads borrow `progress`,
        // the index and the scan, while the runtime keeps running the uploader.
        let shared = Shared {
            store: &self.store,
            hasher: self.store.hasher(),
            index: &index,
            added: Mutex::new(HashSet::new()),
            tx,
            buffers: buffers.clone(),
            params: ChunkerParams {
                min: config.chunk_min,
                avg: config.chunk_avg,
                max: config.chunk_max,
            },
            // Each reader fills its own pack, and a full pack waits for the uploader: with several
            // readers, smaller packs keep peak memory well under 256 MiB.
            pack_size: (config.pack_size as usize).min(MAX_PACK_IN_MEMORY),
            progress,
            cancel: &opts.cancel,
            failed: AtomicBool::new(false),
            new_chunks: AtomicU64::new(0),
            new_bytes: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
        };
        let stored = tokio::task::block_in_place(|| {
            let read = read_files(
                &shared,
                &scanned,
                &known,
                &cache,
                workers,
                opts.skip_on_error,
            )?;
            let mut pack = shared.new_pack();
            let mut stats = BundleStats {
                dirs: scanned.dirs,
                symlinks: scanned.symlinks,
                ..Default::default()
            };
            let root = build_tree(&shared, &mut pack, &scanned.root, &read.chunks, &mut stats)?;
            shared.send(pack)?;
            stats.new_chunks = shared.new_chunks.load(Ordering::Relaxed);
            stats.new_bytes = shared.new_bytes.load(Ordering::Relaxed);
            stats.stored_bytes = shared.stored_bytes.load(Ordering::Relaxed);
            Ok::<_, Error>((root, stats, read))
        });
        // Closing the channel lets the uploader finish.
        drop(shared);
        // A store that stalls on the last packs does not hold up a cancellation.
        let mut uploader = uploader;
        let uploaded = tokio::select! {
            r = &mut uploader => r?,
            () = opts.cancel.cancelled() => {
                uploader.abort();
                progress.end();
                return Err(Error::cancelled("the upload"));
            }
        };
        progress.end();
        if opts.cancel.is_cancelled() {
            return Err(Error::cancelled("the upload"));
        }
        let (root, stats, read) = match (stored, uploaded) {
            (Ok(v), Ok(())) => v,
            // A failed pack upload explains a reader's "uploader stopped": report the cause.
            (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        };
        let ReadOutcome {
            chunks,
            mut skipped,
            unchanged: unchanged_files,
        } = read;
        skipped.extend(
            scanned
                .skipped
                .iter()
                .map(|s| (s.rel.clone(), s.reason.clone())),
        );

        if opts.cancel.is_cancelled() {
            return Err(Error::cancelled("the upload"));
        }
        Ok(StoredFolder {
            root,
            gc_seen,
            stats,
            skipped,
            unchanged_files,
            recovered_packs,
            cache: cache_file.map(|path| StatCacheUpdate {
                path,
                started_ns,
                files: scanned.files,
                chunks,
            }),
        })
    }
}

/// A folder whose data and trees are stored (see [`Datamon::store_folder`]).
pub(crate) struct StoredFolder {
    /// Its root tree node.
    pub root: Hash,
    /// The gc plans already carried out when its upload loaded the index.
    pub gc_seen: std::collections::HashSet<u64>,
    /// Its statistics.
    pub stats: BundleStats,
    /// Paths left out under `skip_on_error`, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Files whose chunks came from the stat cache without being read.
    pub unchanged_files: u64,
    /// Packs of an interrupted earlier upload that were recovered and reused.
    pub recovered_packs: usize,
    /// What to write to the stat cache once the data is committed.
    pub cache: Option<StatCacheUpdate>,
}

/// The stat cache entries of a stored folder, written after its commit.
pub(crate) struct StatCacheUpdate {
    path: PathBuf,
    started_ns: i64,
    files: Vec<FileJob>,
    chunks: FileChunks,
}

/// Writes the stat cache of a committed folder; a failure only costs the next upload a read.
pub(crate) async fn save_stat_cache(update: Option<StatCacheUpdate>) {
    let Some(u) = update else { return };
    let r = tokio::task::spawn_blocking(move || {
        StatCache::save(&u.path, u.started_ns, &u.files, &u.chunks)
    })
    .await;
    match r {
        Ok(Err(e)) => tracing::warn!("could not write the stat cache: {e}"),
        Err(e) => tracing::warn!("could not write the stat cache: {e}"),
        Ok(Ok(())) => {}
    }
}

type FileChunks = Vec<Option<Vec<ChunkRef>>>;

/// A failure while chunking one file: reading it (the path is added by the caller) or storing.
enum ReadError {
    Io(std::io::Error),
    Other(Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// What the reader threads produced.
struct ReadOutcome {
    /// Each file's chunks, `None` when it was skipped.
    chunks: FileChunks,
    /// Files left out under `skip_on_error`, with the reason.
    skipped: Vec<(String, String)>,
    /// Files taken from the stat cache without being read.
    unchanged: u64,
}

/// One reader thread's result for one file: its index, its chunks or why it was skipped.
type FileOutcome = (usize, std::result::Result<Vec<ChunkRef>, String>);

/// Reads every file on `workers` threads, except those whose chunks are `known` (placeholders)
/// or in the stat cache.
fn read_files(
    shared: &Shared<'_>,
    scanned: &Scan,
    known: &[Option<Vec<ChunkRef>>],
    cache: &StatCache,
    workers: usize,
    skip_on_error: bool,
) -> Result<ReadOutcome> {
    let next = AtomicUsize::new(0);
    let unchanged = AtomicU64::new(0);
    let worker = || -> Result<Vec<FileOutcome>> {
        let mut chunker = Chunker::new(shared.params);
        let mut pack = shared.new_pack();
        let mut out = Vec::new();
        loop {
            let idx = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = scanned.files.get(idx) else {
                break;
            };
            if shared.failed.load(Ordering::Relaxed) {
                break;
            }
            if shared.cancel.is_cancelled() {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(Error::cancelled("the upload"));
            }
            if let Some(chunks) = &known[idx] {
                // A placeholder is never read: its bytes on disk are not its content.
                if let Some(c) = chunks.iter().find(|c| !shared.index.contains(&c.0)) {
                    shared.failed.store(true, Ordering::Relaxed);
                    return Err(Error::Corrupt {
                        path: job.rel.clone(),
                        detail: format!("chunk {} of its base entry is not in the store", c.0),
                    });
                }
                shared.progress.advance(job.size);
                unchanged.fetch_add(1, Ordering::Relaxed);
                out.push((idx, Ok(chunks.clone())));
                continue;
            }
            if let Some(chunks) = cache
                .lookup(job)
                .filter(|cs| cs.iter().all(|c| shared.index.contains(&c.0)))
            {
                shared.progress.advance(job.size);
                unchanged.fetch_add(1, Ordering::Relaxed);
                out.push((idx, Ok(chunks.to_vec())));
                continue;
            }
            match shared.file(job, &mut chunker, &mut pack) {
                Ok(chunks) => out.push((idx, Ok(chunks))),
                Err(e @ Error::Io { .. }) if skip_on_error => {
                    tracing::debug!(path = %job.rel, "skipped: {e}");
                    out.push((idx, Err(e.to_string())));
                }
                Err(e) => {
                    shared.failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        shared.send(pack)?;
        Ok(out)
    };
    let results: Vec<Result<Vec<FileOutcome>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader threads do not panic"))
            .collect()
    });
    let mut outcome = ReadOutcome {
        chunks: vec![None; scanned.files.len()],
        skipped: Vec::new(),
        unchanged: 0,
    };
    for r in results {
        for (i, c) in r? {
            match c {
                Ok(c) => outcome.chunks[i] = Some(c),
                Err(why) => outcome.skipped.push((scanned.files[i].rel.clone(), why)),
            }
        }
    }
    outcome.unchanged = unchanged.into_inner();
    Ok(outcome)
}

/// Builds and stores the tree nodes bottom-up; returns the hash of `dir`'s node.
fn build_tree(
    shared: &Shared<'_>,
    pack: &mut PackWriter,
    dir: &ScanDir,
    chunks: &FileChunks,
    stats: &mut BundleStats,
) -> Result<Hash> {
    let mut tree = Tree {
        entries: Vec::with_capacity(dir.entries.len()),
    };
    for e in &dir.entries {
        let node = match &e.kind {
            ScanKind::File(i) => {
                let Some(cs) = &chunks[*i] else { continue };
                let size: u64 = cs.iter().map(|c| u64::from(c.1)).sum();
                stats.files += 1;
                stats.bytes += size;
                Node::File {
                    size,
                    hash: Node::file_hash(cs),
                    chunks: cs.clone(),
                }
            }
            ScanKind::Dir(sub) => Node::Dir {
                tree: build_tree(shared, pack, sub, chunks, stats)?,
            },
            ScanKind::Symlink(t) => Node::Symlink { target: t.clone() },
        };
        tree.entries.push(TreeEntry {
            name: e.name.clone(),
            mode: e.mode,
            mtime_ns: e.mtime_ns,
            node,
        });
    }
    let bytes = tree.to_bytes();
    let hash = shared.hasher.hash(&bytes);
    shared.store_blob(pack, hash, BlobKind::Tree, &bytes, None)?;
    Ok(hash)
}

/// Stores packs as they arrive, `concurrency` at a time. Dropping the receiver on error makes
/// the readers stop.
async fn upload_packs(
    store: Store,
    mut rx: mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    buffers: BufferPool,
) -> Result<()> {
    let mut running = tokio::task::JoinSet::new();
    let mut result = Ok(());
    while let Some(pack) = rx.recv().await {
        while running.len() >= concurrency.max(1) {
            if let Some(r) = running.join_next().await {
                if let Err(e) = r? {
                    result = Err(e);
                }
            }
        }
        if result.is_err() {
            break;
        }
        let store = store.clone();
        let buffers = buffers.clone();
        running.spawn(async move {
            store.put_pack(&pack).await?;
            if let Some(buf) = pack.into_buffer() {
                buffers.lock().expect("not poisoned").push(buf);
            }
            Ok::<_, Error>(())
        });
    }
    drop(rx);
    while let Some(r) = running.join_next().await {
        if let Err(e) = r? {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
