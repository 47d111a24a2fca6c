//! BLAKE3 content hashes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A 32-byte BLAKE3 hash naming a chunk, a tree node, a file's content or a pack.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Hashes `data` with BLAKE3.
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// How a store names chunks and tree nodes: plain BLAKE3, or BLAKE3 keyed with a key derived
/// from an encrypted store's master key, so that ids say nothing about content to whoever does
/// not hold the key. Files' content hashes follow from their chunk ids either way.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentHasher {
    /// `BLAKE3(data)`: plain stores.
    #[default]
    Plain,
    /// `BLAKE3-keyed(key, data)`: encrypted stores.
    Keyed([u8; 32]),
}

impl ContentHasher {
    /// The id of `data` in a store that names content this way.
    pub fn hash(&self, data: &[u8]) -> Hash {
        match self {
            ContentHasher::Plain => Hash::of(data),
            ContentHasher::Keyed(k) => Hash(*blake3::keyed_hash(k, data).as_bytes()),
        }
    }
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentHasher::Plain => f.write_str("ContentHasher::Plain"),
            ContentHasher::Keyed(_) => f.write_str("ContentHasher::Keyed(..)"),
        }
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

impl FromStr for Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidHash { hash: s.to_owned() })?;
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"hello");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert_eq!(
            h.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert!("zz".parse::<Hash>().is_err());
    }
}
