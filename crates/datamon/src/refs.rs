//! Bundle records, labels and branches: resolving selectors and moving refs.
//!
//! Labels and branches are append-only sequences of write-once records (see
//! [`datamon_store::Store::append`]); the newest record is the current value, and the records
//! are the history.

use chrono::Utc;
use datamon_store::keys;
use datamon_types::{
    Branch, BranchName, BranchRecord, Bundle, BundleId, LabelName, LabelRecord, RepoName,
};
use futures::{StreamExt, TryStreamExt};

use crate::{Datamon, Error, Result};

/// Which bundle of a repo a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSelector {
    /// A bundle id.
    Id(BundleId),
    /// The bundle a label names.
    Label(LabelName),
    /// The head of a branch.
    Branch(BranchName),
    /// The latest committed bundle of the repo.
    Latest,
}

impl Datamon {
    /// Resolves a selector to a bundle id; the bundle is known to exist. The id of a bundle
    /// that a history rewrite replaced resolves to its rewrite (with a warning), so ids kept in
    /// scripts and configs still work ([`Datamon::remove_paths`]).
    ///
    /// # Errors
    /// A `*NotFound` error naming what is missing; a store error.
    pub async fn resolve(&self, repo: &RepoName, sel: &BundleSelector) -> Result<BundleId> {
        self.get_repo(repo).await?;
        match sel {
            BundleSelector::Id(id) => {
                let mut id = *id;
                // A rewrite of a rewrite is followed too (a few hops at most in practice).
                for _ in 0..16 {
                    match self.get_bundle(repo, &id).await {
                        Ok(b) => return Ok(b.id),
                        Err(Error::BundleDeleted {
                            replaced_by: Some(next),
                            ..
                        }) => {
                            tracing::warn!(
                                "bundle {id} of repo {repo} was rewritten (paths removed from \
                                 history) as bundle {next}; using {next}"
                            );
                            id = next;
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.get_bundle(repo, &id).await.map(|b| b.id)
            }
            BundleSelector::Label(l) => Ok(self.get_label(repo, l).await?.bundle),
            BundleSelector::Branch(b) => {
                self.branch_head(repo, b)
                    .await?
                    .ok_or_else(|| Error::BranchNotFound {
                        repo: repo.to_string(),
                        branch: b.to_string(),
                    })
            }
            BundleSelector::Latest => {
                self.bundle_ids(repo)
                    .await?
                    .pop()
                    .ok_or_else(|| Error::NoBundles {
                        repo: repo.to_string(),
                    })
            }
        }
    }

    /// Reads a bundle record.
    ///
    /// A bundle whose branch append landed but whose record was not written yet (its writer is
    /// between the two steps, or was killed there) is completed here from its staged record
    /// (see "Commit order" in `docs/format/layout.md`).
    ///
    /// # Errors
    /// [`Error::BundleNotFound`], [`Error::BundleDeleted`]; a store error.
    pub async fn get_bundle(&self, repo: &RepoName, id: &BundleId) -> Result<Bundle> {
        let (b, t) = futures::try_join!(
            self.get_bundle_record(repo, id),
            self.bundle_tombstone(repo, id)
        )?;
        match t {
            Some(t) => Err(Self::deleted_error(repo, id, &t)),
            None => Ok(b),
        }
    }

    /// Reads a bundle record, deleted or not (lineage, gc and log still need the records of
    /// deleted bundles).
    pub(crate) async fn get_bundle_record(&self, repo: &RepoName, id: &BundleId) -> Result<Bundle> {
        match self.store.get_json(&keys::bundle(repo.as_str(), id)).await {
            Err(datamon_store::Error::NotFound { .. }) => {
                if let Some(b) = self.roll_forward(repo, id).await? {
                    return Ok(b);
                }
                // Say which is missing: the repo or the bundle.
                self.get_repo(repo).await?;
                Err(Error::BundleNotFound {
                    repo: repo.to_string(),
                    id: *id,
                })
            }
            r => Ok(r?),
        }
    }

    /// Commits a bundle whose packs and trees are stored: advances `branch` to it and writes its
    /// record, with the head it was appended after as its parent. Returns the record written.
    ///
    /// The parent is only known once the branch append has won its place in the branch's
    /// sequence (many writers may append to one branch at once), so the commit is three writes:
    /// 1. the record without parents under `staged/` (never listed);
    /// 2. the branch record (create-if-absent at the next sequence number, retried until won),
    ///    whose `previous` is the head it follows;
    /// 3. the bundle record, its parent that `previous`; then the staged record is removed.
    ///
    /// Between 2 and 3 the branch names a bundle that is not listed yet; a reader that asks for
    /// it ([`Datamon::get_bundle`]) writes step 3 itself from the staged record and the branch
    /// record (the bytes are the same whoever writes them), so a writer killed there leaves a
    /// complete bundle, never a dangling branch.
    pub(crate) async fn commit_bundle(
        &self,
        mut bundle: Bundle,
        branch: &BranchName,
        gc_seen: Option<&std::collections::HashSet<u64>>,
    ) -> Result<Bundle> {
        let repo = bundle.repo.clone();
        bundle.parents.clear();
        bundle.branch = Some(branch.clone());
        self.store
            .create_json(&keys::staged_bundle(repo.as_str(), &bundle.id), &bundle)
            .await?;
        // On a local store the staged record is durable before a branch record names it.
        self.store.sync().await?;
        // A garbage collection planned while this upload ran may have condemned data it reused:
        // keep it before the commit becomes visible (see `docs/format/gc.md`).
        self.keep_for_commit_since(&[bundle.root], &bundle.id, gc_seen)
            .await?;
        let previous = self.advance_branch(&repo, branch, bundle.id).await?;
        bundle.parents = previous.into_iter().collect();
        self.write_bundle_record(&bundle).await?;
        // The staged copy has served; a reader racing with this delete re-reads the record.
        let staged = keys::staged_bundle(repo.as_str(), &bundle.id);
        if let Err(e) = self.store.delete(&staged).await {
            tracing::debug!("could not remove {staged}: {e}");
        }
        Ok(bundle)
    }

    /// Commits `bundle` like [`Datamon::commit_bundle`], but idempotently: it may run again, or
    /// in several processes at once, with the same record (a diamond's commit, whose record is
    /// chosen before it is written), and the bundle is appended to its branch exactly once.
    /// Each append attempt first looks for a branch record naming the bundle, and writes at the
    /// number after the last record it read, so an append made by another process meanwhile
    /// makes the attempt lose its place and look again.
    pub(crate) async fn commit_bundle_once(
        &self,
        mut bundle: Bundle,
        branch: &BranchName,
    ) -> Result<Bundle> {
        let repo = bundle.repo.clone();
        match self.get_bundle_record(&repo, &bundle.id).await {
            Ok(b) => return Ok(b),
            Err(Error::BundleNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        bundle.parents.clear();
        bundle.branch = Some(branch.clone());
        let staged = keys::staged_bundle(repo.as_str(), &bundle.id);
        match self.store.create_json(&staged, &bundle).await {
            Err(datamon_store::Error::AlreadyExists { .. }) => {
                let there: Bundle = match self.store.get_json(&staged).await {
                    Ok(b) => b,
                    // Another finisher completed the commit and removed the staged record
                    // between the create and this read: its bundle record is there.
                    Err(datamon_store::Error::NotFound { .. }) => {
                        return self.get_bundle_record(&repo, &bundle.id).await;
                    }
                    Err(e) => return Err(e.into()),
                };
                if there != bundle {
                    return Err(Error::Corrupt {
                        path: staged,
                        detail: "another staged record holds this id".into(),
                    });
                }
            }
            r => r?,
        }
        self.store.sync().await?;
        self.keep_for_commit(&[bundle.root], &bundle.id).await?;
        let prefix = keys::branch(repo.as_str(), branch.as_str());
        let mut retry: u32 = 0;
        let previous = loop {
            if let Some(rec) = self.find_append(&repo, branch, &bundle).await? {
                break rec.previous;
            }
            let last = self.store.last_record::<BranchRecord>(&prefix).await?;
            // A record appended between the search and this read is searched again.
            if last
                .as_ref()
                .is_some_and(|(_, r)| r.head == Some(bundle.id))
            {
                break last.and_then(|(_, r)| r.previous);
            }
            let next = last.as_ref().map_or(1, |(s, _)| s + 1);
            let rec = BranchRecord {
                head: Some(bundle.id),
                previous: last.and_then(|(_, r)| r.head),
                author: self.author.clone(),
                time: Utc::now(),
            };
            match self
                .store
                .create_json(&keys::seq(&prefix, next), &rec)
                .await
            {
                Ok(()) => break rec.previous,
                Err(datamon_store::Error::AlreadyExists { .. }) if retry < 200 => {
                    // Lost the place to another writer: wait a random while, look again.
                    let ms = 5 + rand::random::<u64>() % (10 * u64::from(retry.min(10) + 1));
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    retry += 1;
                }
                Err(datamon_store::Error::AlreadyExists { .. }) => {
                    return Err(datamon_store::Error::Precondition { key: prefix }.into())
                }
                Err(e) => return Err(e.into()),
            }
        };
        bundle.parents = previous.into_iter().collect();
        self.write_bundle_record(&bundle).await?;
        if let Err(e) = self.store.delete(&staged).await {
            tracing::debug!("could not remove {staged}: {e}");
        }
        Ok(bundle)
    }

    /// Writes a bundle's final record; one written already with the same bytes (by a reader
    /// that completed the commit) is accepted.
    pub(crate) async fn write_bundle_record(&self, bundle: &Bundle) -> Result<()> {
        let key = keys::bundle(bundle.repo.as_str(), &bundle.id);
        match self.store.create_json(&key, bundle).await {
            Err(datamon_store::Error::AlreadyExists { .. }) => {
                let there: Bundle = self.store.get_json(&key).await?;
                if &there == bundle {
                    Ok(())
                } else {
                    Err(Error::Corrupt {
                        path: key,
                        detail: "another bundle record holds this id".into(),
                    })
                }
            }
            r => Ok(r?),
        }
    }

    /// Completes the commit of a bundle whose branch append landed but whose record is missing
    /// (see [`Datamon::commit_bundle`]); `None` when there is no such bundle (no staged record,
    /// or its branch append never happened).
    async fn roll_forward(&self, repo: &RepoName, id: &BundleId) -> Result<Option<Bundle>> {
        let staged_key = keys::staged_bundle(repo.as_str(), id);
        // Kept as JSON so that fields a newer writer added survive in the record written here.
        let mut staged: serde_json::Value = match self.store.get_json(&staged_key).await {
            Ok(b) => b,
            Err(datamon_store::Error::NotFound { .. }) => {
                // The writer may have finished meanwhile: its record is written before its
                // staged copy is removed.
                return match self.store.get_json(&keys::bundle(repo.as_str(), id)).await {
                    Ok(b) => Ok(Some(b)),
                    Err(datamon_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let mut bundle: Bundle =
            serde_json::from_value(staged.clone()).map_err(|e| Error::Corrupt {
                path: staged_key.clone(),
                detail: format!("not a bundle record: {e}"),
            })?;
        let Some(branch) = bundle.branch.clone() else {
            return Ok(None);
        };
        let Some(rec) = self.find_append(repo, &branch, &bundle).await? else {
            // Staged but never appended: the upload did not commit (or is still committing).
            return Ok(None);
        };
        bundle.parents = rec.previous.into_iter().collect();
        if let Some(obj) = staged.as_object_mut() {
            obj.insert(
                "parents".into(),
                serde_json::to_value(&bundle.parents).map_err(|e| Error::Task(e.to_string()))?,
            );
        }
        // A read-only reader still gets the bundle; the next writer completes it.
        let key = keys::bundle(repo.as_str(), id);
        match self.store.create_json(&key, &staged).await {
            Ok(()) => {}
            Err(datamon_store::Error::AlreadyExists { .. }) => {
                let there: Bundle = self.store.get_json(&key).await?;
                if there != bundle {
                    return Err(Error::Corrupt {
                        path: key,
                        detail: "another bundle record holds this id".into(),
                    });
                }
            }
            Err(e) => {
                tracing::debug!("could not complete the commit of bundle {id}: {e}");
                return Ok(Some(bundle));
            }
        }
        if let Err(e) = self.store.delete(&staged_key).await {
            tracing::debug!("could not remove {staged_key}: {e}");
        }
        Ok(Some(bundle))
    }

    /// The branch record that appended `bundle`, searched from the newest back to the records
    /// written before the bundle was created (with 10 minutes for clocks that disagree).
    async fn find_append(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        bundle: &Bundle,
    ) -> Result<Option<BranchRecord>> {
        let prefix = keys::branch(repo.as_str(), branch.as_str());
        let Some((last, rec)) = self.store.last_record::<BranchRecord>(&prefix).await? else {
            return Ok(None);
        };
        let oldest = bundle.created_at - chrono::Duration::minutes(10);
        let mut next = Some((last, rec));
        while let Some((seq, rec)) = next {
            if rec.head == Some(bundle.id) {
                return Ok(Some(rec));
            }
            if rec.time < oldest || seq <= 1 {
                return Ok(None);
            }
            next = match self.store.get_json(&keys::seq(&prefix, seq - 1)).await {
                Ok(r) => Some((seq - 1, r)),
                Err(datamon_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(None)
    }

    /// Completes the commits of a repo cut after their branch append (see
    /// [`Datamon::get_bundle`]); returns the ids completed.
    async fn complete_staged(&self, repo: &RepoName) -> Result<Vec<BundleId>> {
        let prefix = keys::staged(repo.as_str());
        let staged: Vec<BundleId> = self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
            .collect();
        let mut done = Vec::new();
        for id in staged {
            if self.roll_forward(repo, &id).await?.is_some() {
                done.push(id);
            }
        }
        Ok(done)
    }

    /// The ids of a repo's committed bundles, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn bundle_ids(&self, repo: &RepoName) -> Result<Vec<BundleId>> {
        let mut ids = self.bundle_record_ids(repo).await?;
        let deleted = self.deleted_bundle_ids(repo).await?;
        ids.retain(|id| !deleted.contains(id));
        Ok(ids)
    }

    /// The ids of every bundle record of a repo, deleted or not, oldest first.
    pub(crate) async fn bundle_record_ids(&self, repo: &RepoName) -> Result<Vec<BundleId>> {
        // Commits cut after their branch append first, so a bundle a branch names is listed.
        let completed = self.complete_staged(repo).await?;
        let prefix = keys::bundles(repo.as_str());
        let mut ids: Vec<BundleId> = self
            .store
            .list_names(&prefix)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
            .chain(completed)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// A repo's bundles, oldest first.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn list_bundles(&self, repo: &RepoName) -> Result<Vec<Bundle>> {
        self.get_repo(repo).await?;
        let ids = self.bundle_ids(repo).await?;
        let found: Vec<Option<Bundle>> =
            futures::stream::iter(ids.into_iter().map(|id| async move {
                match self.get_bundle_record(repo, &id).await {
                    Ok(b) => Ok(Some(b)),
                    // Ignored by the store's trust list (reported as it is read).
                    Err(Error::BundleNotFound { .. }) if self.store.trust_list().is_some() => {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }))
            .buffered(32)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The current value of a label.
    ///
    /// # Errors
    /// [`Error::LabelNotFound`]; a store error.
    pub async fn get_label(&self, repo: &RepoName, label: &LabelName) -> Result<LabelRecord> {
        let mut found = self
            .store
            .last_record::<LabelRecord>(&keys::label(repo.as_str(), label.as_str()))
            .await?;
        if let Some((seq, _)) = &found {
            if self
                .ref_deleted(&keys::label_deletion(repo.as_str(), label.as_str(), *seq))
                .await?
            {
                found = None;
            }
        }
        let found = found.map(|(_, r)| r);
        match found {
            Some(r) => Ok(r),
            None => {
                // Say which is missing: the repo or the label.
                self.get_repo(repo).await?;
                Err(Error::LabelNotFound {
                    repo: repo.to_string(),
                    label: label.to_string(),
                })
            }
        }
    }

    /// Every value a label had, oldest first.
    ///
    /// # Errors
    /// [`Error::LabelNotFound`]; a store error.
    pub async fn label_history(
        &self,
        repo: &RepoName,
        label: &LabelName,
    ) -> Result<Vec<LabelRecord>> {
        let h: Vec<LabelRecord> = self
            .store
            .read_sequence(&keys::label(repo.as_str(), label.as_str()))
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        if h.is_empty() {
            self.get_repo(repo).await?;
            return Err(Error::LabelNotFound {
                repo: repo.to_string(),
                label: label.to_string(),
            });
        }
        Ok(h)
    }

    /// All labels of a repo with their current values, sorted by name.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn list_labels(&self, repo: &RepoName) -> Result<Vec<(LabelName, LabelRecord)>> {
        self.get_repo(repo).await?;
        let deleted = self.label_deletions(repo).await?;
        let mut out = Vec::new();
        for name in self.store.list_dirs(&keys::labels(repo.as_str())).await? {
            let Ok(label) = name.parse::<LabelName>() else {
                continue;
            };
            if let Some((seq, r)) = self
                .store
                .last_record(&keys::label(repo.as_str(), &name))
                .await?
            {
                if deleted.get(&name).is_some_and(|d| d.contains(&seq)) {
                    continue;
                }
                out.push((label, r));
            }
        }
        Ok(out)
    }

    /// Points a label at a bundle. With `expect`, only if the label currently points at
    /// `expect` (`Some(None)`: only if the label does not exist yet); concurrent setters without
    /// `expect` all succeed, in some order, and all appear in the history.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`], [`Error::LabelConflict`]; a store error.
    pub async fn set_label(
        &self,
        repo: &RepoName,
        label: &LabelName,
        bundle: &BundleId,
        expect: Option<Option<BundleId>>,
    ) -> Result<LabelRecord> {
        self.get_bundle(repo, bundle).await?;
        let author = self.author.clone();
        let (_, rec) = self
            .store
            .append::<LabelRecord, Error>(&keys::label(repo.as_str(), label.as_str()), |prev| {
                let current = prev.map(|p| p.bundle);
                if let Some(expected) = expect {
                    if expected != current {
                        let show = |b: Option<BundleId>| {
                            b.map_or_else(|| "none".to_owned(), |b| b.to_string())
                        };
                        return Err(Error::LabelConflict {
                            label: label.to_string(),
                            expected: show(expected),
                            actual: show(current),
                        });
                    }
                }
                Ok(LabelRecord {
                    bundle: *bundle,
                    previous: current,
                    author: author.clone(),
                    time: Utc::now(),
                })
            })
            .await?;
        Ok(rec)
    }

    /// The head of a branch; `None` when the branch exists but has no bundle, or does not exist.
    ///
    /// # Errors
    /// A store error.
    pub async fn branch_head(
        &self,
        repo: &RepoName,
        branch: &BranchName,
    ) -> Result<Option<BundleId>> {
        let Some((seq, r)) = self
            .store
            .last_record::<BranchRecord>(&keys::branch(repo.as_str(), branch.as_str()))
            .await?
        else {
            return Ok(None);
        };
        if self
            .ref_deleted(&keys::branch_deletion(repo.as_str(), branch.as_str(), seq))
            .await?
        {
            return Ok(None);
        }
        Ok(r.head)
    }

    /// Moves a branch to `head`, appending to its history; returns the head it replaced.
    pub(crate) async fn advance_branch(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        head: BundleId,
    ) -> Result<Option<BundleId>> {
        let author = self.author.clone();
        let (_, rec) = self
            .store
            .append::<BranchRecord, Error>(&keys::branch(repo.as_str(), branch.as_str()), |prev| {
                Ok(BranchRecord {
                    head: Some(head),
                    previous: prev.and_then(|p| p.head),
                    author: author.clone(),
                    time: Utc::now(),
                })
            })
            .await?;
        Ok(rec.previous)
    }

    /// Creates a branch, empty or starting at `from`.
    ///
    /// # Errors
    /// [`Error::BranchExists`], [`Error::BundleNotFound`]; a store error.
    pub async fn create_branch(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        from: Option<BundleId>,
    ) -> Result<Branch> {
        self.get_repo(repo).await?;
        if let Some(id) = &from {
            self.get_bundle(repo, id).await?;
        }
        let rec = BranchRecord {
            head: from,
            previous: None,
            author: self.author.clone(),
            time: Utc::now(),
        };
        match self
            .store
            .create_json(
                &keys::seq(&keys::branch(repo.as_str(), branch.as_str()), 1),
                &rec,
            )
            .await
        {
            Ok(()) => Ok(Branch {
                name: branch.clone(),
                head: from,
                updates: 1,
            }),
            Err(datamon_store::Error::AlreadyExists { .. }) => {
                // A deleted branch's name can be created again: a new record starts it anew.
                let deleted = self.branch_deletions(repo).await?;
                let prefix = keys::branch(repo.as_str(), branch.as_str());
                let last = self.store.last_record::<BranchRecord>(&prefix).await?;
                let is_deleted = last.as_ref().is_some_and(|(seq, _)| {
                    deleted
                        .get(branch.as_str())
                        .is_some_and(|d| d.contains(seq))
                });
                if !is_deleted {
                    return Err(Error::BranchExists {
                        repo: repo.to_string(),
                        branch: branch.to_string(),
                    });
                }
                let (seq, _) = self
                    .store
                    .append::<BranchRecord, Error>(&prefix, |_| Ok(rec.clone()))
                    .await?;
                Ok(Branch {
                    name: branch.clone(),
                    head: from,
                    updates: seq,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A branch's history, oldest first.
    ///
    /// # Errors
    /// [`Error::BranchNotFound`]; a store error.
    pub async fn branch_history(
        &self,
        repo: &RepoName,
        branch: &BranchName,
    ) -> Result<Vec<BranchRecord>> {
        let h: Vec<BranchRecord> = self
            .store
            .read_sequence(&keys::branch(repo.as_str(), branch.as_str()))
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        if h.is_empty() {
            return Err(Error::BranchNotFound {
                repo: repo.to_string(),
                branch: branch.to_string(),
            });
        }
        Ok(h)
    }

    /// All branches of a repo, sorted by name.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn list_branches(&self, repo: &RepoName) -> Result<Vec<Branch>> {
        self.get_repo(repo).await?;
        let deleted = self.branch_deletions(repo).await?;
        let mut out = Vec::new();
        for name in self.store.list_dirs(&keys::branches(repo.as_str())).await? {
            let Ok(branch) = name.parse::<BranchName>() else {
                continue;
            };
            if let Some((seq, r)) = self
                .store
                .last_record::<BranchRecord>(&keys::branch(repo.as_str(), &name))
                .await?
            {
                if deleted.get(&name).is_some_and(|d| d.contains(&seq)) {
                    continue;
                }
                out.push(Branch {
                    name: branch,
                    head: r.head,
                    updates: seq,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use std::collections::BTreeMap;

    use datamon_types::BundleStats;

    use super::*;
    use crate::OpenOptions;

    /// A writer killed between its branch append and its bundle record leaves a bundle that
    /// readers complete; one killed before its append leaves nothing visible.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_cut_after_the_branch_append_is_completed_by_readers() {
        let dm = Datamon::open("memory://refs-roll-forward", OpenOptions::default())
            .await
            .expect("open");
        let repo: RepoName = "r".parse().expect("name");
        let branch: BranchName = "main".parse().expect("name");
        dm.create_repo(&repo, "d").await.expect("repo");
        // A real tree for the bundles below, so that fsck can check them.
        let src = tempfile::tempdir().expect("tmp");
        std::fs::write(src.path().join("f"), b"data").expect("write");
        let ctx = crate::UploadContext {
            repo: repo.clone(),
            path: src.path().to_owned(),
            message: "tree".into(),
        };
        let opts = crate::UploadOptions {
            branch: Some("other".parse().expect("name")),
            ..Default::default()
        };
        let root = dm
            .upload(ctx, opts, &crate::NoProgress)
            .await
            .expect("upload")
            .bundle
            .root;
        let record = |id: BundleId| Bundle {
            id,
            repo: repo.clone(),
            parents: Vec::new(),
            branch: Some(branch.clone()),
            message: "m".into(),
            author: "a".into(),
            created_at: Utc::now(),
            root,
            stats: BundleStats::default(),
            meta: BTreeMap::new(),
        };
        let first = dm
            .commit_bundle(record(BundleId::generate()), &branch, None)
            .await
            .expect("commit");
        // Killed after step 2: staged record and branch append, no bundle record.
        let cut = record(BundleId::generate());
        dm.store
            .create_json(&keys::staged_bundle(repo.as_str(), &cut.id), &cut)
            .await
            .expect("stage");
        dm.advance_branch(&repo, &branch, cut.id)
            .await
            .expect("append");
        // The branch names it: it is listed (completed by the listing), checked clean, logged.
        let fsck = dm.fsck(false, &crate::NoProgress).await.expect("fsck");
        assert!(fsck.is_ok(), "{:?}", fsck.problems);
        let ids = dm.bundle_ids(&repo).await.expect("ids");
        assert!(ids.contains(&first.id) && ids.contains(&cut.id), "{ids:?}");
        let got = dm.get_bundle(&repo, &cut.id).await.expect("completed");
        assert_eq!(got.parents, vec![first.id]);
        assert!(
            dm.store
                .list(&keys::staged(repo.as_str()))
                .await
                .expect("list")
                .is_empty(),
            "the staged record is removed once completed"
        );
        let log = dm.log(&repo, Some(&branch), None).await.expect("log");
        assert_eq!(log.len(), 2);
        // Killed after step 1: staged only; the bundle does not exist.
        let staged = record(BundleId::generate());
        dm.store
            .create_json(&keys::staged_bundle(repo.as_str(), &staged.id), &staged)
            .await
            .expect("stage");
        let err = dm.get_bundle(&repo, &staged.id).await.expect_err("absent");
        assert!(matches!(err, Error::BundleNotFound { .. }), "{err}");
    }
}
