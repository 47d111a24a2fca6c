//! Bundle ids: KSUIDs, 27 base62 characters, sortable by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use svix_ksuid::{Ksuid, KsuidLike};

use crate::Error;

/// The id of a bundle: a KSUID (a 32-bit timestamp and 128 random bits, base62-encoded).
///
/// Ids sort by the time they were generated; datamon generates a bundle's id when it commits the
/// bundle, so the greatest id of a repo is its latest committed bundle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId([u8; 20]);

impl BundleId {
    /// A new id for the current time.
    ///
    /// The first four bytes of the KSUID's random payload hold the nanoseconds within the
    /// second, so ids generated in the same second still sort by time (a plain KSUID only
    /// orders by the second); the other twelve bytes are random.
    pub fn generate() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970");
        let mut payload = [0u8; 16];
        payload[..4].copy_from_slice(&now.subsec_nanos().to_be_bytes());
        rand::fill(&mut payload[4..]);
        let secs = i64::try_from(now.as_secs()).expect("seconds fit i64");
        let k = Ksuid::from_seconds(Some(secs), Some(&payload));
        let mut b = [0u8; 20];
        b.copy_from_slice(k.bytes());
        BundleId(b)
    }

    /// An id derived from this one and `salt`, deterministically: the same time and the same
    /// sub-second bytes (so it sorts next to this one), the other twelve bytes from a hash of
    /// both. A history rewrite names the bundle that replaces this one so, which makes a rerun
    /// of the rewrite write the same records.
    pub fn derived(&self, salt: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("datamon derived bundle id v1");
        h.update(&self.0);
        h.update(salt);
        let digest = h.finalize();
        let mut b = self.0;
        // Bytes 0..4 are the timestamp, 4..8 the sub-second nanoseconds.
        b[8..].copy_from_slice(&digest.as_bytes()[..12]);
        BundleId(b)
    }

    /// The time encoded in the id, in seconds since the Unix epoch.
    pub fn timestamp_seconds(&self) -> i64 {
        Ksuid::from_bytes(self.0).timestamp_seconds()
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Ksuid::from_bytes(self.0).to_base62())
    }
}

impl fmt::Debug for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleId({self})")
    }
}

impl FromStr for BundleId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        decode_base62(s)
            .map(BundleId)
            .ok_or_else(|| Error::InvalidBundleId { id: s.to_owned() })
    }
}

/// The 20 bytes of a KSUID's 27 base62 characters (`0-9A-Za-z`), or `None` for another
/// length, another character, or a value above 160 bits (an encoding that would not
/// round-trip). Done by hand, without allocating: listings parse ids by the hundred thousand.
fn decode_base62(s: &str) -> Option<[u8; 20]> {
    if s.len() != 27 {
        return None;
    }
    // The value as five 32-bit limbs, most significant first.
    let mut limbs = [0u32; 5];
    for c in s.bytes() {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return None,
        };
        let mut carry = u64::from(digit);
        for limb in limbs.iter_mut().rev() {
            let v = u64::from(*limb) * 62 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            return None;
        }
    }
    let mut out = [0u8; 20];
    for (chunk, limb) in out.chunks_exact_mut(4).zip(limbs) {
        chunk.copy_from_slice(&limb.to_be_bytes());
    }
    Some(out)
}

impl Serialize for BundleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BundleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let a = BundleId::generate();
        let s = a.to_string();
        assert_eq!(s.len(), 27);
        assert_eq!(s.parse::<BundleId>().unwrap(), a);
        let known: BundleId = "1INzQ5TV4vAAfU2PbRFgPfnzEwR".parse().unwrap();
        assert_eq!(known.to_string(), "1INzQ5TV4vAAfU2PbRFgPfnzEwR");
        assert!(known < a, "ids sort by time");
        let ids: Vec<BundleId> = (0..50).map(|_| BundleId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(
            ids, sorted,
            "ids generated in the same second sort by generation time"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "1INzQ5TV4vAAfU2PbRFgPfnzEw!",
            "1INzQ5TV4vAAfU2PbRFgPfnzEwRR",
        ] {
            assert!(bad.parse::<BundleId>().is_err(), "{bad}");
        }
        // The greatest 160-bit value, and one above it.
        let max = BundleId([0xff; 20]).to_string();
        assert_eq!(max, "aWgEPTl1tmebfsQzFP4bxwgy80V");
        assert_eq!(max.parse::<BundleId>().unwrap(), BundleId([0xff; 20]));
        assert!("aWgEPTl1tmebfsQzFP4bxwgy80W".parse::<BundleId>().is_err());
        assert!("zzzzzzzzzzzzzzzzzzzzzzzzzzz".parse::<BundleId>().is_err());
    }

    #[test]
    fn decodes_as_the_ksuid_library() {
        let mut ids: Vec<[u8; 20]> = vec![[0; 20], [0xff; 20]];
        ids.extend((0..500).map(|_| BundleId::generate().0));
        ids.extend((0..500u32).map(|i| {
            let mut b = [0u8; 20];
            b[i as usize % 20] = (i * 37 % 256) as u8;
            b
        }));
        for b in ids {
            let s = Ksuid::from_bytes(b).to_base62();
            let k = Ksuid::from_base62(&s).unwrap();
            assert_eq!(decode_base62(&s), Some(b), "{s}");
            assert_eq!(k.bytes(), &b[..], "{s}");
        }
    }
}
