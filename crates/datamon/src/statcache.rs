//! The local stat cache: for each file of a previous upload of the same folder to the same
//! store, its stat fields and chunk list. A file whose size, mtime, ctime and inode are unchanged
//! is not read again. The cache is a hint: a missing, stale or damaged cache only costs time.
//!
//! File format (little-endian): `"DMSTAT01"`, scan start time (i64 ns), entry count (u32), then
//! per entry: path length (u32) and UTF-8 path, size (u64), mtime (i64), ctime (i64), inode
//! (u64), chunk count (u32), chunks (32-byte hash, u32 length).

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use datamon_types::{ChunkRef, Hash};

use crate::scan::FileJob;

const MAGIC: &[u8; 8] = b"DMSTAT01";
/// Files modified this close to the previous scan's start are read again: their mtime cannot
/// tell a later write in the same clock tick apart.
const RACY_NS: i64 = 1_000_000_000;

#[derive(Debug)]
struct Entry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    chunks: Vec<ChunkRef>,
}

/// A loaded stat cache.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    scanned_at_ns: i64,
    entries: HashMap<String, Entry>,
}

/// Where the cache of `root` uploaded to store `store_id` lives.
pub(crate) fn cache_path(cache_dir: &Path, store_id: &str, root: &Path) -> PathBuf {
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    let key = Hash::of(canon.as_os_str().as_encoded_bytes()).to_hex();
    cache_dir.join("statcache").join(store_id).join(&key[..32])
}

impl StatCache {
    /// Loads a cache; a missing or damaged file gives an empty cache.
    pub(crate) fn load(path: &Path) -> StatCache {
        std::fs::read(path)
            .ok()
            .and_then(|b| Self::decode(&b))
            .unwrap_or_default()
    }

    fn decode(b: &[u8]) -> Option<StatCache> {
        let mut r = b;
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).ok()?;
        if &magic != MAGIC {
            return None;
        }
        let scanned_at_ns = i64::from_le_bytes(take(&mut r)?);
        let count = u32::from_le_bytes(take(&mut r)?) as usize;
        let mut entries = HashMap::with_capacity(count.min(1 << 24));
        for _ in 0..count {
            let len = u32::from_le_bytes(take(&mut r)?) as usize;
            if r.len() < len {
                return None;
            }
            let path = std::str::from_utf8(&r[..len]).ok()?.to_owned();
            r = &r[len..];
            let size = u64::from_le_bytes(take(&mut r)?);
            let mtime_ns = i64::from_le_bytes(take(&mut r)?);
            let ctime_ns = i64::from_le_bytes(take(&mut r)?);
            let ino = u64::from_le_bytes(take(&mut r)?);
            let n = u32::from_le_bytes(take(&mut r)?) as usize;
            if r.len() < n * 36 {
                return None;
            }
            let chunks = (0..n)
                .map(|_| {
                    let h: [u8; 32] = take(&mut r).expect("length checked");
                    let l = u32::from_le_bytes(take(&mut r).expect("length checked"));
                    ChunkRef(Hash(h), l)
                })
                .collect();
            entries.insert(
                path,
                Entry {
                    size,
                    mtime_ns,
                    ctime_ns,
                    ino,
                    chunks,
                },
            );
        }
        Some(StatCache {
            scanned_at_ns,
            entries,
        })
    }

    /// The chunks of `job` if the cache vouches for them.
    pub(crate) fn lookup(&self, job: &FileJob) -> Option<&[ChunkRef]> {
        let e = self.entries.get(&job.rel)?;
        let same = e.size == job.size
            && e.mtime_ns == job.mtime_ns
            && e.ctime_ns == job.ctime_ns
            && e.ino == job.ino;
        (same && job.mtime_ns < self.scanned_at_ns - RACY_NS).then_some(&e.chunks[..])
    }

    /// Writes a new cache atomically (temporary file, then rename).
    pub(crate) fn save(
        path: &Path,
        scanned_at_ns: i64,
        files: &[FileJob],
        chunks: &[Option<Vec<ChunkRef>>],
    ) -> std::io::Result<()> {
        let dir = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile_in(dir)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            w.write_all(MAGIC)?;
            w.write_all(&scanned_at_ns.to_le_bytes())?;
            let present: Vec<(&FileJob, &Vec<ChunkRef>)> = files
                .iter()
                .zip(chunks)
                .filter_map(|(f, c)| Some((f, c.as_ref()?)))
                .collect();
            w.write_all(
                &u32::try_from(present.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            )?;
            for (f, cs) in present {
                w.write_all(&u32::try_from(f.rel.len()).unwrap_or(u32::MAX).to_le_bytes())?;
                w.write_all(f.rel.as_bytes())?;
                w.write_all(&f.size.to_le_bytes())?;
                w.write_all(&f.mtime_ns.to_le_bytes())?;
                w.write_all(&f.ctime_ns.to_le_bytes())?;
                w.write_all(&f.ino.to_le_bytes())?;
                w.write_all(&u32::try_from(cs.len()).unwrap_or(u32::MAX).to_le_bytes())?;
                for c in cs {
                    w.write_all(c.0.as_bytes())?;
                    w.write_all(&c.1.to_le_bytes())?;
                }
            }
            w.flush()?;
        }
        std::fs::rename(&tmp, path)
    }
}

fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
    if r.len() < N {
        return None;
    }
    let (a, b) = r.split_at(N);
    *r = b;
    a.try_into().ok()
}

fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    Ok(dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    )))
}
