//! Chunk compression and verified decoding.

use datamon_types::{ContentHasher, Hash};

/// How a blob's bytes are stored in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// A zstd frame.
    Zstd = 1,
}

impl Compression {
    /// The code stored in pack and index entries.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses a stored code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Why stored bytes could not be turned back into the chunk they name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The zstd frame is damaged.
    #[error("cannot decompress: {0}")]
    Decompress(#[source] std::io::Error),
    /// The bytes do not hash to the name they are stored under.
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The hash the blob is stored under.
        expected: Hash,
        /// The hash of what was read.
        actual: Hash,
    },
    /// The length differs from the recorded one.
    #[error("length mismatch: expected {expected} bytes, got {actual}")]
    LengthMismatch {
        /// Recorded length.
        expected: usize,
        /// Decoded length.
        actual: usize,
    },
}

const LEVEL: i32 = 1;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Compresses `data` with zstd when that saves at least 1/16 of its size; `None` means "store it
/// raw". Incompressible data costs little: zstd emits raw blocks for it quickly.
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 128 {
        return None;
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        let out = c.as_mut()?.compress(data).ok()?;
        (out.len() <= data.len() - data.len() / 16).then_some(out)
    })
}

/// Turns stored bytes back into the chunk named `expected`, checking its length and hash.
///
/// # Errors
/// [`DecodeError`] when the bytes are damaged or are not that chunk.
pub fn decode<'a>(
    stored: &'a [u8],
    compression: Compression,
    raw_len: usize,
    expected: &Hash,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    decode_with(
        &ContentHasher::Plain,
        stored,
        compression,
        raw_len,
        expected,
    )
}

/// [`decode`] in a store that names chunks with `hasher` (keyed in an encrypted store).
///
/// # Errors
/// [`DecodeError`] when the bytes are damaged or are not that chunk.
pub fn decode_with<'a>(
    hasher: &ContentHasher,
    stored: &'a [u8],
    compression: Compression,
    raw_len: usize,
    expected: &Hash,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    let data: std::borrow::Cow<'a, [u8]> = match compression {
        Compression::None => stored.into(),
        Compression::Zstd => zstd::bulk::decompress(stored, raw_len)
            .map_err(DecodeError::Decompress)?
            .into(),
    };
    if data.len() != raw_len {
        return Err(DecodeError::LengthMismatch {
            expected: raw_len,
            actual: data.len(),
        });
    }
    let actual = hasher.hash(&data);
    if actual != *expected {
        return Err(DecodeError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_compresses_and_random_does_not() {
        let text = "id,value,category\n".repeat(1000);
        let c = compress(text.as_bytes()).expect("text compresses");
        assert!(c.len() < text.len() / 4);
        let back = decode(
            &c,
            Compression::Zstd,
            text.len(),
            &Hash::of(text.as_bytes()),
        )
        .unwrap();
        assert_eq!(&back[..], text.as_bytes());
        let random: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = compress(&random);
    }

    #[test]
    fn flipped_byte_is_detected() {
        let data = b"hello world, hello world, hello world".repeat(20);
        let h = Hash::of(&data);
        let mut c = compress(&data).unwrap();
        let mid = c.len() / 2;
        c[mid] ^= 1;
        assert!(decode(&c, Compression::Zstd, data.len(), &h).is_err());
        let mut raw = data.clone();
        raw[3] ^= 1;
        assert!(matches!(
            decode(&raw, Compression::None, data.len(), &h),
            Err(DecodeError::HashMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..4) {
            let data = data.repeat(rep);
            let h = Hash::of(&data);
            let (stored, comp) = match compress(&data) {
                Some(c) => (c, Compression::Zstd),
                None => (data.clone(), Compression::None),
            };
            let back = decode(&stored, comp, data.len(), &h).unwrap();
            prop_assert_eq!(&back[..], &data[..]);
        }
    }
}
