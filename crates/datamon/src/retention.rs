//! Retention (the original datamon's `repo squash`): keep some bundles of a repo, delete the
//! rest.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use datamon_types::{Bundle, BundleId, RepoName};

use crate::{Datamon, DeleteOptions, Result};

/// Which bundles to keep; a bundle kept by any rule is kept. Branch heads are always kept
/// (delete the branch first to let its head go).
#[derive(Debug, Clone, Default)]
pub struct RetentionRules {
    /// Keep the bundles that labels point at.
    pub keep_labelled: bool,
    /// Keep the newest N bundles.
    pub keep_newest: Option<usize>,
    /// Keep the bundles committed at or after this time.
    pub keep_since: Option<DateTime<Utc>>,
    /// Keep the bundles whose metadata has all of these `key = value` pairs.
    pub keep_meta: Vec<(String, String)>,
}

/// What a retention pass keeps and deletes (the dry run's answer, or what was done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Bundles kept, oldest first.
    pub keep: Vec<BundleId>,
    /// Bundles deleted (or, dry, to delete), oldest first, with their records.
    pub delete: Vec<Bundle>,
}

impl Datamon {
    /// Applies retention rules to a repo: every bundle no rule keeps is deleted (with
    /// [`Datamon::delete_bundle`]); `dry_run` only says which.
    ///
    /// # Errors
    /// [`crate::Error::RepoNotFound`]; a store error.
    pub async fn apply_retention(
        &self,
        repo: &RepoName,
        rules: &RetentionRules,
        dry_run: bool,
    ) -> Result<RetentionPlan> {
        let bundles = self.list_bundles(repo).await?;
        let mut keep: BTreeSet<BundleId> = BTreeSet::new();
        for b in self.list_branches(repo).await? {
            keep.extend(b.head);
        }
        if rules.keep_labelled {
            keep.extend(
                self.list_labels(repo)
                    .await?
                    .into_iter()
                    .map(|(_, r)| r.bundle),
            );
        }
        if let Some(n) = rules.keep_newest {
            keep.extend(bundles.iter().rev().take(n).map(|b| b.id));
        }
        for b in &bundles {
            let since = rules.keep_since.is_some_and(|t| b.created_at >= t);
            let meta = !rules.keep_meta.is_empty()
                && rules
                    .keep_meta
                    .iter()
                    .all(|(k, v)| b.meta.get(k).is_some_and(|x| x == v));
            if since || meta {
                keep.insert(b.id);
            }
        }
        let (kept, delete): (Vec<Bundle>, Vec<Bundle>) =
            bundles.into_iter().partition(|b| keep.contains(&b.id));
        if !dry_run {
            // Labels that a rule did not keep are removed with their bundles.
            let opts = DeleteOptions {
                remove_refs: true,
                reason: Some("retention".into()),
            };
            for b in &delete {
                self.delete_bundle(repo, &b.id, &opts).await?;
            }
        }
        Ok(RetentionPlan {
            keep: kept.into_iter().map(|b| b.id).collect(),
            delete,
        })
    }
}
