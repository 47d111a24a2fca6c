//! Append-only sequences: the mutable state of a store (labels, branch heads) as numbered
//! write-once records `<prefix><10 digits>`, each created with create-if-absent, so that many
//! writers share one bucket with no lock (see `docs/format/layout.md`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::retry::RetryPolicy;
use crate::{keys, Error, Result, Store};

impl Store {
    /// All records of an append-only sequence, in order.
    ///
    /// # Errors
    /// A backend error or a damaged record.
    pub async fn read_sequence<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(u64, T)>> {
        let mut out = Vec::new();
        for (key, _) in self.list(prefix).await? {
            if let Some(seq) = parse_seq(prefix, &key) {
                match self.get_json(&key).await {
                    Ok(r) => out.push((seq, r)),
                    // Removed since the listing, or ignored (not signed by a trusted key).
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// The last record of an append-only sequence, if any.
    ///
    /// # Errors
    /// A backend error or a damaged record.
    pub async fn last_record<T: DeserializeOwned>(&self, prefix: &str) -> Result<Option<(u64, T)>> {
        Ok(self.last_record_and_max(prefix).await?.0)
    }

    /// The last record that can be believed (records a trust list makes ignored are skipped),
    /// and the greatest sequence number listed.
    async fn last_record_and_max<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(Option<(u64, T)>, u64)> {
        let mut seqs: Vec<u64> = self
            .list(prefix)
            .await?
            .iter()
            .filter_map(|(k, _)| parse_seq(prefix, k))
            .collect();
        seqs.sort_unstable();
        let max = seqs.last().copied().unwrap_or(0);
        for &seq in seqs.iter().rev() {
            match self.get_json(&keys::seq(prefix, seq)).await {
                Ok(r) => return Ok((Some((seq, r)), max)),
                // With a trust list, an ignored record gives way to the one before it.
                Err(Error::NotFound { .. }) if self.policy.is_some() => {}
                Err(e) => return Err(e),
            }
        }
        Ok((None, max))
    }

    /// Appends a record to a sequence: `make` gets the current last record and returns the new
    /// one, which is written with create-if-absent at the next number. When another writer took
    /// that number first, this waits a random while (`RetryPolicy::APPEND`) and calls `make`
    /// again with the new last record. `make` may refuse by returning an error (e.g. a
    /// compare-and-set that no longer holds).
    ///
    /// # Errors
    /// What `make` returns, [`Error::Precondition`] after too many lost races, or a backend
    /// error.
    pub async fn append<T, E>(
        &self,
        prefix: &str,
        mut make: impl FnMut(Option<&T>) -> std::result::Result<T, E>,
    ) -> std::result::Result<(u64, T), E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
    {
        let policy = RetryPolicy::APPEND;
        let started = std::time::Instant::now();
        let mut retry = 0;
        loop {
            let (last, max) = self.last_record_and_max::<T>(prefix).await?;
            let next = max + 1;
            let record = make(last.as_ref().map(|(_, r)| r))?;
            match self.create_json(&keys::seq(prefix, next), &record).await {
                Ok(()) => return Ok((next, record)),
                Err(Error::AlreadyExists { .. }) if policy.may_retry(retry, started) => {
                    tokio::time::sleep(policy.delay(retry)).await;
                    retry += 1;
                }
                Err(Error::AlreadyExists { .. }) => {
                    return Err(Error::Precondition {
                        key: prefix.to_owned(),
                    }
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The number of a sequence's record key, if `key` is one.
fn parse_seq(prefix: &str, key: &str) -> Option<u64> {
    let rest = key.strip_prefix(prefix)?;
    if rest.len() == 10 && rest.bytes().all(|c| c.is_ascii_digit()) {
        rest.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_have_ten_digits() {
        assert_eq!(parse_seq("a/", "a/0000000012"), Some(12));
        assert_eq!(parse_seq("a/", "a/12"), None);
        assert_eq!(parse_seq("a/", "b/0000000012"), None);
        assert_eq!(parse_seq("a/", "a/000000001x"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_of_one_process_all_land() {
        let s = Store::open("memory://sequence-race", &[])
            .await
            .expect("open");
        let tasks: Vec<_> = (0..16u64)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.append::<u64, Error>("seq/race/", |_| Ok(i)).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.expect("no panic").expect("append").0);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
        let mut values: Vec<u64> = s
            .read_sequence::<u64>("seq/race/")
            .await
            .expect("read")
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        values.sort_unstable();
        assert_eq!(values, (0..16).collect::<Vec<_>>());
    }
}
