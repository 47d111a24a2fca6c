//! Caches of the read-only filesystem: a small in-memory LRU and the bounded on-disk chunk cache
//! shared by every mount of one store.
//!
//! The disk cache keeps each chunk's decoded bytes in `<dir>/<hh>/<hash>` (written under a
//! temporary name and renamed, so concurrent mounts sharing the directory never see half a
//! chunk). Every chunk read back from disk is verified against its hash again
//! ([`datamon_chunk::decode`]); a damaged file is removed and the chunk fetched anew. The size is
//! bounded: when the total passes the limit, the least recently used chunks this process knows
//! of are removed (least recently modified, for chunks found on disk at start).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash as StdHash;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use datamon_chunk::Compression;
use datamon_types::Hash;

/// A least-recently-used map bounded by the total weight of its values.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    map: HashMap<K, (V, u64, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: u64,
    max_weight: u64,
}

impl<K: StdHash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(crate) fn new(max_weight: u64) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            weight: 0,
            max_weight,
        }
    }

    pub(crate) fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.map.get_mut(k)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, k.clone());
        Some(v.clone())
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Inserts and returns what was evicted.
    pub(crate) fn insert(&mut self, k: K, v: V, weight: u64) -> Vec<K> {
        self.tick += 1;
        if let Some((_, w, t)) = self.map.remove(&k) {
            self.order.remove(&t);
            self.weight -= w;
        }
        self.map.insert(k.clone(), (v, weight, self.tick));
        self.order.insert(self.tick, k);
        self.weight += weight;
        let mut evicted = Vec::new();
        while self.weight > self.max_weight && self.map.len() > 1 {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, w, _)) = self.map.remove(&old) {
                self.weight -= w;
            }
            evicted.push(old);
        }
        evicted
    }

    pub(crate) fn remove(&mut self, k: &K) {
        if let Some((_, w, t)) = self.map.remove(k) {
            self.order.remove(&t);
            self.weight -= w;
        }
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }
}

/// The bounded on-disk chunk cache (see the module docs). `None` directory: memory only.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: Option<PathBuf>,
    /// Known chunks on disk: hash -> size, in use order.
    known: Mutex<Lru<Hash, ()>>,
}

impl DiskCache {
    /// Opens (creating) the cache directory and accounts for what is already in it.
    pub(crate) fn open(dir: Option<PathBuf>, max_bytes: u64) -> std::io::Result<DiskCache> {
        let mut known = Lru::new(max_bytes);
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            let mut found: Vec<(std::time::SystemTime, Hash, u64)> = Vec::new();
            for sub in std::fs::read_dir(dir)?.flatten() {
                let Ok(rd) = std::fs::read_dir(sub.path()) else {
                    continue;
                };
                for f in rd.flatten() {
                    let name = f.file_name();
                    let Some(hash) = name.to_str().and_then(|n| n.parse::<Hash>().ok()) else {
                        continue;
                    };
                    if let Ok(m) = f.metadata() {
                        let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                        found.push((t, hash, m.len()));
                    }
                }
            }
            found.sort_unstable_by_key(|(t, _, _)| *t);
            for (_, hash, len) in found {
                for old in known.insert(hash, (), len) {
                    let _ = std::fs::remove_file(chunk_path(dir, &old));
                }
            }
        }
        Ok(DiskCache {
            dir,
            known: Mutex::new(known),
        })
    }

    /// Reads and verifies a chunk of `len` bytes.
    pub(crate) fn get(&self, hash: &Hash, len: usize) -> Option<Bytes> {
        let dir = self.dir.as_ref()?;
        let path = chunk_path(dir, hash);
        let bytes = std::fs::read(&path).ok()?;
        match datamon_chunk::decode(&bytes, Compression::None, len, hash) {
            Ok(_) => {
                let mut known = self.lock();
                if known.get(hash).is_none() {
                    for old in known.insert(*hash, (), len as u64) {
                        let _ = std::fs::remove_file(chunk_path(dir, &old));
                    }
                }
                Some(Bytes::from(bytes))
            }
            Err(e) => {
                tracing::warn!(chunk = %hash, error = %e, "removing a damaged chunk from the cache");
                let _ = std::fs::remove_file(&path);
                self.lock().remove(hash);
                None
            }
        }
    }

    /// Whether the chunk is known to be on disk.
    pub(crate) fn contains(&self, hash: &Hash) -> bool {
        self.dir.is_some() && self.lock().contains(hash)
    }

    /// Stores a verified chunk; failures only cost a later refetch.
    pub(crate) fn put(&self, hash: &Hash, data: &[u8]) {
        let Some(dir) = &self.dir else {
            return;
        };
        if self.contains(hash) {
            return;
        }
        let path = chunk_path(dir, hash);
        if let Err(e) = write_new(&path, data) {
            tracing::debug!(chunk = %hash, error = %e, "cannot write to the chunk cache");
            return;
        }
        let evicted = self.lock().insert(*hash, (), data.len() as u64);
        for old in evicted {
            let _ = std::fs::remove_file(chunk_path(dir, &old));
        }
    }

    /// Bytes this process accounts for.
    pub(crate) fn size(&self) -> u64 {
        self.lock().weight()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Hash, ()>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn chunk_path(dir: &Path, hash: &Hash) -> PathBuf {
    let hex = hash.to_hex();
    dir.join(&hex[..2]).join(hex)
}

/// Writes `data` under a temporary name and renames it into place.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recently_used_by_weight() {
        let mut l = Lru::new(10);
        assert!(l.insert(1, 'a', 4).is_empty());
        assert!(l.insert(2, 'b', 4).is_empty());
        assert_eq!(l.get(&1), Some('a'));
        assert_eq!(l.insert(3, 'c', 4), vec![2]);
        assert!(l.contains(&1) && l.contains(&3) && !l.contains(&2));
        assert_eq!(l.weight(), 8);
    }

    #[test]
    fn disk_cache_verifies_and_bounds_size() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(Some(dir.path().to_owned()), 10).unwrap();
        let (a, b) = (b"123456".to_vec(), b"abcdef".to_vec());
        let (ha, hb) = (Hash::of(&a), Hash::of(&b));
        c.put(&ha, &a);
        assert_eq!(c.get(&ha, 6).as_deref(), Some(&a[..]));
        c.put(&hb, &b);
        assert!(c.get(&ha, 6).is_none(), "evicted to stay under 10 bytes");
        assert_eq!(c.size(), 6);
        // A damaged file is detected and dropped.
        std::fs::write(chunk_path(dir.path(), &hb), b"abcdeX").unwrap();
        assert!(c.get(&hb, 6).is_none());
        assert!(!chunk_path(dir.path(), &hb).exists());
        // Reopening accounts for what is on disk.
        c.put(&ha, &a);
        let c2 = DiskCache::open(Some(dir.path().to_owned()), 10).unwrap();
        assert_eq!(c2.size(), 6);
        assert!(c2.get(&ha, 6).is_some());
    }
}
