//! The index: which pack holds each blob, and where.
//!
//! Each pack has one index object, `index/<pack id>`, written right after the pack:
//! ```text
//! "DMINDEX\x01"    8 bytes
//! pack id          32 bytes
//! count            u32 LE
//! entries          count x 46 bytes, as in the pack footer
//! checksum         32 bytes: BLAKE3 of everything before it
//! ```
//! The in-memory [`Index`] is the union of all index objects.

use std::collections::HashMap;

use datamon_chunk::Compression;
use datamon_types::Hash;

use crate::pack::{PackEntry, ENTRY_LEN};
use crate::{BlobKind, Error, Result};

const INDEX_MAGIC: &[u8; 8] = b"DMINDEX\x01";

/// Where a blob is: its pack and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    /// The pack's id.
    pub pack: Hash,
    /// What the blob holds.
    pub kind: BlobKind,
    /// How it is stored.
    pub compression: Compression,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub stored_len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    kind: BlobKind,
    compression: Compression,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
}

impl Slot {
    fn new(pack: u32, e: &PackEntry) -> Slot {
        Slot {
            pack,
            kind: e.kind,
            compression: e.compression,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
        }
    }
}

/// Below this many recent blobs, they stay in the hash map (see [`Index`]).
const MIN_MERGE: usize = 1 << 16;

/// The union of index objects: blob hash -> location.
///
/// Most blobs sit in a vector sorted by hash (52 bytes each, binary search); blobs added since
/// the last merge sit in a hash map, merged into the vector once they pass a quarter of it. A
/// hash map alone would cost about twice the memory (its buckets round up to a power of two),
/// and a mount or download keeps the index for its whole life: 50 MiB per million blobs instead
/// of 110.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<Hash>,
    pack_slots: HashMap<Hash, u32>,
    /// Sorted by hash, unique, none of them in `recent`.
    sorted: Vec<(Hash, Slot)>,
    recent: HashMap<Hash, Slot>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of `pack` in `packs`, adding it.
    fn pack_slot(&mut self, pack: Hash) -> u32 {
        let next = u32::try_from(self.packs.len()).expect("fewer than 4G packs");
        *self.pack_slots.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            next
        })
    }

    /// Builds the index of many packs at once (loading a store's index): every entry is
    /// appended, then sorted once, which is faster and smaller than adding them pack by pack.
    /// A blob stored in several packs keeps the location of the first pack given.
    pub fn from_packs(packs: impl IntoIterator<Item = (Hash, Vec<PackEntry>)>) -> Index {
        let mut idx = Index::new();
        for (pack, entries) in packs {
            let slot = idx.pack_slot(pack);
            idx.sorted
                .extend(entries.iter().map(|e| (e.hash, Slot::new(slot, e))));
        }
        idx.sorted.sort_by_key(|e| e.0); // stable: the first pack's entry comes first
        idx.sorted.dedup_by_key(|e| e.0);
        idx.sorted.shrink_to_fit();
        idx
    }

    /// Adds the entries of one pack. A blob stored in several packs keeps its first location.
    pub fn add_pack(&mut self, pack: Hash, entries: &[PackEntry]) {
        let slot = self.pack_slot(pack);
        for e in entries {
            if self.find(&e.hash).is_none() {
                self.recent.insert(e.hash, Slot::new(slot, e));
            }
        }
        if self.recent.len() > MIN_MERGE.max(self.sorted.len() / 4) {
            self.merge();
        }
    }

    /// Moves the recent blobs into the sorted vector.
    fn merge(&mut self) {
        let mut recent: Vec<(Hash, Slot)> = self.recent.drain().collect();
        recent.sort_unstable_by_key(|e| e.0);
        let old = std::mem::take(&mut self.sorted);
        let mut merged = Vec::with_capacity(old.len() + recent.len());
        let (mut a, mut b) = (old.into_iter().peekable(), recent.into_iter().peekable());
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.0 < y.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            merged.extend(next);
        }
        self.sorted = merged;
    }

    fn find(&self, hash: &Hash) -> Option<&Slot> {
        match self.sorted.binary_search_by(|(h, _)| h.cmp(hash)) {
            Ok(i) => Some(&self.sorted[i].1),
            Err(_) => self.recent.get(hash),
        }
    }

    /// Whether the index knows the blob.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.find(hash).is_some()
    }

    /// Where the blob is.
    pub fn get(&self, hash: &Hash) -> Option<BlobRef> {
        self.find(hash).map(|s| BlobRef {
            pack: self.packs[s.pack as usize],
            kind: s.kind,
            compression: s.compression,
            offset: s.offset,
            stored_len: s.stored_len,
            raw_len: s.raw_len,
        })
    }

    /// Whether the index lists this pack.
    pub fn has_pack(&self, pack: &Hash) -> bool {
        self.pack_slots.contains_key(pack)
    }

    /// All packs the index lists.
    pub fn packs(&self) -> &[Hash] {
        &self.packs
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes the index object of one pack.
    pub fn encode_object(pack: &Hash, entries: &[PackEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 + 4 + entries.len() * ENTRY_LEN + 32);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(pack.as_bytes());
        out.extend_from_slice(
            &u32::try_from(entries.len())
                .expect("fits u32")
                .to_le_bytes(),
        );
        for e in entries {
            e.encode(&mut out);
        }
        let sum = Hash::of(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes an index object, checking its checksum.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it is damaged.
    pub fn decode_object(b: &[u8], what: &str) -> Result<(Hash, Vec<PackEntry>)> {
        let corrupt = |detail: &str| Error::Corrupt {
            what: what.to_owned(),
            detail: detail.to_owned(),
        };
        if b.len() < 8 + 32 + 4 + 32 || &b[..8] != INDEX_MAGIC {
            return Err(corrupt("not a datamon index object"));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if Hash::of(body).as_bytes() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut pack = [0u8; 32];
        pack.copy_from_slice(&body[8..40]);
        let count = u32::from_le_bytes(body[40..44].try_into().expect("4 bytes")) as usize;
        let rest = &body[44..];
        if rest.len() != count * ENTRY_LEN {
            return Err(corrupt("entry count does not match length"));
        }
        let entries = rest
            .chunks_exact(ENTRY_LEN)
            .map(|e| PackEntry::decode(e, what))
            .collect::<Result<Vec<_>>>()?;
        Ok((Hash(pack), entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackWriter;

    #[test]
    fn index_object_round_trip_and_lookup() {
        let mut w = PackWriter::new(0);
        w.add_raw(Hash::of(b"one"), BlobKind::Data, b"one");
        w.add_raw(Hash::of(b"two"), BlobKind::Tree, b"two");
        let p = w.finish();
        let obj = Index::encode_object(&p.id, &p.entries);
        let (id, entries) = Index::decode_object(&obj, "t").unwrap();
        assert_eq!(id, p.id);
        assert_eq!(entries, p.entries);
        let mut idx = Index::new();
        idx.add_pack(id, &entries);
        let r = idx.get(&Hash::of(b"two")).unwrap();
        assert_eq!((r.pack, r.kind, r.raw_len), (p.id, BlobKind::Tree, 3));
        assert!(!idx.contains(&Hash::of(b"three")));
        let mut bad = obj.clone();
        bad[50] ^= 1;
        assert!(Index::decode_object(&bad, "t").is_err());
    }

    #[test]
    fn lookups_survive_merges_and_keep_the_first_location() {
        let entry = |i: u32| PackEntry {
            hash: Hash::of(&i.to_le_bytes()),
            kind: BlobKind::Data,
            compression: Compression::None,
            offset: i,
            stored_len: 1,
            raw_len: 1,
        };
        let mut idx = Index::new();
        let packs: Vec<Hash> = (0..4u32).map(|p| Hash::of(&[p as u8; 3])).collect();
        // Pack p holds blobs p*40k .. p*40k+50k: 10k of each pack's blobs are also in the next.
        for (p, id) in packs.iter().enumerate() {
            let from = p as u32 * 40_000;
            let entries: Vec<PackEntry> = (from..from + 50_000).map(entry).collect();
            idx.add_pack(*id, &entries);
        }
        assert_eq!(idx.len(), 170_000);
        assert!(!idx.sorted.is_empty(), "merged at least once");
        for i in (0..170_000u32).step_by(997) {
            let r = idx.get(&Hash::of(&i.to_le_bytes())).expect("known");
            assert_eq!(r.offset, i);
            let first = if i < 50_000 {
                0
            } else {
                (i - 50_000) / 40_000 + 1
            };
            assert_eq!(r.pack, packs[first as usize], "the first pack wins: {i}");
        }
        assert!(idx.sorted.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(!idx.contains(&Hash::of(b"nope")));

        // Built at once: the same answers.
        let bulk = Index::from_packs(packs.iter().enumerate().map(|(p, id)| {
            let from = p as u32 * 40_000;
            (*id, (from..from + 50_000).map(entry).collect())
        }));
        assert_eq!(bulk.len(), 170_000);
        for i in (0..170_000u32).step_by(997) {
            let h = Hash::of(&i.to_le_bytes());
            assert_eq!(bulk.get(&h), idx.get(&h));
        }
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::pack::parse_footer;
    use proptest::prelude::*;

    proptest! {
        /// Decoders of untrusted bytes return errors, never panic.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = Index::decode_object(&bytes, "fuzz");
            let _ = parse_footer(&bytes, "fuzz");
            let _ = datamon_types::Tree::from_bytes(&bytes);
        }

        /// A valid pack with one byte flipped anywhere is rejected or yields entries that stay
        /// inside the pack.
        #[test]
        fn flipped_pack_stays_in_bounds(pos in 0usize..10_000, bit in 0u8..8) {
            let mut w = crate::PackWriter::new(0);
            for i in 0..20u32 {
                let blob = vec![i as u8; 100 + i as usize * 13];
                w.add_raw(Hash::of(&blob), crate::BlobKind::Data, &blob);
            }
            let mut bytes = w.finish().bytes.to_vec();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(entries) = parse_footer(&bytes, "fuzz") {
                for e in entries {
                    prop_assert!((e.offset + e.stored_len) as usize <= bytes.len());
                }
            }
        }
    }
}
