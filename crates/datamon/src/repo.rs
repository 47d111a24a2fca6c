//! Repos: create, get, list.

use chrono::Utc;
use datamon_store::keys;
use datamon_types::{Repo, RepoName};

use crate::{Datamon, Error, Result};

impl Datamon {
    /// Creates a repo.
    ///
    /// # Errors
    /// [`Error::RepoExists`] when the name is taken; a store error.
    pub async fn create_repo(&self, name: &RepoName, description: &str) -> Result<Repo> {
        let repo = Repo {
            name: name.clone(),
            description: description.to_owned(),
            created_at: Utc::now(),
            created_by: self.author.clone(),
        };
        match self
            .store
            .create_json(&keys::repo(name.as_str()), &repo)
            .await
        {
            Ok(()) => Ok(repo),
            Err(datamon_store::Error::AlreadyExists { .. }) => Err(Error::RepoExists {
                repo: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a repo.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::RepoDeleted`]; a store error.
    pub async fn get_repo(&self, name: &RepoName) -> Result<Repo> {
        let key = keys::repo(name.as_str());
        let (r, t) = futures::join!(self.store.get_json::<Repo>(&key), self.repo_tombstone(name));
        if let Some(t) = t? {
            if r.is_ok() {
                return Err(Error::RepoDeleted {
                    repo: name.to_string(),
                    renamed_to: t.renamed_to,
                });
            }
        }
        match r {
            Ok(r) => Ok(r),
            Err(datamon_store::Error::NotFound { .. }) => Err(Error::RepoNotFound {
                repo: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists all repos, sorted by name.
    ///
    /// # Errors
    /// A store error.
    pub async fn list_repos(&self) -> Result<Vec<Repo>> {
        let mut out = Vec::new();
        for name in self.store.list_dirs(keys::REPOS).await? {
            match self.store.get_json::<Repo>(&keys::repo(&name)).await {
                Ok(r) if self.repo_tombstone(&r.name).await?.is_some() => {}
                Ok(r) => out.push(r),
                Err(datamon_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}
