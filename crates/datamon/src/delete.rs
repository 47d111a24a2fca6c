//! Deleting bundles, labels, branches and repos, and renaming repos.
//!
//! A store is append-only until garbage collection, so a deletion is itself a write-once
//! record (a *tombstone*, see `docs/format/layout.md`, "Deletion"): readers see it at once
//! (every read of a bundle checks its tombstone; every listing subtracts them) and nothing is
//! removed. `datamon gc` ([`crate::gc`]) later reclaims the bytes no live bundle needs.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use datamon_store::keys;
use datamon_types::{BranchName, BranchRecord, Bundle, BundleId, LabelName, Repo, RepoName};
use serde::{Deserialize, Serialize};

use crate::{Datamon, Error, Result};

/// The record that marks a bundle or repo deleted (or a repo renamed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Who deleted it.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Why, as the deleter said (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a renamed repo: its new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
    /// For a bundle rewritten without some paths: the bundle that replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<BundleId>,
}

/// How [`Datamon::delete_bundle`] treats the refs that name the bundle.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete the labels and branches that name the bundle too (otherwise they block it).
    pub remove_refs: bool,
    /// Why (kept in the tombstone).
    pub reason: Option<String>,
}

/// What [`Datamon::delete_bundle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteReport {
    /// The deleted bundle.
    pub bundle: BundleId,
    /// Labels deleted with it.
    pub labels: Vec<LabelName>,
    /// Branches deleted with it.
    pub branches: Vec<BranchName>,
}

/// Parses `<name>/<seq>` keys under a deletions prefix into name -> deleted sequence numbers.
fn parse_deletions(prefix: &str, listed: &[(String, u64)]) -> HashMap<String, HashSet<u64>> {
    let mut out: HashMap<String, HashSet<u64>> = HashMap::new();
    for (k, _) in listed {
        let Some(rest) = k.strip_prefix(prefix) else {
            continue;
        };
        let Some((name, seq)) = rest.split_once('/') else {
            continue;
        };
        if let Ok(seq) = seq.parse::<u64>() {
            out.entry(name.to_owned()).or_default().insert(seq);
        }
    }
    out
}

impl Datamon {
    pub(crate) fn tombstone(&self, reason: Option<String>) -> Tombstone {
        Tombstone {
            author: self.author.clone(),
            time: Utc::now(),
            reason,
            renamed_to: None,
            replaced_by: None,
        }
    }

    /// The tombstone of a bundle, if it was deleted.
    ///
    /// # Errors
    /// A store error.
    pub async fn bundle_tombstone(
        &self,
        repo: &RepoName,
        id: &BundleId,
    ) -> Result<Option<Tombstone>> {
        match self
            .store
            .get_json(&keys::bundle_tombstone(repo.as_str(), id))
            .await
        {
            Ok(t) => Ok(Some(t)),
            Err(datamon_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The ids of a repo's deleted bundles (one listing).
    ///
    /// # Errors
    /// A store error.
    pub async fn deleted_bundle_ids(&self, repo: &RepoName) -> Result<HashSet<BundleId>> {
        let prefix = keys::bundle_tombstones(repo.as_str());
        Ok(self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
            .collect())
    }

    /// The error for a deleted bundle.
    pub(crate) fn deleted_error(repo: &RepoName, id: &BundleId, t: &Tombstone) -> Error {
        Error::BundleDeleted {
            repo: repo.to_string(),
            id: *id,
            author: t.author.clone(),
            time: t.time.to_rfc3339(),
            replaced_by: t.replaced_by,
        }
    }

    /// Label name -> the sequence numbers of its deleted records.
    pub(crate) async fn label_deletions(
        &self,
        repo: &RepoName,
    ) -> Result<HashMap<String, HashSet<u64>>> {
        let prefix = keys::label_deletions(repo.as_str());
        Ok(parse_deletions(&prefix, &self.store.list(&prefix).await?))
    }

    /// Branch name -> the sequence numbers of its deleted records.
    pub(crate) async fn branch_deletions(
        &self,
        repo: &RepoName,
    ) -> Result<HashMap<String, HashSet<u64>>> {
        let prefix = keys::branch_deletions(repo.as_str());
        Ok(parse_deletions(&prefix, &self.store.list(&prefix).await?))
    }

    /// Whether record `seq` of a label or branch was deleted (one HEAD request).
    pub(crate) async fn ref_deleted(&self, key: &str) -> Result<bool> {
        match self.store.size(key).await {
            Ok(_) => Ok(true),
            Err(datamon_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The labels and branches that currently name a bundle.
    ///
    /// # Errors
    /// A store error.
    pub async fn refs_to(
        &self,
        repo: &RepoName,
        id: &BundleId,
    ) -> Result<(Vec<LabelName>, Vec<BranchName>)> {
        let labels = self
            .list_labels(repo)
            .await?
            .into_iter()
            .filter(|(_, r)| r.bundle == *id)
            .map(|(n, _)| n)
            .collect();
        let branches = self
            .list_branches(repo)
            .await?
            .into_iter()
            .filter(|b| b.head == Some(*id))
            .map(|b| b.name)
            .collect();
        Ok((labels, branches))
    }

    /// Deletes a bundle: writes its tombstone, after which it is not listed, cannot be read,
    /// downloaded or mounted, and asking for it says it was deleted. Labels and branches that
    /// name it refuse the deletion ([`Error::BundleReferenced`]) unless `opts.remove_refs`,
    /// which deletes them first. Its bytes stay until garbage collection.
    ///
    /// A label set to the bundle while it is being deleted may survive it; reading that label's
    /// bundle then says it was deleted.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`], [`Error::BundleDeleted`], [`Error::BundleReferenced`]; a
    /// store error.
    pub async fn delete_bundle(
        &self,
        repo: &RepoName,
        id: &BundleId,
        opts: &DeleteOptions,
    ) -> Result<DeleteReport> {
        self.get_bundle(repo, id).await?;
        let (labels, branches) = self.refs_to(repo, id).await?;
        let referenced = !labels.is_empty() || !branches.is_empty();
        if referenced && !opts.remove_refs {
            let refs = labels
                .iter()
                .map(|l| format!("label {l}"))
                .chain(branches.iter().map(|b| format!("branch {b}")))
                .collect();
            return Err(Error::BundleReferenced {
                repo: repo.to_string(),
                id: *id,
                refs,
            });
        }
        for l in &labels {
            self.delete_label(repo, l).await?;
        }
        for b in &branches {
            self.delete_branch(repo, b).await?;
        }
        match self
            .store
            .create_json(
                &keys::bundle_tombstone(repo.as_str(), id),
                &self.tombstone(opts.reason.clone()),
            )
            .await
        {
            // A concurrent delete of the same bundle won: it is deleted either way.
            Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.sync().await?;
        Ok(DeleteReport {
            bundle: *id,
            labels,
            branches,
        })
    }

    /// Deletes a label (its current value; setting it again brings it back with a new
    /// history entry). Its history stays readable.
    ///
    /// # Errors
    /// [`Error::LabelNotFound`]; a store error.
    pub async fn delete_label(&self, repo: &RepoName, label: &LabelName) -> Result<()> {
        let prefix = keys::label(repo.as_str(), label.as_str());
        let Some((seq, _)) = self.store.last_record::<serde_json::Value>(&prefix).await? else {
            self.get_repo(repo).await?;
            return Err(Error::LabelNotFound {
                repo: repo.to_string(),
                label: label.to_string(),
            });
        };
        let key = keys::label_deletion(repo.as_str(), label.as_str(), seq);
        if self.ref_deleted(&key).await? {
            return Err(Error::LabelNotFound {
                repo: repo.to_string(),
                label: label.to_string(),
            });
        }
        self.create_marker(&key).await
    }

    /// Deletes a branch (its bundles stay; uploading to the name again starts it anew).
    ///
    /// # Errors
    /// [`Error::BranchNotFound`]; a store error.
    pub async fn delete_branch(&self, repo: &RepoName, branch: &BranchName) -> Result<()> {
        self.get_repo(repo).await?;
        let prefix = keys::branch(repo.as_str(), branch.as_str());
        let not_found = || Error::BranchNotFound {
            repo: repo.to_string(),
            branch: branch.to_string(),
        };
        let Some((seq, _)) = self.store.last_record::<BranchRecord>(&prefix).await? else {
            return Err(not_found());
        };
        let key = keys::branch_deletion(repo.as_str(), branch.as_str(), seq);
        if self.ref_deleted(&key).await? {
            return Err(not_found());
        }
        self.create_marker(&key).await
    }

    async fn create_marker(&self, key: &str) -> Result<()> {
        match self.store.create_json(key, &self.tombstone(None)).await {
            Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The tombstone of a repo, if it was deleted or renamed.
    ///
    /// # Errors
    /// A store error.
    pub async fn repo_tombstone(&self, repo: &RepoName) -> Result<Option<Tombstone>> {
        match self
            .store
            .get_json(&keys::repo_tombstone(repo.as_str()))
            .await
        {
            Ok(t) => Ok(Some(t)),
            Err(datamon_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a repo: it is no longer listed or opened, and its bundles are garbage for gc
    /// (run records that name them keep resolving them). Its name stays taken.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::RepoDeleted`]; a store error.
    pub async fn delete_repo(&self, repo: &RepoName, reason: Option<String>) -> Result<()> {
        self.get_repo(repo).await?;
        match self
            .store
            .create_json(
                &keys::repo_tombstone(repo.as_str()),
                &self.tombstone(reason),
            )
            .await
        {
            Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.store.sync().await?)
    }

    /// Renames a repo: copies its records (bundles with their ids, deletions, the full history
    /// of every label and branch) under the new name, then writes the old name's tombstone,
    /// which names the new one. Bundle data is shared, not copied. Run records naming the old
    /// repo keep resolving its bundles under the old name.
    ///
    /// Commits to the old name while the rename runs may be left behind under the old name;
    /// rename a repo nobody is writing to.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::RepoDeleted`], [`Error::RepoExists`]; a store error.
    pub async fn rename_repo(&self, from: &RepoName, to: &RepoName) -> Result<Repo> {
        let old = self.get_repo(from).await?;
        if self.repo_tombstone(to).await?.is_some() {
            return Err(Error::RepoExists {
                repo: to.to_string(),
            });
        }
        let repo = self.create_repo(to, &old.description).await?;
        // Bundles, under the new name.
        for (key, _) in self.store.list(&keys::bundles(from.as_str())).await? {
            let mut b: Bundle = self.store.get_json(&key).await?;
            b.repo = to.clone();
            self.create_copy(&keys::bundle(to.as_str(), &b.id), &b)
                .await?;
        }
        // Every other record, byte for byte, under the new prefix.
        let (src, dst) = (format!("repos/{from}/"), format!("repos/{to}/"));
        for sub in [
            "deleted/",
            "labels/",
            "branches/",
            "label-deletions/",
            "branch-deletions/",
            "rewrites/",
        ] {
            for (key, _) in self.store.list(&format!("{src}{sub}")).await? {
                let value: serde_json::Value = self.store.get_json(&key).await?;
                let rest = key.strip_prefix(&src).expect("listed under the prefix");
                self.create_copy(&format!("{dst}{rest}"), &value).await?;
            }
        }
        let mut t = self.tombstone(None);
        t.renamed_to = Some(to.to_string());
        self.store.sync().await?;
        match self
            .store
            .create_json(&keys::repo_tombstone(from.as_str()), &t)
            .await
        {
            Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.sync().await?;
        Ok(repo)
    }

    async fn create_copy<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        match self.store.create_json(key, value).await {
            Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
