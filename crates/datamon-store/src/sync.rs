//! Copying a store into another (`datamon store sync`): what is missing, in commit order.

use futures::StreamExt;

use crate::{keys, Error, Result, Store};

/// Objects copied at once.
const SYNC_CONCURRENCY: usize = 8;

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Objects copied.
    pub copied: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Objects the destination already had.
    pub present: u64,
    /// Records (labels, branch heads, bundles) that the destination holds with other bytes
    /// under the same key (it was written to directly); they were left as they are.
    pub conflicts: Vec<String>,
}

/// The phases of a sync, in commit order: whatever the destination lists, what it references
/// is already there, so an interrupted sync leaves it consistent and a rerun resumes.
fn phase(key: &str) -> u8 {
    // An encrypted store's key objects (write-once) come with the packs, so a destination
    // whose config arrived (first) soon has a key that opens it.
    if key.starts_with(keys::PACKS) || key.starts_with(keys::KEYS) {
        0
    } else if key.starts_with(keys::INDEX) {
        1
    } else if key.ends_with("/repo.json") {
        2
    } else if key.contains("/bundles/") || key.contains("/staged/") {
        3
    } else if key.contains("/branches/") {
        4
    } else {
        5
    }
}

impl Store {
    /// Copies into `dst` every object of this store that `dst` lacks: the config (when `dst` has
    /// none), packs, index objects, repos, bundles, branch and label records, in that order.
    /// Content-addressed objects are written plainly; records with create-if-absent, so a sync
    /// never overwrites what `dst` has. Safe to interrupt and rerun.
    ///
    /// `dst` is opened without creating a config, so it takes this store's config (and id).
    ///
    /// # Errors
    /// A backend error of either store; [`Error::InvalidUrl`] for a bad destination URL.
    pub async fn sync_to(&self, dst_url: &str, options: &[(String, String)]) -> Result<SyncReport> {
        let dst = Store::open_raw(dst_url, options)?;
        let mut report = SyncReport::default();
        match dst.get(keys::CONFIG).await {
            Ok(_) => report.present += 1,
            Err(Error::NotFound { .. }) => {
                let b = self.get(keys::CONFIG).await?;
                match dst.create(keys::CONFIG, b.clone()).await {
                    Ok(()) => {
                        report.copied += 1;
                        report.bytes += b.len() as u64;
                    }
                    Err(Error::AlreadyExists { .. }) => report.present += 1,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        let have: std::collections::HashMap<String, u64> =
            dst.list("").await?.into_iter().collect();
        let mut todo: Vec<(String, u64)> = self
            .list("")
            .await?
            .into_iter()
            .filter(|(k, _)| k != keys::CONFIG && !k.starts_with("tmp/"))
            .collect();
        todo.sort_by(|a, b| (phase(&a.0), &a.0).cmp(&(phase(&b.0), &b.0)));
        for p in 0..=5u8 {
            let batch: Vec<&(String, u64)> = todo
                .iter()
                .filter(|(k, size)| phase(k) == p && have.get(k) != Some(size))
                .collect();
            report.present += todo
                .iter()
                .filter(|(k, size)| phase(k) == p && have.get(k) == Some(size))
                .count() as u64;
            let dst = &dst;
            let mut copies = futures::stream::iter(batch.into_iter().map(|(k, _)| async move {
                let b = match self.get(k).await {
                    Ok(b) => b,
                    // A staged record removed since the listing: its bundle record is there.
                    Err(Error::NotFound { .. }) if p >= 2 => return Ok((k.clone(), None)),
                    Err(e) => return Err(e),
                };
                if p == 4 {
                    self.copy_head_bundle(dst, k, &b).await?;
                }
                let len = b.len() as u64;
                let content_addressed = p <= 1;
                if content_addressed {
                    dst.put(k, b).await?;
                    return Ok::<_, Error>((k.clone(), Some(len)));
                }
                match dst.create(k, b.clone()).await {
                    Ok(()) => Ok((k.clone(), Some(len))),
                    Err(Error::AlreadyExists { .. }) => {
                        if dst.get(k).await? == b {
                            Ok((k.clone(), None))
                        } else {
                            Ok((k.clone(), Some(u64::MAX)))
                        }
                    }
                    Err(e) => Err(e),
                }
            }))
            .buffer_unordered(SYNC_CONCURRENCY);
            while let Some(r) = copies.next().await {
                match r? {
                    (_, None) => report.present += 1,
                    (k, Some(u64::MAX)) => report.conflicts.push(k),
                    (_, Some(len)) => {
                        report.copied += 1;
                        report.bytes += len;
                    }
                }
            }
        }
        report.conflicts.sort();
        Ok(report)
    }

    /// Makes sure the bundle a branch record names is in `dst` before the record is: a commit
    /// writes the branch record before the bundle record (see `docs/format/layout.md`), so one
    /// listing can hold the branch record and neither the bundle record (written later) nor its
    /// staged copy (removed meanwhile).
    async fn copy_head_bundle(&self, dst: &Store, branch_key: &str, record: &[u8]) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Head {
            head: Option<datamon_types::BundleId>,
        }
        let Some(repo) = branch_key
            .strip_prefix(keys::REPOS)
            .and_then(|r| r.split_once("/branches/"))
            .map(|(repo, _)| repo)
        else {
            return Ok(());
        };
        let Ok(record) = self.open_for(branch_key, bytes::Bytes::copy_from_slice(record)) else {
            return Ok(());
        };
        let record = match crate::sign::open_envelope(branch_key, &record) {
            Ok(Some((_, payload))) => payload,
            _ => &record[..],
        };
        let Ok(Head { head: Some(id) }) = serde_json::from_slice::<Head>(record) else {
            return Ok(());
        };
        let bundle = keys::bundle(repo, &id);
        match dst.get(&bundle).await {
            Ok(_) => return Ok(()),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        for key in [bundle, keys::staged_bundle(repo, &id)] {
            match self.get(&key).await {
                Ok(b) => {
                    return match dst.create(&key, b).await {
                        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
