//! Downloads planned across files.
//!
//! Every chunk the files need is located in its pack; the chunks are grouped into *regions*,
//! byte ranges of one pack holding chunks back to back or separated by small gaps of bytes no
//! file needs (bounded by [`MAX_REGION`], [`MAX_REGION_RAW`] and [`MAX_GAP`]). Each region is
//! one range read, whichever files its chunks belong to: through an object store, a download of
//! many small files packed together costs about one GET per region, not one per file.
//!
//! A region is decoded, verified and written by one blocking task. Every file whose data lie
//! wholly in the region (most small files) is written there: one `openat` of a temporary name
//! beside the file, one `write`, one `futimens` (plus an `fchmod` only when the umask would
//! have cut the mode), one `renameat`, all relative to the parent directory, opened once for
//! the consecutive files of one directory. The pieces of a file spread over several regions
//! are written at their offsets into its temporary file; the region that writes the last piece
//! sets its mode and mtime and renames it. So no file is ever visible under its final name
//! before it is complete and verified, whatever kills the process.
//!
//! Regions are read in the order of the first file that needs them (files are sorted by path),
//! so files complete roughly in path order, and the bytes in flight are bounded by [`BUDGET`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use datamon_chunk::Compression;
use datamon_store::{keys, Decoded, Index, Store};
use datamon_types::{ChunkRef, Hash, TreeEntry};
use futures::StreamExt;
use rustix::fs::{Mode, OFlags, Timespec, Timestamps};

use crate::{Error, Progress, Result};

/// The most stored bytes one region (one range read) spans, gaps included.
///
/// Small enough that the buffers of the regions in flight stay small (large buffers freed on
/// other threads than the ones that allocated them make the allocator's arenas grow), large
/// enough that a download of small files makes a few thousandths of a read per file.
pub(crate) const MAX_REGION: u64 = 1 << 20;
/// The most decoded bytes one region holds.
pub(crate) const MAX_REGION_RAW: u64 = 2 << 20;
/// The most bytes no file needs that a region reads between two chunks it needs.
pub(crate) const MAX_GAP: u64 = 256 << 10;
/// The most bytes (stored and decoded) of the regions in flight.
pub(crate) const BUDGET: u64 = 32 << 20;

/// One chunk of one file, where it is stored.
#[derive(Debug, Clone, Copy)]
struct Piece {
    hash: Hash,
    /// Index into [`Plan::packs`].
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    compression: Compression,
    /// Index into [`Plan::files`].
    file: u32,
    /// Where the chunk goes in the file.
    file_off: u64,
}

/// A byte range of one pack: one range read.
#[derive(Debug)]
struct Region {
    pack: u32,
    start: u64,
    end: u64,
    /// Decoded bytes of its distinct chunks.
    raw: u64,
    /// By offset in the pack (a chunk several files share appears once per use).
    pieces: Vec<Piece>,
    /// The first file (and offset in it) that needs the region: the order of the reads.
    first: (u32, u64),
}

/// One file to write.
#[derive(Debug)]
struct FileOut {
    /// Path relative to the destination (and in the bundle).
    path: String,
    mode: u32,
    mtime_ns: i64,
    /// Index into the shared states of files spread over several regions.
    multi: Option<usize>,
}

/// What to read and write.
#[derive(Debug)]
pub(crate) struct Plan {
    packs: Vec<Hash>,
    files: Vec<FileOut>,
    regions: Vec<Region>,
    /// Files without data.
    empties: Vec<u32>,
    /// Pieces of each file spread over several regions, in the order of `multi` indices.
    multi_pieces: Vec<usize>,
}

#[cfg(test)]
impl Plan {
    /// The number of range reads the plan makes.
    pub(crate) fn reads(&self) -> usize {
        self.regions.len()
    }
}

/// Plans the reads of `files` (path relative to the destination, entry, chunks).
///
/// # Errors
/// [`Error::Corrupt`] naming the first file with a chunk the index does not know.
pub(crate) fn plan<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a TreeEntry, &'a [ChunkRef])>,
    index: &Index,
) -> Result<Plan> {
    let mut packs: Vec<Hash> = Vec::new();
    let mut pack_ids: HashMap<Hash, u32> = HashMap::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut outs: Vec<FileOut> = Vec::new();
    for (i, (path, entry, chunks)) in files.into_iter().enumerate() {
        let file = u32::try_from(i).expect("fewer than 4G files in one download");
        let mut file_off = 0u64;
        for c in chunks {
            let r = index.get(&c.0).ok_or_else(|| Error::Corrupt {
                path: path.to_owned(),
                detail: format!("chunk {} is not in the store's index", c.0),
            })?;
            let pack = *pack_ids.entry(r.pack).or_insert_with(|| {
                packs.push(r.pack);
                u32::try_from(packs.len() - 1).expect("fewer than 4G packs")
            });
            pieces.push(Piece {
                hash: c.0,
                pack,
                offset: r.offset,
                stored_len: r.stored_len,
                raw_len: c.1,
                compression: r.compression,
                file,
                file_off,
            });
            file_off += u64::from(c.1);
        }
        outs.push(FileOut {
            path: path.to_owned(),
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            multi: None,
        });
    }
    pieces.sort_unstable_by_key(|p| (p.pack, p.offset, p.file, p.file_off));
    let mut regions: Vec<Region> = Vec::new();
    for p in pieces {
        let (start, end) = (
            u64::from(p.offset),
            u64::from(p.offset) + u64::from(p.stored_len),
        );
        if let Some(r) = regions.last_mut() {
            let again = r.pieces.last().is_some_and(|l| l.offset == p.offset);
            let raw = if again { 0 } else { u64::from(p.raw_len) };
            if r.pack == p.pack
                && start <= r.end + MAX_GAP
                && end.max(r.end) - r.start <= MAX_REGION
                && r.raw + raw <= MAX_REGION_RAW
            {
                r.end = r.end.max(end);
                r.raw += raw;
                r.first = r.first.min((p.file, p.file_off));
                r.pieces.push(p);
                continue;
            }
        }
        regions.push(Region {
            pack: p.pack,
            start,
            end,
            raw: u64::from(p.raw_len),
            pieces: vec![p],
            first: (p.file, p.file_off),
        });
    }
    regions.sort_unstable_by_key(|r| r.first);
    // Which files lie in more than one region.
    let mut seen_in: Vec<(usize, u32, usize)> = vec![(usize::MAX, 0, 0); outs.len()];
    for (ri, r) in regions.iter().enumerate() {
        for p in &r.pieces {
            let s = &mut seen_in[p.file as usize];
            if s.0 != ri {
                s.0 = ri;
                s.1 += 1;
            }
            s.2 += 1;
        }
    }
    let mut empties = Vec::new();
    let mut multi_pieces = Vec::new();
    for (i, (_, regions_of, pieces_of)) in seen_in.into_iter().enumerate() {
        match regions_of {
            0 => empties.push(u32::try_from(i).expect("fewer than 4G files")),
            1 => {}
            _ => {
                outs[i].multi = Some(multi_pieces.len());
                multi_pieces.push(pieces_of);
            }
        }
    }
    Ok(Plan {
        packs,
        files: outs,
        regions,
        empties,
        multi_pieces,
    })
}

/// The temporary file of a file spread over several regions.
#[derive(Debug, Default)]
struct Slot {
    /// Its name in the file's directory, once created.
    name: Option<String>,
    /// Renamed to the final name.
    finished: bool,
    /// Removed by the cleanup of a failed download: nothing is written any more.
    aborted: bool,
}

#[derive(Debug)]
struct Multi {
    /// Pieces not written yet.
    remaining: AtomicUsize,
    slot: Mutex<Slot>,
}

/// What the blocking tasks share.
#[derive(Debug)]
struct Shared {
    /// Opens (in an encrypted store), decodes and verifies blobs.
    store: Store,
    dest: PathBuf,
    packs: Vec<Hash>,
    files: Vec<FileOut>,
    multis: Vec<Multi>,
    /// Set on the first error or when the download is dropped: no more files are started.
    abort: AtomicBool,
}

impl Shared {
    fn target(&self, file: &FileOut) -> PathBuf {
        self.dest.join(&file.path)
    }

    /// Removes the temporary files of files spread over several regions that were not
    /// finished, and stops any further writes to them.
    fn cleanup(&self) {
        for (m, multi) in self.multis.iter().enumerate() {
            let mut slot = multi.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.aborted = true;
            if slot.finished {
                continue;
            }
            if let Some(name) = slot.name.take() {
                let f = self
                    .files
                    .iter()
                    .find(|f| f.multi == Some(m))
                    .expect("every multi index belongs to a file");
                let target = self.target(f);
                let _ = std::fs::remove_file(target.with_file_name(name));
            }
        }
    }
}

/// Runs the cleanup unless disarmed (a dropped, that is cancelled, download cleans up too).
struct CleanupGuard(Option<Arc<Shared>>);
impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.abort.store(true, Ordering::SeqCst);
            s.cleanup();
        }
    }
}

/// How a region failed.
enum RegionError {
    /// A chunk does not verify (worth a read from the replica): the first file that needs it.
    Verify { file: u32, detail: String },
    /// Anything else.
    Other(Error),
}

impl From<Error> for RegionError {
    fn from(e: Error) -> Self {
        RegionError::Other(e)
    }
}

/// Reads, verifies and writes everything `plan` describes under `dest`, `concurrency` reads
/// at a time (within [`BUDGET`]). Returns the number of range reads made.
///
/// Cancel-safe in the sense that matters here: dropping the future stops further files and
/// removes the temporary files of unfinished files spread over several regions; a file in the
/// middle of a blocking write is either completed and renamed or its temporary file removed.
///
/// # Errors
/// [`Error::Corrupt`] naming the file whose data does not verify or is missing; a store or
/// local I/O error. No file is left under its final name unless complete, and no temporary file
/// is left.
pub(crate) async fn execute(
    store: &Store,
    dest: &Path,
    plan: Plan,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<u64> {
    let Plan {
        packs,
        files,
        regions,
        empties,
        multi_pieces,
    } = plan;
    let shared = Arc::new(Shared {
        store: store.clone(),
        dest: dest.to_owned(),
        packs,
        files,
        multis: multi_pieces
            .into_iter()
            .map(|n| Multi {
                remaining: AtomicUsize::new(n),
                slot: Mutex::new(Slot::default()),
            })
            .collect(),
        abort: AtomicBool::new(false),
    });
    let mut guard = CleanupGuard(Some(shared.clone()));
    {
        let sh = shared.clone();
        tokio::task::spawn_blocking(move || write_empties(&sh, &empties)).await??;
    }
    let reads = AtomicU64::new(0);
    let budget = tokio::sync::Semaphore::new(permits(BUDGET) as usize);
    let (reads_ref, budget_ref) = (&reads, &budget);
    let mut stream = futures::stream::iter(regions.into_iter().map(|region| {
        let sh = shared.clone();
        async move {
            if sh.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            let cost = permits(region.end - region.start + region.raw).min(permits(BUDGET));
            let _permit = budget_ref
                .acquire_many(cost)
                .await
                .expect("the semaphore is never closed");
            if sh.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            let key = keys::pack(&sh.packs[region.pack as usize]);
            let first = region.first.0;
            let missing = |e: datamon_store::Error| match e {
                datamon_store::Error::NotFound { key } => Error::Corrupt {
                    path: sh.files[first as usize].path.clone(),
                    detail: format!("{key} is missing from the store"),
                },
                e => e.into(),
            };
            let range = region.start..region.end;
            let bytes = match store.get_range(&key, range.clone()).await {
                // Replaced by garbage collection since the index was loaded: read the copies.
                Err(datamon_store::Error::NotFound { .. }) => {
                    let mut wanted: Vec<datamon_store::Wanted> = region
                        .pieces
                        .iter()
                        .map(|p| datamon_store::Wanted {
                            hash: p.hash,
                            offset: u64::from(p.offset),
                            stored_len: p.stored_len,
                            compression: p.compression,
                        })
                        .collect();
                    wanted.dedup_by_key(|w| w.offset);
                    let pack = &sh.packs[region.pack as usize];
                    store
                        .read_relocated(pack, range.clone(), &wanted)
                        .await
                        .map_err(missing)?
                }
                r => r.map_err(missing)?,
            };
            reads_ref.fetch_add(1, Ordering::Relaxed);
            let region = Arc::new(region);
            let (r, s) = (region.clone(), sh.clone());
            let done =
                tokio::task::spawn_blocking(move || write_region(&s, &r, &mut writable(bytes)))
                    .await?;
            let (file, detail) = match done {
                Ok(n) => {
                    progress.advance(n);
                    return Ok(());
                }
                Err(RegionError::Other(e)) => return Err(e),
                Err(RegionError::Verify { file, detail }) => (file, detail),
            };
            if let Some(replica) = store.replica() {
                tracing::warn!(pack = %key, "{detail}; reading it from the replica");
                if let Ok(bytes) = replica.get_range(&key, range).await {
                    reads_ref.fetch_add(1, Ordering::Relaxed);
                    let s = sh.clone();
                    let again = tokio::task::spawn_blocking(move || {
                        write_region(&s, &region, &mut writable(bytes))
                    })
                    .await?;
                    match again {
                        Ok(n) => {
                            progress.advance(n);
                            return Ok(());
                        }
                        Err(RegionError::Other(e)) => return Err(e),
                        Err(RegionError::Verify { .. }) => {}
                    }
                }
            }
            Err(Error::Corrupt {
                path: sh.files[file as usize].path.clone(),
                detail,
            })
        }
    }))
    .buffer_unordered(concurrency.max(1));
    // On the first error, stop starting files and let the regions in flight finish (they stop
    // at the next file), so that the cleanup below races with no writer.
    let mut first_error = None;
    while let Some(r) = stream.next().await {
        if let Err(e) = r {
            shared.abort.store(true, Ordering::SeqCst);
            first_error.get_or_insert(e);
        }
    }
    drop(stream);
    if let Some(e) = first_error {
        drop(guard);
        return Err(e);
    }
    guard.0 = None;
    Ok(reads.load(Ordering::Relaxed))
}

/// Semaphore permits for `bytes` (one per KiB).
fn permits(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The process's umask, read once without changing it (`None` when it cannot be read).
fn umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Whether a file created with `mode` needs an `fchmod` to have exactly `mode`.
fn needs_chmod(mode: u32) -> bool {
    match umask() {
        Some(u) => mode & u != 0 || mode & 0o7000 != 0,
        None => true,
    }
}

fn timestamps(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    }
}

/// A temporary name, as `super::temp_name` makes them (and `remove_stale_temps` finds them).
fn temp_leaf() -> String {
    format!(".datamon-tmp-{:016x}", rand::random::<u64>())
}

/// The directory of the files being written, opened once for consecutive files in it.
struct Dirs<'a> {
    sh: &'a Shared,
    current: Option<(String, OwnedFd)>,
}

impl<'a> Dirs<'a> {
    fn new(sh: &'a Shared) -> Self {
        Dirs { sh, current: None }
    }

    /// The parent directory of `file` (opened `O_PATH`) and the file's own name.
    fn of<'f>(&mut self, file: &'f FileOut) -> Result<(&OwnedFd, &'f str)> {
        let (parent, name) = file.path.rsplit_once('/').unwrap_or(("", &file.path));
        if self.current.as_ref().is_none_or(|(p, _)| p != parent) {
            let dir = self.sh.dest.join(parent);
            let fd = rustix::fs::open(
                &dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::Io {
                path: dir.clone(),
                source: e.into(),
            })?;
            self.current = Some((parent.to_owned(), fd));
        }
        let (_, fd) = self.current.as_ref().expect("set above");
        Ok((fd, name))
    }
}

/// Removes a temporary file unless disarmed.
struct TempAt<'a> {
    dir: &'a OwnedFd,
    name: Option<&'a str>,
}
impl Drop for TempAt<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name.take() {
            let _ = rustix::fs::unlinkat(self.dir, n, rustix::fs::AtFlags::empty());
        }
    }
}

/// Writes one whole file: a temporary file beside it, its bytes, its mtime (and its mode when
/// the umask changed it), then the rename.
fn write_whole(dirs: &mut Dirs<'_>, file: &FileOut, data: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: dirs.sh.target(file),
        source: e,
    };
    let (dir, name) = dirs.of(file)?;
    let tmp = temp_leaf();
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(file.mode & 0o777),
    )
    .map_err(|e| io(e.into()))?;
    let guard = TempAt {
        dir,
        name: Some(&tmp),
    };
    let mut f = File::from(fd);
    if !data.is_empty() {
        f.write_all(data).map_err(io)?;
    }
    finish(&f, file).map_err(io)?;
    drop(f);
    rustix::fs::renameat(dir, tmp.as_str(), dir, name).map_err(|e| io(e.into()))?;
    std::mem::forget(guard);
    Ok(())
}

/// Sets the mode (if needed) and mtime of a complete file.
fn finish(f: &File, file: &FileOut) -> std::io::Result<()> {
    if needs_chmod(file.mode) {
        rustix::fs::fchmod(f, Mode::from_raw_mode(file.mode))?;
    }
    rustix::fs::futimens(f, &timestamps(file.mtime_ns))?;
    Ok(())
}

fn write_empties(sh: &Shared, empties: &[u32]) -> Result<()> {
    let mut dirs = Dirs::new(sh);
    for &i in empties {
        if sh.abort.load(Ordering::SeqCst) {
            break;
        }
        write_whole(&mut dirs, &sh.files[i as usize], &[])?;
    }
    Ok(())
}

/// The bytes of a region read, as a buffer [`write_region`] may decrypt in place: the read's own
/// buffer when nothing else holds it (a local store's read), otherwise a copy.
fn writable(bytes: bytes::Bytes) -> bytes::BytesMut {
    bytes
        .try_into_mut()
        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]))
}

/// Decodes and verifies every chunk of `region` (read as `bytes`; an encrypted store's chunks are
/// decrypted in place), then writes the files whose data lie wholly in it and the pieces of the
/// others. Nothing is written unless every chunk verifies. Returns the bytes written.
fn write_region(sh: &Shared, region: &Region, bytes: &mut [u8]) -> Result<u64, RegionError> {
    // Chunks stored as they are are used in place; decompressed ones go to `raw`.
    let raw_cap: usize = region
        .pieces
        .iter()
        .filter(|p| p.compression != Compression::None)
        .map(|p| p.raw_len as usize)
        .sum();
    let mut raw: Vec<u8> = Vec::with_capacity(raw_cap);
    let base = bytes.len() + 1;
    // (file, offset in the file, position in `Source`, length)
    let mut placed: Vec<(u32, u64, usize, usize)> = Vec::with_capacity(region.pieces.len());
    let mut last: Option<(u32, usize)> = None;
    for p in &region.pieces {
        let at = match last {
            Some((offset, at)) if offset == p.offset => at,
            _ => {
                let from = usize::try_from(u64::from(p.offset) - region.start).expect("in memory");
                let stored = &mut bytes[from..from + p.stored_len as usize];
                let data = sh
                    .store
                    .decode_blob_in_place(stored, p.compression, p.raw_len as usize, &p.hash)
                    .map_err(|e| RegionError::Verify {
                        file: p.file,
                        detail: format!(
                            "chunk {} in pack {}: {e}",
                            p.hash, sh.packs[p.pack as usize]
                        ),
                    })?;
                let at = match data {
                    Decoded::At(range) => from + range.start,
                    Decoded::Owned(data) => {
                        let at = base + raw.len();
                        raw.extend_from_slice(&data);
                        at
                    }
                };
                last = Some((p.offset, at));
                at
            }
        };
        placed.push((p.file, p.file_off, at, p.raw_len as usize));
    }
    placed.sort_unstable_by_key(|&(f, off, _, _)| (f, off));
    let src = Source {
        bytes: &*bytes,
        raw: &raw,
        base,
    };
    let mut dirs = Dirs::new(sh);
    let mut written = 0u64;
    for group in placed.chunk_by(|a, b| a.0 == b.0) {
        if sh.abort.load(Ordering::SeqCst) {
            break;
        }
        let file = &sh.files[group[0].0 as usize];
        match file.multi {
            None => {
                let contiguous = group.windows(2).all(|w| w[0].2 + w[0].3 == w[1].2);
                let data: Cow<'_, [u8]> = if contiguous {
                    let (first, last) = (group[0], group[group.len() - 1]);
                    Cow::Borrowed(src.get(first.2, last.2 + last.3 - first.2))
                } else {
                    let mut v = Vec::with_capacity(group.iter().map(|g| g.3).sum());
                    for g in group {
                        v.extend_from_slice(src.get(g.2, g.3));
                    }
                    Cow::Owned(v)
                };
                write_whole(&mut dirs, file, &data)?;
            }
            Some(m) => write_pieces(&mut dirs, &sh.multis[m], file, group, &src)?,
        }
        written += group.iter().map(|g| g.3 as u64).sum::<u64>();
    }
    Ok(written)
}

/// The decoded bytes of a region: positions below `base` are in the bytes read (chunks stored
/// uncompressed), positions from `base` on are in `raw` (decompressed chunks). `base` is one
/// past the end of the bytes read, so no run of contiguous positions spans both.
struct Source<'a> {
    bytes: &'a [u8],
    raw: &'a [u8],
    base: usize,
}

impl Source<'_> {
    fn get(&self, at: usize, len: usize) -> &[u8] {
        if at >= self.base {
            &self.raw[at - self.base..at - self.base + len]
        } else {
            &self.bytes[at..at + len]
        }
    }
}

/// Writes pieces of a file spread over several regions into its temporary file; the last
/// pieces written finish it and rename it.
fn write_pieces(
    dirs: &mut Dirs<'_>,
    multi: &Multi,
    file: &FileOut,
    group: &[(u32, u64, usize, usize)],
    src: &Source<'_>,
) -> Result<()> {
    let target = dirs.sh.target(file);
    let io = |e: std::io::Error| Error::Io {
        path: target.clone(),
        source: e,
    };
    let (dir, name) = dirs.of(file)?;
    let (f, tmp) = {
        let mut slot = multi.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.aborted {
            return Ok(());
        }
        let fd = match &slot.name {
            Some(tmp) => rustix::fs::openat(
                dir,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            None => {
                let tmp = temp_leaf();
                let fd = rustix::fs::openat(
                    dir,
                    tmp.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                );
                if fd.is_ok() {
                    slot.name = Some(tmp);
                }
                fd
            }
        }
        .map_err(|e| io(e.into()))?;
        (File::from(fd), slot.name.clone().expect("set above"))
    };
    let mut i = 0;
    while i < group.len() {
        let mut j = i + 1;
        while j < group.len()
            && group[j].1 == group[j - 1].1 + group[j - 1].3 as u64
            && group[j].2 == group[j - 1].2 + group[j - 1].3
        {
            j += 1;
        }
        let (from, to) = (group[i].2, group[j - 1].2 + group[j - 1].3);
        f.write_all_at(src.get(from, to - from), group[i].1)
            .map_err(io)?;
        i = j;
    }
    // Every piece is written before it is counted, so the one that counts the last sees them
    // all written.
    if multi.remaining.fetch_sub(group.len(), Ordering::AcqRel) == group.len() {
        rustix::fs::fchmod(&f, Mode::from_raw_mode(file.mode)).map_err(|e| io(e.into()))?;
        rustix::fs::futimens(&f, &timestamps(file.mtime_ns)).map_err(|e| io(e.into()))?;
        drop(f);
        let mut slot = multi.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.aborted {
            return Ok(());
        }
        rustix::fs::renameat(dir, tmp.as_str(), dir, name).map_err(|e| io(e.into()))?;
        slot.finished = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datamon_store::{BlobKind, PackEntry};
    use datamon_types::Node;

    fn h(i: u64) -> Hash {
        Hash::of(&i.to_le_bytes())
    }

    fn entry(len: u32, chunks: Vec<ChunkRef>) -> TreeEntry {
        TreeEntry {
            name: "f".into(),
            mode: 0o644,
            mtime_ns: 0,
            node: Node::File {
                size: u64::from(len),
                hash: h(0),
                chunks,
            },
        }
    }

    /// One pack holding `lens` back to back (chunk hashes `h(1)`, `h(2)`, ...), starting at
    /// offset 8, each stored as long as it is.
    fn pack(pack: Hash, first: u64, lens: &[u32]) -> (Hash, Vec<PackEntry>) {
        let mut at = 8;
        let entries = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let e = PackEntry {
                    hash: h(first + i as u64),
                    kind: BlobKind::Data,
                    compression: Compression::None,
                    offset: at,
                    stored_len: len,
                    raw_len: len,
                };
                at += len;
                e
            })
            .collect();
        (pack, entries)
    }

    fn plan_of(index: &Index, files: &[Vec<(u64, u32)>]) -> Plan {
        let entries: Vec<(String, TreeEntry)> = files
            .iter()
            .enumerate()
            .map(|(i, cs)| {
                let chunks: Vec<ChunkRef> = cs.iter().map(|&(c, l)| ChunkRef(h(c), l)).collect();
                (
                    format!("f{i:04}"),
                    entry(cs.iter().map(|c| c.1).sum(), chunks),
                )
            })
            .collect();
        let items: Vec<(&str, &TreeEntry, &[ChunkRef])> = entries
            .iter()
            .map(|(p, e)| match &e.node {
                Node::File { chunks, .. } => (p.as_str(), e, chunks.as_slice()),
                _ => unreachable!(),
            })
            .collect();
        plan(items, index).unwrap()
    }

    #[test]
    fn many_small_files_in_one_pack_are_one_read() {
        // 1,000 files of 1 KiB back to back: one range read, no file spread over two.
        let lens = vec![1024u32; 1000];
        let index = Index::from_packs([pack(h(9_000), 1, &lens)]);
        // Files in reverse order of their place in the pack: still one read.
        let files: Vec<Vec<(u64, u32)>> = (0..1000u64).rev().map(|i| vec![(i + 1, 1024)]).collect();
        let p = plan_of(&index, &files);
        assert_eq!(p.reads(), 1);
        assert!(p.multi_pieces.is_empty());
        assert_eq!(p.regions[0].pieces.len(), 1000);
        assert_eq!(p.regions[0].start, 8);
        assert_eq!(p.regions[0].end, 8 + 1000 * 1024);
    }

    #[test]
    fn regions_are_bounded_in_size_and_gap() {
        // 64 KiB chunks: a region holds at most MAX_REGION bytes.
        let n = 3 * (MAX_REGION / (64 << 10)) as usize;
        let lens = vec![64u32 << 10; n];
        let index = Index::from_packs([pack(h(9_000), 1, &lens)]);
        let files: Vec<Vec<(u64, u32)>> = (0..n as u64).map(|i| vec![(i + 1, 64 << 10)]).collect();
        let p = plan_of(&index, &files);
        assert_eq!(p.reads(), 3);
        assert!(p.regions.iter().all(|r| r.end - r.start <= MAX_REGION));
        // Every other chunk of 512 KiB (a gap of 512 KiB > MAX_GAP): one read per chunk.
        let lens = vec![512u32 << 10; 8];
        let index = Index::from_packs([pack(h(9_001), 1, &lens)]);
        let files: Vec<Vec<(u64, u32)>> = (0..8u64)
            .step_by(2)
            .map(|i| vec![(i + 1, 512 << 10)])
            .collect();
        let p = plan_of(&index, &files);
        assert_eq!(p.reads(), 4);
        // Every other chunk of 64 KiB (gaps within MAX_GAP): one read.
        let lens = vec![64u32 << 10; 8];
        let index = Index::from_packs([pack(h(9_002), 1, &lens)]);
        let files: Vec<Vec<(u64, u32)>> = (0..8u64)
            .step_by(2)
            .map(|i| vec![(i + 1, 64 << 10)])
            .collect();
        let p = plan_of(&index, &files);
        assert_eq!(p.reads(), 1);
    }

    #[test]
    fn a_file_over_several_regions_and_shared_chunks() {
        // File 0: 12 chunks of a quarter region over four regions (and two packs); file 1 and 2 share
        // one chunk of pack b; file 3 is empty.
        // A quarter of a region.
        let mib = u32::try_from(MAX_REGION / 4).unwrap();
        let index = Index::from_packs([
            pack(h(9_000), 1, &[mib; 6]),
            pack(h(9_001), 101, &[mib, mib, mib, mib, mib, mib, 100]),
        ]);
        let big: Vec<(u64, u32)> = (1..=6).chain(101..=106).map(|c| (c, mib)).collect();
        let p = plan_of(&index, &[big, vec![(107, 100)], vec![(107, 100)], vec![]]);
        assert_eq!(
            p.reads(),
            4,
            "{:?}",
            p.regions
                .iter()
                .map(|r| (r.pack, r.start, r.end))
                .collect::<Vec<_>>()
        );
        assert_eq!(p.files[0].multi, Some(0));
        assert_eq!(p.multi_pieces, vec![12]);
        assert_eq!(p.files[1].multi, None);
        assert_eq!(p.files[2].multi, None);
        assert_eq!(p.empties, vec![3]);
        // Read in the order of the first file that needs them: file 0's regions by offset.
        let firsts: Vec<(u32, u64)> = p.regions.iter().map(|r| r.first).collect();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        assert_eq!(firsts, sorted);
        // The shared chunk is decoded once (counted once in the region's raw bytes).
        let last = p
            .regions
            .iter()
            .find(|r| r.pieces.iter().any(|x| x.file == 1))
            .unwrap();
        assert_eq!(last.pieces.iter().filter(|x| x.hash == h(107)).count(), 2);
    }

    #[test]
    fn a_chunk_not_in_the_index_names_the_file() {
        let index = Index::from_packs([pack(h(9_000), 1, &[10])]);
        let e = entry(10, vec![ChunkRef(h(55), 10)]);
        let err = plan(
            [("dir/x.bin", &e, [ChunkRef(h(55), 10)].as_slice())],
            &index,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { ref path, .. } if path == "dir/x.bin"),
            "{err:?}"
        );
    }
}
