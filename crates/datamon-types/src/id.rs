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
        let bad = || Error::InvalidBundleId { id: s.to_owned() };
        if s.len() != 27 || !s.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        let k = Ksuid::from_base62(s).map_err(|_| bad())?;
        let mut b = [0u8; 20];
        b.copy_from_slice(k.bytes());
        // Reject encodings that do not round-trip (values above the 160-bit range).
        let id = BundleId(b);
        if id.to_string() != s {
            return Err(bad());
        }
        Ok(id)
    }
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
    }
}
