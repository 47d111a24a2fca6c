//! Packs: many compressed blobs in one object, with a footer that lists them.
//!
//! ```text
//! "DMPACK\0\x01"                       8 bytes
//! blob bytes, back to back             (offsets are from the start of the pack)
//! entries                              count x 46 bytes (see PackEntry::encode)
//! count                                u32 LE
//! "DMPKEND\x01"                        8 bytes
//! ```
//! A pack's id is the BLAKE3 hash of all its bytes. The footer makes every pack self-describing,
//! so the index can always be rebuilt from the packs alone.
//!
//! In an encrypted store (`docs/format/encryption.md`) packs are version 2: each blob is sealed
//! on its own (nonce, ciphertext, tag; so one blob is still one range read), and so is the
//! footer:
//! ```text
//! "DMPACK\0\x02"                       8 bytes
//! sealed blobs, back to back
//! sealed footer                        nonce, (entries, count) sealed, tag
//! sealed footer length                 u32 LE
//! "DMPKEND\x02"                        8 bytes
//! ```

use bytes::Bytes;
use datamon_chunk::Compression;
use datamon_types::Hash;

use std::sync::Arc;

use crate::crypto::Sealer;
use crate::{Error, Result};

pub(crate) const PACK_MAGIC: &[u8; 8] = b"DMPACK\0\x01";
pub(crate) const PACK_END: &[u8; 8] = b"DMPKEND\x01";
const SEALED_MAGIC: &[u8; 8] = b"DMPACK\0\x02";
const SEALED_END: &[u8; 8] = b"DMPKEND\x02";
/// Size of one encoded entry.
pub(crate) const ENTRY_LEN: usize = 46;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 0,
    /// A serialized tree node.
    Tree = 1,
}

/// Where one blob lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The hash of the blob's uncompressed bytes.
    pub hash: Hash,
    /// What it holds.
    pub kind: BlobKind,
    /// How it is stored.
    pub compression: Compression,
    /// Its offset from the start of the pack.
    pub offset: u32,
    /// Its stored (possibly compressed) length.
    pub stored_len: u32,
    /// Its uncompressed length.
    pub raw_len: u32,
}

impl PackEntry {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.hash.as_bytes());
        out.push(self.kind as u8);
        out.push(self.compression.code());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    pub(crate) fn decode(b: &[u8], what: &str) -> Result<PackEntry> {
        let corrupt = |detail: &str| Error::Corrupt {
            what: what.to_owned(),
            detail: detail.to_owned(),
        };
        if b.len() != ENTRY_LEN {
            return Err(corrupt("truncated entry"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[..32]);
        let kind = match b[32] {
            0 => BlobKind::Data,
            1 => BlobKind::Tree,
            _ => return Err(corrupt("unknown blob kind")),
        };
        let compression =
            Compression::from_code(b[33]).ok_or_else(|| corrupt("unknown compression"))?;
        Ok(PackEntry {
            hash: Hash(hash),
            kind,
            compression,
            offset: u32_at(34),
            stored_len: u32_at(38),
            raw_len: u32_at(42),
        })
    }
}

/// Accumulates blobs into a pack in memory until it is large enough to upload.
#[derive(Debug)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    sealer: Option<Arc<Sealer>>,
}

/// A complete pack, ready to be stored.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// The pack's id: the BLAKE3 hash of `bytes`.
    pub id: Hash,
    /// The whole pack.
    pub bytes: Bytes,
    /// Its entries, as in its footer.
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// An empty pack expected to grow to about `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_buffer(Vec::with_capacity(capacity + 128 * 1024))
    }

    /// An empty pack that reuses `buf`'s allocation (see [`FinishedPack::into_buffer`]), so a
    /// long upload does not allocate and fault in a fresh buffer for every pack.
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(PACK_MAGIC);
        PackWriter {
            buf,
            entries: Vec::new(),
            sealer: None,
        }
    }

    /// Seals this pack's blobs and footer with `sealer` (an encrypted store's; see
    /// [`crate::Store::pack_writer`]). Call before adding blobs.
    pub(crate) fn sealed_by(mut self, sealer: Option<Arc<Sealer>>) -> Self {
        debug_assert!(self.entries.is_empty());
        if sealer.is_some() {
            self.buf.clear();
            self.buf.extend_from_slice(SEALED_MAGIC);
        }
        self.sealer = sealer;
        self
    }

    /// Appends a blob, storing `stored` (already compressed when `compression` says so).
    pub fn add(
        &mut self,
        hash: Hash,
        kind: BlobKind,
        compression: Compression,
        raw_len: usize,
        stored: &[u8],
    ) {
        let offset = u32::try_from(self.buf.len()).expect("packs stay far below 4 GiB");
        match &self.sealer {
            Some(s) => s.seal_blob_into(&hash, stored, &mut self.buf),
            None => self.buf.extend_from_slice(stored),
        }
        let stored_len = self.buf.len() - offset as usize;
        self.entries.push(PackEntry {
            hash,
            kind,
            compression,
            offset,
            stored_len: u32::try_from(stored_len).expect("blobs stay below 4 GiB"),
            raw_len: u32::try_from(raw_len).expect("blobs stay below 4 GiB"),
        });
    }

    /// Appends a blob exactly as another pack of the same store stores it (`entry` locates it
    /// there): sealed blobs are bound to their id, not to their pack, so they are copied as
    /// they are.
    pub fn add_stored(&mut self, entry: &PackEntry, stored: &[u8]) {
        let offset = u32::try_from(self.buf.len()).expect("packs stay far below 4 GiB");
        self.buf.extend_from_slice(stored);
        self.entries.push(PackEntry {
            offset,
            stored_len: u32::try_from(stored.len()).expect("blobs stay below 4 GiB"),
            ..*entry
        });
    }

    /// Compresses `raw` when that pays and appends it; returns the stored length.
    pub fn add_raw(&mut self, hash: Hash, kind: BlobKind, raw: &[u8]) -> usize {
        self.add_blob(hash, kind, raw, true).0
    }

    /// Appends `raw`, compressed when `try_compress` is set and zstd pays; returns the stored
    /// length and whether it was compressed.
    pub fn add_blob(
        &mut self,
        hash: Hash,
        kind: BlobKind,
        raw: &[u8],
        try_compress: bool,
    ) -> (usize, bool) {
        match try_compress.then(|| datamon_chunk::compress(raw)).flatten() {
            Some(c) => {
                self.add(hash, kind, Compression::Zstd, raw.len(), &c);
                (c.len(), true)
            }
            None => {
                self.add(hash, kind, Compression::None, raw.len(), raw);
                (raw.len(), false)
            }
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the footer and names the pack.
    pub fn finish(mut self) -> FinishedPack {
        let count = u32::try_from(self.entries.len()).expect("entry count fits u32");
        match self.sealer.take() {
            None => {
                for e in &self.entries {
                    e.encode(&mut self.buf);
                }
                self.buf.extend_from_slice(&count.to_le_bytes());
                self.buf.extend_from_slice(PACK_END);
            }
            Some(s) => {
                let mut footer = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 4);
                for e in &self.entries {
                    e.encode(&mut footer);
                }
                footer.extend_from_slice(&count.to_le_bytes());
                let at = self.buf.len();
                s.seal_footer(&footer, &mut self.buf);
                let len = u32::try_from(self.buf.len() - at).expect("footers fit u32");
                self.buf.extend_from_slice(&len.to_le_bytes());
                self.buf.extend_from_slice(SEALED_END);
            }
        }
        let id = Hash::of(&self.buf);
        FinishedPack {
            id,
            bytes: Bytes::from(self.buf),
            entries: self.entries,
        }
    }
}

impl FinishedPack {
    /// Gives back the pack's buffer for reuse, if nothing else still holds it.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        self.bytes.try_into_mut().ok().map(Vec::from)
    }
}

/// Reads the entries from the footer of a whole pack, checking they lie inside it.
///
/// # Errors
/// [`Error::Corrupt`] when the footer is damaged.
pub fn parse_footer(pack: &[u8], what: &str) -> Result<Vec<PackEntry>> {
    parse_footer_with(None, pack, what)
}

/// [`parse_footer`] of a pack of a store sealed by `sealer`, when it is encrypted.
pub(crate) fn parse_footer_with(
    sealer: Option<&Sealer>,
    pack: &[u8],
    what: &str,
) -> Result<Vec<PackEntry>> {
    let corrupt = |detail: &str| Error::Corrupt {
        what: what.to_owned(),
        detail: detail.to_owned(),
    };
    if let Some(s) = sealer {
        if pack.len() < 20 || &pack[..8] != SEALED_MAGIC || &pack[pack.len() - 8..] != SEALED_END {
            return Err(corrupt(
                "not a sealed datamon pack (bad magic): a pack in an encrypted store must be sealed",
            ));
        }
        let len_at = pack.len() - 12;
        let len =
            u32::from_le_bytes(pack[len_at..len_at + 4].try_into().expect("4 bytes")) as usize;
        if len + 20 > pack.len() {
            return Err(corrupt("footer longer than the pack"));
        }
        let start = len_at - len;
        let footer = s
            .open_footer(&pack[start..len_at])
            .ok_or_else(|| corrupt("footer does not authenticate: altered, refused"))?;
        if footer.len() < 4 || (footer.len() - 4) % ENTRY_LEN != 0 {
            return Err(corrupt("bad sealed footer length"));
        }
        return decode_entries(&footer[..footer.len() - 4], start, what);
    }
    if pack.len() < 20 || &pack[..8] != PACK_MAGIC || &pack[pack.len() - 8..] != PACK_END {
        return Err(corrupt("not a datamon pack (bad magic)"));
    }
    let count_at = pack.len() - 12;
    let count =
        u32::from_le_bytes(pack[count_at..count_at + 4].try_into().expect("4 bytes")) as usize;
    let footer_len = count
        .checked_mul(ENTRY_LEN)
        .ok_or_else(|| corrupt("bad entry count"))?;
    if footer_len + 20 > pack.len() {
        return Err(corrupt("footer longer than the pack"));
    }
    let start = count_at - footer_len;
    decode_entries(&pack[start..count_at], start, what)
}

/// Decodes a footer's entries, checking each lies in the pack's data (`8..data_end`).
fn decode_entries(footer: &[u8], data_end: usize, what: &str) -> Result<Vec<PackEntry>> {
    let entries = footer
        .chunks_exact(ENTRY_LEN)
        .map(|b| PackEntry::decode(b, what))
        .collect::<Result<Vec<_>>>()?;
    for e in &entries {
        if e.offset as usize + e.stored_len as usize > data_end || (e.offset as usize) < 8 {
            return Err(Error::Corrupt {
                what: what.to_owned(),
                detail: "entry points outside the pack's data".into(),
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..3000), 0..20)) {
            let mut w = PackWriter::new(1 << 16);
            for b in &blobs {
                w.add_raw(Hash::of(b), BlobKind::Data, b);
            }
            let p = w.finish();
            prop_assert_eq!(p.id, Hash::of(&p.bytes));
            let entries = parse_footer(&p.bytes, "test").unwrap();
            prop_assert_eq!(&entries, &p.entries);
            for (e, b) in entries.iter().zip(&blobs) {
                let stored = &p.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                let back = datamon_chunk::decode(stored, e.compression, e.raw_len as usize, &e.hash).unwrap();
                prop_assert_eq!(&back[..], &b[..]);
            }
        }
    }

    /// Golden: the pack encoding is part of the store format.
    #[test]
    fn golden_pack_encoding() {
        let mut w = PackWriter::new(0);
        w.add_raw(Hash::of(b"abc"), BlobKind::Data, b"abc");
        let p = w.finish();
        assert_eq!(p.bytes.len(), 8 + 3 + ENTRY_LEN + 4 + 8);
        assert_eq!(&p.bytes[8..11], b"abc");
        assert_eq!(p.id.to_hex(), GOLDEN_PACK_ID);
        let mut bad = p.bytes.to_vec();
        bad[1] ^= 1;
        assert!(parse_footer(&bad, "test").is_err());
    }
    const GOLDEN_PACK_ID: &str = "dc4ea4c5881468b19459f6265b0853e2041fe4961cda61a4d4938c1755ba1405";
}
