//! Caches of the read-only filesystem: small in-memory caches bounded by weight (chunks, parsed
//! directory nodes) and the bounded on-disk chunk cache shared by every mount of one store.
//!
//! The disk cache is a set of append-only **segments** in `<dir>/segments/`: `<name>.seg` holds
//! decoded chunks back to back, `<name>.idx` one 40-byte entry per chunk (hash, offset, length),
//! appended after the chunk's bytes are written. `<name>` starts with the creation time in
//! hexadecimal nanoseconds, so names sort oldest first. Chunks fetched together (a file read in
//! order) land next to each other, so a warm sequential read is one `pread` per request over a
//! large file, and the kernel's read-ahead (asked for ahead of the reader with
//! `posix_fadvise(WILLNEED)`) works as for any local file.
//!
//! Every process writes only to segments it created, and learns about the others' when it starts
//! and whenever it starts a new segment (a rescan of the directory), so mounts of one store share
//! what they fetched. The size is bounded: past the limit, whole segments are removed, oldest
//! first (a removed segment still open in another process stays readable there until it moves
//! on); chunks read from the oldest segments are first copied to the newest one, so what is in use
//! stays (a second-chance FIFO). Every chunk read back is verified against its hash by the caller; an entry
//! that does not verify is dropped and the chunk fetched anew, so a torn write (a crash, a power
//! loss: nothing here is fsynced) only costs a refetch.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::hash::Hash as StdHash;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datamon_types::{ChunkRef, Hash, Tree};

/// What a value costs in a [`WeightedCache`].
pub(crate) trait Weight {
    /// Its weight (bytes, entries).
    fn weight(&self) -> u64;
}

impl Weight for Bytes {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

impl Weight for Arc<Tree> {
    fn weight(&self) -> u64 {
        self.entries.len() as u64 + 1
    }
}

/// Weighs values for [`quick_cache`]: at least 1 (weightless values would never be evicted) and
/// at most half the bound (heavier ones would not be admitted at all).
#[derive(Debug, Clone, Copy)]
struct Weigher {
    max: u64,
}

impl<K, V: Weight> quick_cache::Weighter<K, V> for Weigher {
    fn weight(&self, _key: &K, value: &V) -> u64 {
        value.weight().clamp(1, self.max)
    }
}

/// A concurrent in-memory cache bounded by the total weight of its values: a [`quick_cache`]
/// cache (CLOCK-Pro-like eviction: what is read again stays, a one-off scan passes through). A
/// value heavier than half the bound counts as half of it, so that it is still cached.
#[derive(Debug)]
pub(crate) struct WeightedCache<K, V> {
    cache: quick_cache::sync::Cache<K, V, Weigher>,
}

impl<K: StdHash + Eq + Clone, V: Clone + Weight> WeightedCache<K, V> {
    /// A cache of at most `max_weight` in all, for values of about `typical_weight` each.
    pub(crate) fn new(max_weight: u64, typical_weight: u64) -> Self {
        let items = (max_weight / typical_weight.max(1)).clamp(16, 1 << 20) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(max_weight)
            // Half for values read more than once, half for new ones: new values (read-ahead)
            // must last until they are read (the default, 97%, would leave them 3%).
            .hot_allocation(0.5)
            // One shard: the bound holds over all values, and no value is too heavy for its
            // shard. Reads take a shared lock.
            .shards(1)
            .build()
            .expect("both capacities are set");
        let weigher = Weigher {
            max: (max_weight / 2).max(1),
        };
        WeightedCache {
            cache: quick_cache::sync::Cache::with_options(
                options,
                weigher,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
        }
    }

    /// The value of `k`, if cached.
    pub(crate) fn get(&self, k: &K) -> Option<V> {
        self.cache.get(k)
    }

    /// Whether `k` is cached.
    pub(crate) fn contains(&self, k: &K) -> bool {
        self.cache.contains_key(k)
    }

    /// Caches `v` as `k`, evicting other values past the bound.
    pub(crate) fn insert(&self, k: K, v: V) {
        self.cache.insert(k, v);
    }

    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

/// Bytes of one index entry: hash (32), offset (u32 LE), length (u32 LE).
const ENTRY: usize = 40;

/// The largest segment.
const MAX_SEGMENT: u64 = 64 << 20;

/// Where a chunk is in the disk cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The segment (a number local to this process).
    pub(crate) seg: u32,
    /// Offset in the segment.
    pub(crate) off: u32,
    /// Length.
    pub(crate) len: u32,
}

impl Loc {
    /// Whether `next` starts where this one ends, in the same segment.
    pub(crate) fn followed_by(&self, next: &Loc) -> bool {
        self.seg == next.seg && u64::from(self.off) + u64::from(self.len) == u64::from(next.off)
    }
}

/// The first half of a chunk hash: the in-memory key (reads verify the whole hash).
type Key = [u8; 16];

fn key(h: &Hash) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

#[derive(Debug)]
struct Segment {
    name: String,
    file: Arc<File>,
    /// Bytes of chunks this process knows in it.
    bytes: u64,
    /// Bytes of its index already read.
    idx_read: u64,
}

#[derive(Debug)]
struct Writer {
    seg: u32,
    data: File,
    idx: File,
    len: u64,
}

#[derive(Debug, Default)]
struct State {
    chunks: HashMap<Key, Loc>,
    segments: HashMap<u32, Segment>,
    /// Segment names, oldest first -> number.
    by_name: BTreeMap<String, u32>,
    next_seg: u32,
    total: u64,
    writer: Option<Writer>,
    /// Segments named before this are next in line for eviction (see [`DiskCache::is_old`]).
    old_before: Option<String>,
}

/// The bounded on-disk chunk cache (see the module docs). `None` directory: memory only.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: Option<PathBuf>,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
}

impl DiskCache {
    /// Opens (creating) the cache directory and reads the index of every segment in it.
    pub(crate) fn open(dir: Option<PathBuf>, max_bytes: u64) -> std::io::Result<DiskCache> {
        let dir = match dir {
            Some(d) => {
                remove_old_layout(&d);
                let seg = d.join("segments");
                std::fs::create_dir_all(&seg)?;
                Some(seg)
            }
            None => None,
        };
        let c = DiskCache {
            dir,
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(1, MAX_SEGMENT),
            state: Mutex::new(State::default()),
        };
        if let Some(dir) = &c.dir {
            let mut st = c.lock();
            c.rescan(dir, &mut st)?;
            c.evict(dir, &mut st);
        }
        Ok(c)
    }

    /// Whether chunks are kept on disk (a directory was given).
    pub(crate) fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// Where each chunk is, if cached.
    pub(crate) fn locate(&self, chunks: &[ChunkRef]) -> Vec<Option<Loc>> {
        if self.dir.is_none() {
            return vec![None; chunks.len()];
        }
        let st = self.lock();
        chunks
            .iter()
            .map(|c| st.chunks.get(&key(&c.0)).copied().filter(|l| l.len == c.1))
            .collect()
    }

    /// Whether the chunk is known to be on disk.
    #[cfg(test)]
    pub(crate) fn contains(&self, hash: &Hash) -> bool {
        self.dir.is_some() && self.lock().chunks.contains_key(&key(hash))
    }

    /// Reads `buf.len()` bytes of segment `seg` at `off` (one or more adjacent chunks; the
    /// caller verifies them).
    pub(crate) fn read_at(&self, seg: u32, off: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let file = self.segment_file(seg)?;
        file.read_exact_at(buf, u64::from(off))
    }

    /// Asks the kernel to read `len` bytes of segment `seg` at `off` into the page cache in the
    /// background (read-ahead for a sequential reader).
    pub(crate) fn will_need(&self, seg: u32, off: u32, len: u64) {
        if let Ok(file) = self.segment_file(seg) {
            let _ = nix::fcntl::posix_fadvise(
                &*file,
                i64::from(off),
                len as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    fn segment_file(&self, seg: u32) -> std::io::Result<Arc<File>> {
        self.lock()
            .segments
            .get(&seg)
            .map(|s| s.file.clone())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "segment evicted"))
    }

    /// Forgets a chunk whose bytes did not verify (it will be fetched anew).
    pub(crate) fn invalidate(&self, hash: &Hash) {
        tracing::warn!(chunk = %hash, "dropping a damaged chunk from the cache");
        self.lock().chunks.remove(&key(hash));
    }

    /// Stores a verified chunk; returns whether it is on disk. Failures only cost a refetch.
    pub(crate) fn put(&self, hash: &Hash, data: &[u8]) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        let mut st = self.lock();
        if st.chunks.contains_key(&key(hash)) {
            return true;
        }
        self.store_run(dir, &mut st, &[ChunkRef(*hash, data.len() as u32)], data);
        st.chunks.contains_key(&key(hash))
    }

    /// Appends a run to this process's segment and keeps the bound. A failure only costs a
    /// refetch (and a new segment next time).
    fn store_run(&self, dir: &Path, st: &mut State, chunks: &[ChunkRef], data: &[u8]) {
        if let Err(e) = self.append_run(dir, st, chunks, data) {
            tracing::debug!(error = %e, "cannot write to the chunk cache");
            st.writer = None;
            return;
        }
        if st.total > self.max_bytes {
            self.evict(dir, st);
        }
    }

    /// Stores the verified chunks of one run, `data` holding them back to back: one write when
    /// none of them is cached yet. Returns whether all of them are on disk now. Failures only
    /// cost a refetch.
    pub(crate) fn put_run(&self, chunks: &[ChunkRef], data: &[u8]) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        let mut st = self.lock();
        if chunks.len() < 2 || chunks.iter().any(|c| st.chunks.contains_key(&key(&c.0))) {
            drop(st);
            let mut at = 0;
            let mut all = true;
            for c in chunks {
                all &= self.put(&c.0, &data[at..at + c.1 as usize]);
                at += c.1 as usize;
            }
            return all;
        }
        self.store_run(dir, &mut st, chunks, data);
        chunks.iter().all(|c| st.chunks.contains_key(&key(&c.0)))
    }

    fn append_run(
        &self,
        dir: &Path,
        st: &mut State,
        chunks: &[ChunkRef],
        data: &[u8],
    ) -> std::io::Result<()> {
        let len = data.len() as u64;
        let full = st
            .writer
            .as_ref()
            .is_none_or(|w| w.len > 0 && w.len + len > self.segment_bytes);
        if full {
            self.start_segment(dir, st)?;
        }
        let w = st.writer.as_mut().expect("a segment was just started");
        let start = w.len;
        let mut off =
            u32::try_from(start).map_err(|_| std::io::Error::other("segment too large"))?;
        u32::try_from(start + len).map_err(|_| std::io::Error::other("segment too large"))?;
        w.data.write_all_at(data, start)?;
        let mut entries = Vec::with_capacity(chunks.len() * ENTRY);
        let mut locs = Vec::with_capacity(chunks.len());
        for c in chunks {
            entries.extend_from_slice(c.0.as_bytes());
            entries.extend_from_slice(&off.to_le_bytes());
            entries.extend_from_slice(&c.1.to_le_bytes());
            let loc = Loc {
                seg: w.seg,
                off,
                len: c.1,
            };
            locs.push((key(&c.0), loc));
            off += c.1;
        }
        w.idx.write_all(&entries)?;
        w.len += len;
        let seg = w.seg;
        if let Some(s) = st.segments.get_mut(&seg) {
            s.bytes += len;
            s.idx_read += entries.len() as u64;
        }
        st.total += len;
        st.chunks.extend(locs);
        Ok(())
    }

    /// Starts a new segment of this process, after learning what other processes wrote.
    fn start_segment(&self, dir: &Path, st: &mut State) -> std::io::Result<()> {
        st.writer = None;
        if let Err(e) = self.rescan(dir, st) {
            tracing::debug!(error = %e, "cannot rescan the chunk cache");
        }
        self.evict(dir, st);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{nanos:020x}-{:08x}", rand::random::<u32>());
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(format!("{name}.seg")))?;
        let idx = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(dir.join(format!("{name}.idx")))?;
        let seg = st.next_seg;
        st.next_seg += 1;
        st.segments.insert(
            seg,
            Segment {
                name: name.clone(),
                file: Arc::new(data.try_clone()?),
                bytes: 0,
                idx_read: 0,
            },
        );
        st.by_name.insert(name, seg);
        st.writer = Some(Writer {
            seg,
            data,
            idx,
            len: 0,
        });
        self.refresh_old(st);
        Ok(())
    }

    /// Brings the view of the directory up to date: new segments and new entries of other
    /// processes' segments are read, removed segments forgotten.
    fn rescan(&self, dir: &Path, st: &mut State) -> std::io::Result<()> {
        let mut present = std::collections::HashSet::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".idx")) else {
                continue;
            };
            present.insert(stem.to_owned());
            let seg = match st.by_name.get(stem) {
                Some(&s) => s,
                None => {
                    let Ok(file) = File::open(dir.join(format!("{stem}.seg"))) else {
                        continue;
                    };
                    let seg = st.next_seg;
                    st.next_seg += 1;
                    st.segments.insert(
                        seg,
                        Segment {
                            name: stem.to_owned(),
                            file: Arc::new(file),
                            bytes: 0,
                            idx_read: 0,
                        },
                    );
                    st.by_name.insert(stem.to_owned(), seg);
                    seg
                }
            };
            if st.writer.as_ref().is_some_and(|w| w.seg == seg) {
                continue;
            }
            let Some(s) = st.segments.get(&seg) else {
                continue;
            };
            let from = s.idx_read;
            let Ok(mut f) = File::open(e.path()) else {
                continue;
            };
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
                continue;
            }
            let whole = buf.len() / ENTRY * ENTRY;
            let mut added = 0u64;
            for entry in buf[..whole].chunks_exact(ENTRY) {
                let mut h = [0u8; 32];
                h.copy_from_slice(&entry[..32]);
                let off = u32::from_le_bytes(entry[32..36].try_into().expect("4 bytes"));
                let len = u32::from_le_bytes(entry[36..40].try_into().expect("4 bytes"));
                st.chunks
                    .entry(key(&Hash(h)))
                    .or_insert(Loc { seg, off, len });
                added += u64::from(len);
            }
            if let Some(s) = st.segments.get_mut(&seg) {
                s.idx_read += whole as u64;
                s.bytes += added;
            }
            st.total += added;
        }
        let gone: Vec<u32> = st
            .by_name
            .iter()
            .filter(|(n, _)| !present.contains(*n))
            .map(|(_, &s)| s)
            .collect();
        for seg in gone {
            forget_segment(st, seg);
        }
        Ok(())
    }

    /// Removes the oldest segments until the total is under the limit.
    fn evict(&self, dir: &Path, st: &mut State) {
        while st.total > self.max_bytes {
            let Some((name, seg)) = st.by_name.iter().next().map(|(n, &s)| (n.clone(), s)) else {
                break;
            };
            if st.writer.as_ref().is_some_and(|w| w.seg == seg) {
                st.writer = None;
            }
            let _ = std::fs::remove_file(dir.join(format!("{name}.idx")));
            let _ = std::fs::remove_file(dir.join(format!("{name}.seg")));
            forget_segment(st, seg);
        }
        self.refresh_old(st);
    }

    /// Marks as old the oldest segments that the next quarter of the bound written would evict.
    fn refresh_old(&self, st: &mut State) {
        let limit = st.total.saturating_sub(self.max_bytes / 4 * 3);
        let mut acc = 0;
        st.old_before = None;
        for (name, seg) in &st.by_name {
            let bytes = st.segments.get(seg).map_or(0, |s| s.bytes);
            if acc + bytes > limit {
                st.old_before = Some(name.clone());
                break;
            }
            acc += bytes;
        }
    }

    /// Whether segment `seg` is among those to be evicted soon: chunks read from it are
    /// [promoted](DiskCache::promote), which makes eviction a second-chance FIFO: data in use
    /// stays, data not read again goes.
    pub(crate) fn is_old(&self, seg: u32) -> bool {
        let st = self.lock();
        match (&st.old_before, st.segments.get(&seg)) {
            (Some(before), Some(s)) => s.name < *before,
            _ => false,
        }
    }

    /// Copies verified chunks (`data` holds them back to back) to this process's newest
    /// segment, where they are found from now on.
    pub(crate) fn promote(&self, chunks: &[ChunkRef], data: &[u8]) {
        let Some(dir) = &self.dir else {
            return;
        };
        let mut st = self.lock();
        self.store_run(dir, &mut st, chunks, data);
    }

    /// Bytes this process accounts for.
    pub(crate) fn size(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn forget_segment(st: &mut State, seg: u32) {
    if let Some(s) = st.segments.remove(&seg) {
        st.by_name.remove(&s.name);
        st.total = st.total.saturating_sub(s.bytes);
        st.chunks.retain(|_, l| l.seg != seg);
    }
    if st.writer.as_ref().is_some_and(|w| w.seg == seg) {
        st.writer = None;
    }
}

/// Removes the chunk-per-file layout of earlier versions (`<dir>/<hh>/<hash>`), in the
/// background: it is only a cache.
fn remove_old_layout(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let old: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() == 2 && n.chars().all(|c| c.is_ascii_hexdigit()) && e.path().is_dir()
        })
        .map(|e| e.path())
        .collect();
    if !old.is_empty() {
        std::thread::spawn(move || {
            for d in old {
                let _ = std::fs::remove_dir_all(d);
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use super::*;

    #[test]
    fn weighted_cache_is_bounded_by_weight_and_keeps_what_is_read_again() {
        let c: WeightedCache<u32, Bytes> = WeightedCache::new(10_000, 100);
        let hot = Bytes::from(vec![7u8; 100]);
        c.insert(0, hot.clone());
        for i in 1..1000 {
            c.insert(i, Bytes::from(vec![i as u8; 100]));
            assert_eq!(c.get(&0).as_ref(), Some(&hot), "read again, so kept");
            assert!(c.weight() <= 10_000);
        }
        assert!(c.contains(&999));
        assert!((1..1000).filter(|i| c.contains(i)).count() <= 100);
        // What was just inserted (read-ahead) is still there when read soon after, up to a
        // good part of the bound.
        for i in 1000..1030 {
            c.insert(i, Bytes::from(vec![i as u8; 100]));
        }
        assert!((1000..1030).all(|i| c.get(&i).is_some()));
        // A value heavier than the bound is still cached (it counts as half of it), as is an
        // empty one.
        c.insert(5000, Bytes::from(vec![0u8; 50_000]));
        assert_eq!(c.get(&5000).map(|b| b.len()), Some(50_000));
        c.insert(5001, Bytes::new());
        assert!(c.contains(&5001));
        assert!(c.weight() <= 10_000);
        // A bound of 0 caches nothing.
        let none: WeightedCache<u32, Bytes> = WeightedCache::new(0, 100);
        none.insert(1, Bytes::from_static(b"x"));
        assert!(!none.contains(&1));
    }

    #[test]
    fn disk_cache_stores_locates_shares_and_bounds_size() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(Some(dir.path().to_owned()), 10).unwrap();
        let (a, b) = (b"123456".to_vec(), b"abcdef".to_vec());
        let (ra, rb) = (ChunkRef(Hash::of(&a), 6), ChunkRef(Hash::of(&b), 6));
        assert!(c.put(&ra.0, &a));
        let l = c.locate(&[ra])[0].expect("cached");
        let mut buf = [0u8; 6];
        c.read_at(l.seg, l.off, &mut buf).unwrap();
        assert_eq!(buf, a[..]);
        assert!(c.put(&rb.0, &b));
        assert_eq!(
            c.locate(&[ra, rb])[0],
            None,
            "evicted to stay under 10 bytes"
        );
        assert_eq!(c.size(), 6);
        // Another process (a second cache on the same directory) sees what the first wrote.
        let c2 = DiskCache::open(Some(dir.path().to_owned()), 1 << 20).unwrap();
        assert_eq!(c2.size(), 6);
        let l = c2.locate(&[rb])[0].expect("shared");
        c2.read_at(l.seg, l.off, &mut buf).unwrap();
        assert_eq!(buf, b[..]);
        // A wrong length is not a hit; a damaged chunk is forgotten.
        assert_eq!(c2.locate(&[ChunkRef(rb.0, 5)])[0], None);
        c2.invalidate(&rb.0);
        assert!(!c2.contains(&rb.0));
        // Adjacent chunks are adjacent on disk.
        let dir2 = tempfile::tempdir().unwrap();
        let big = DiskCache::open(Some(dir2.path().to_owned()), 1 << 20).unwrap();
        big.put(&ra.0, &a);
        big.put(&rb.0, &b);
        let l = big.locate(&[ra, rb]);
        assert!(l[0].unwrap().followed_by(&l[1].unwrap()));
        let mut both = [0u8; 12];
        big.read_at(l[0].unwrap().seg, l[0].unwrap().off, &mut both)
            .unwrap();
        assert_eq!(&both[..6], &a[..]);
        assert_eq!(&both[6..], &b[..]);
        // A run is written at once, in order; a run with a cached chunk is written chunk by
        // chunk, without duplicating it.
        let dir3 = tempfile::tempdir().unwrap();
        let run = DiskCache::open(Some(dir3.path().to_owned()), 1 << 20).unwrap();
        run.put_run(&[ra, rb], b"123456abcdef");
        let l = run.locate(&[ra, rb]);
        assert!(l[0].unwrap().followed_by(&l[1].unwrap()));
        let c = b"ghij".to_vec();
        let rc = ChunkRef(Hash::of(&c), 4);
        run.put_run(&[rb, rc], b"abcdefghij");
        assert_eq!(run.size(), 16);
        let l = run.locate(&[rc])[0].unwrap();
        let mut four = [0u8; 4];
        run.read_at(l.seg, l.off, &mut four).unwrap();
        assert_eq!(&four, b"ghij");
    }

    #[test]
    fn chunks_read_from_old_segments_are_promoted_and_survive_eviction() {
        let dir = tempfile::tempdir().unwrap();
        // 16 KiB bound: 1 KiB segments.
        let c = DiskCache::open(Some(dir.path().to_owned()), 16 << 10).unwrap();
        let chunk = |i: u32| {
            let d = vec![i as u8; 1000];
            (ChunkRef(Hash::of(&d), 1000), d)
        };
        let (hot, hot_data) = chunk(0);
        c.put(&hot.0, &hot_data);
        let seg = c.locate(&[hot])[0].unwrap().seg;
        let mut i = 1;
        while !c.is_old(seg) {
            let (r, d) = chunk(i);
            c.put(&r.0, &d);
            i += 1;
            assert!(i < 100, "the first segment becomes old");
        }
        c.promote(&[hot], &hot_data);
        let moved = c.locate(&[hot])[0].unwrap();
        assert_ne!(moved.seg, seg);
        // Write until the chunks written right after it are evicted: the promoted one is kept.
        let mut k = i;
        while c.locate(&[chunk(1).0])[0].is_some() {
            let (r, d) = chunk(k);
            c.put(&r.0, &d);
            k += 1;
            assert!(k < i + 100, "eviction happens");
        }
        let l = c.locate(&[hot])[0].expect("promoted, so kept");
        let mut buf = vec![0u8; 1000];
        c.read_at(l.seg, l.off, &mut buf).unwrap();
        assert_eq!(buf, hot_data);
    }

    #[test]
    fn old_layout_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ab")).unwrap();
        std::fs::write(dir.path().join("ab/abcd"), b"x").unwrap();
        let _c = DiskCache::open(Some(dir.path().to_owned()), 10).unwrap();
        for _ in 0..100 {
            if !dir.path().join("ab").exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the old layout was not removed");
    }
}
