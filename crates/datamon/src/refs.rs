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
    /// Resolves a selector to a bundle id; the bundle is known to exist.
    ///
    /// # Errors
    /// A `*NotFound` error naming what is missing; a store error.
    pub async fn resolve(&self, repo: &RepoName, sel: &BundleSelector) -> Result<BundleId> {
        self.get_repo(repo).await?;
        match sel {
            BundleSelector::Id(id) => Ok(self.get_bundle(repo, id).await?.id),
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
    /// # Errors
    /// [`Error::BundleNotFound`]; a store error.
    pub async fn get_bundle(&self, repo: &RepoName, id: &BundleId) -> Result<Bundle> {
        match self.store.get_json(&keys::bundle(repo.as_str(), id)).await {
            Err(datamon_store::Error::NotFound { .. }) => {
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

    /// The ids of a repo's committed bundles, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn bundle_ids(&self, repo: &RepoName) -> Result<Vec<BundleId>> {
        let prefix = keys::bundles(repo.as_str());
        let mut ids: Vec<BundleId> = self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// A repo's bundles, oldest first.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn list_bundles(&self, repo: &RepoName) -> Result<Vec<Bundle>> {
        self.get_repo(repo).await?;
        let ids = self.bundle_ids(repo).await?;
        futures::stream::iter(ids.iter().map(|id| self.get_bundle(repo, id)))
            .buffered(32)
            .try_collect()
            .await
    }

    /// The current value of a label.
    ///
    /// # Errors
    /// [`Error::LabelNotFound`]; a store error.
    pub async fn get_label(&self, repo: &RepoName, label: &LabelName) -> Result<LabelRecord> {
        let found = self
            .store
            .last_record::<LabelRecord>(&keys::label(repo.as_str(), label.as_str()))
            .await?
            .map(|(_, r)| r);
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
        let mut out = Vec::new();
        for name in self.store.list_dirs(&keys::labels(repo.as_str())).await? {
            let Ok(label) = name.parse::<LabelName>() else {
                continue;
            };
            if let Some((_, r)) = self
                .store
                .last_record(&keys::label(repo.as_str(), &name))
                .await?
            {
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
        Ok(self
            .store
            .last_record::<BranchRecord>(&keys::branch(repo.as_str(), branch.as_str()))
            .await?
            .and_then(|(_, r)| r.head))
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
            Err(datamon_store::Error::AlreadyExists { .. }) => Err(Error::BranchExists {
                repo: repo.to_string(),
                branch: branch.to_string(),
            }),
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
