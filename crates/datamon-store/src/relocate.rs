//! Finding blobs whose pack garbage collection replaced.
//!
//! gc repacks a pack that holds few live blobs: it copies the live ones, byte for byte as
//! stored, into a new pack, and deletes the old pack once the copies are durable (see
//! `docs/format/gc.md`). A reader that loaded the index before that (a long-lived mount, a
//! download that started just before) still locates those blobs in the old pack, and its read
//! fails with "not found". It then asks here: the store loads the index again (once, shared by
//! every reader of this opener that meets a missing pack), leaving out the packs known to be
//! gone, and reads each blob from its new place. The bytes are placed where the old pack had
//! them, so the caller decodes and verifies the range as if nothing had moved.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datamon_chunk::Compression;
use datamon_types::Hash;

use crate::{keys, BlobRef, Error, Index, Result, Store};

/// A blob read from a pack range: its id and place in the old pack.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// The blob's id.
    pub hash: Hash,
    /// Its offset in the old pack.
    pub offset: u64,
    /// Its stored length (the new copy must have the same).
    pub stored_len: u32,
    /// How it is stored (the new copy must be stored the same way).
    pub compression: Compression,
}

/// What the readers of one opener learnt about replaced packs.
#[derive(Debug, Default)]
pub(crate) struct Relocator {
    /// The index loaded after the last missing pack was met, without the missing packs.
    index: Option<Arc<Index>>,
    /// Packs found missing.
    missing: HashSet<Hash>,
}

/// Two copies of the wanted blobs are read in one request when this close in their pack.
const MERGE_GAP: u64 = 64 << 10;

/// How many times the index is loaded again for one read whose new packs keep going away.
const RELOAD_ATTEMPTS: usize = 4;

impl Store {
    /// Reads `range` of `pack`, which is gone from the store, from the packs that now hold its
    /// blobs `wanted` (garbage collection copied them): the result has the range's length,
    /// each wanted blob's stored bytes at its old place, zeros elsewhere.
    ///
    /// # Errors
    /// [`Error::NotFound`] (naming the old pack) when a wanted blob is not stored anywhere else
    /// in the same form; a backend error.
    pub async fn read_relocated(
        &self,
        pack: &Hash,
        range: Range<u64>,
        wanted: &[Wanted],
    ) -> Result<Bytes> {
        let gone = || Error::NotFound {
            key: keys::pack(pack),
        };
        // The packs that replaced this one may have been repacked in turn since the index was
        // last loaded here (a mount that stays up across several gc runs): such a pack is
        // marked missing too, and the index loaded again.
        let mut missing = *pack;
        for _ in 0..RELOAD_ATTEMPTS {
            let index = self.relocation_index(&missing, wanted).await?;
            let mut found: Vec<(BlobRef, &Wanted)> = Vec::with_capacity(wanted.len());
            for w in wanted {
                let r = index.get(&w.hash).ok_or_else(gone)?;
                if r.pack == *pack || r.stored_len != w.stored_len || r.compression != w.compression
                {
                    return Err(gone());
                }
                found.push((r, w));
            }
            match self.read_found(found, range.clone()).await {
                Err(Error::NotFound { .. }) => {}
                Ok(out) => {
                    tracing::debug!(pack = %pack, blobs = wanted.len(), "read blobs from the packs that replaced a collected one");
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
            // Which pack was gone is not known from the error: mark each of them missing
            // whose objects are gone.
            let mut again = false;
            for p in self.gone_among(&index, wanted).await? {
                missing = p;
                self.relocator.lock().await.missing.insert(p);
                again = true;
            }
            if !again {
                break;
            }
        }
        Err(gone())
    }

    /// The packs holding `wanted` in `index` that the store no longer has.
    async fn gone_among(&self, index: &Index, wanted: &[Wanted]) -> Result<Vec<Hash>> {
        let mut packs: Vec<Hash> = wanted
            .iter()
            .filter_map(|w| index.get(&w.hash).map(|r| r.pack))
            .collect();
        packs.sort_unstable();
        packs.dedup();
        let mut out = Vec::new();
        for p in packs {
            match self.size(&keys::pack(&p)).await {
                Err(Error::NotFound { .. }) => out.push(p),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads the stored bytes of each found blob into a buffer of `range`'s length, at its old
    /// place.
    async fn read_found(
        &self,
        mut found: Vec<(BlobRef, &Wanted)>,
        range: Range<u64>,
    ) -> Result<Bytes> {
        found.sort_by_key(|(r, _)| (r.pack, r.offset));
        let len = usize::try_from(range.end - range.start).expect("a range in memory");
        let mut out = vec![0u8; len];
        let mut i = 0;
        while i < found.len() {
            // One read for neighbours in the same new pack.
            let (first, _) = found[i];
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.stored_len);
            let mut j = i + 1;
            while j < found.len()
                && found[j].0.pack == first.pack
                && u64::from(found[j].0.offset) <= end + MERGE_GAP
            {
                end = end.max(u64::from(found[j].0.offset) + u64::from(found[j].0.stored_len));
                j += 1;
            }
            let bytes = self.get_range(&keys::pack(&first.pack), start..end).await?;
            for (r, w) in &found[i..j] {
                let from = usize::try_from(u64::from(r.offset) - start).expect("in the read");
                let to = usize::try_from(w.offset - range.start).expect("in the range");
                let n = w.stored_len as usize;
                out[to..to + n].copy_from_slice(&bytes[from..from + n]);
            }
            i = j;
        }
        Ok(Bytes::from(out))
    }

    /// An index that locates every wanted blob outside the missing packs, if the store has
    /// one: the last one loaded when it does, else a new one (readers that meet missing packs
    /// at once share one load).
    async fn relocation_index(&self, missing: &Hash, wanted: &[Wanted]) -> Result<Arc<Index>> {
        let mut st = self.relocator.lock().await;
        st.missing.insert(*missing);
        if let Some(ix) = &st.index {
            let known = wanted.iter().all(|w| {
                ix.get(&w.hash)
                    .is_some_and(|r| !st.missing.contains(&r.pack))
            });
            if known {
                return Ok(ix.clone());
            }
        }
        let ix = Arc::new(self.load_index_without(&st.missing).await?);
        st.index = Some(ix.clone());
        Ok(ix)
    }
}
