//! Small additions for the SDK front ends (the Python package): moving a branch with a guard.

use chrono::Utc;
use datamon_store::keys;
use datamon_types::{BranchName, BranchRecord, BundleId, RepoName};

use crate::{Datamon, Error, Result};

impl Datamon {
    /// Points a branch at `head` (an existing bundle), appending to its history; creates the
    /// branch when it does not exist. With `expect`, only if the branch head is currently
    /// `expect` (`Some(None)`: only if the branch has no head, or does not exist); concurrent
    /// setters without `expect` all succeed, in some order, and all appear in the history.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`]; an error of kind `Conflict` naming the repo, the branch, the
    /// expected and the actual head when the guard fails; a store error.
    pub async fn set_branch(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        head: &BundleId,
        expect: Option<Option<BundleId>>,
    ) -> Result<BranchRecord> {
        self.get_bundle(repo, head).await?;
        let author = self.author.clone();
        let prefix = keys::branch(repo.as_str(), branch.as_str());
        let (_, rec) = self
            .store
            .append::<BranchRecord, Error>(&prefix, |prev| {
                let current = prev.and_then(|p| p.head);
                if let Some(expected) = expect {
                    if expected != current {
                        let show = |b: Option<BundleId>| {
                            b.map_or_else(|| "none".to_owned(), |b| b.to_string())
                        };
                        return Err(Error::Store(datamon_store::Error::Precondition {
                            key: prefix.clone(),
                        })
                        .context(format!(
                            "branch {:?} of repo {:?} points at {} but {} was expected: someone moved it",
                            branch.as_str(),
                            repo.as_str(),
                            show(current),
                            show(expected)
                        )));
                    }
                }
                Ok(BranchRecord {
                    head: Some(*head),
                    previous: current,
                    author: author.clone(),
                    time: Utc::now(),
                })
            })
            .await?;
        Ok(rec)
    }
}
