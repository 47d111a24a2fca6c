//! Paged views for browsing front ends (the web UI): one page of a repo's bundles, newest
//! first, without reading every bundle record.

use chrono::{DateTime, Utc};
use datamon_types::{Bundle, BundleId, RepoName};
use futures::{StreamExt, TryStreamExt};

use crate::{BundleQuery, Datamon, Result};

/// How many bundle records of a page are read at once.
const PAGE_FETCH_CONCURRENCY: usize = 32;

/// Which page of a repo's bundles [`Datamon::bundles_page`] returns, and the filters.
#[derive(Debug, Clone, Default)]
pub struct BundlePageQuery {
    /// Only bundles older than this one (the `next` of the previous page); `None`: the newest.
    pub before: Option<BundleId>,
    /// At most this many bundles (0 is taken as 1).
    pub limit: usize,
    /// Only bundles committed at or after this time (by their id's time, to the second).
    pub since: Option<DateTime<Utc>>,
    /// Only bundles committed at or before this time (by their id's time, to the second).
    pub until: Option<DateTime<Utc>>,
    /// Metadata keys that must have these values. Any such filter reads every bundle record
    /// (through the local catalog cache, as [`Datamon::find_bundles`]).
    pub meta: Vec<(String, String)>,
}

/// One page of a repo's bundles, newest first.
#[derive(Debug, Clone)]
pub struct BundlePage {
    /// The bundles of this page, newest first.
    pub bundles: Vec<Bundle>,
    /// How many bundles match the filters, over all pages.
    pub total: usize,
    /// The `before` of the next page; `None` on the last page.
    pub next: Option<BundleId>,
}

impl Datamon {
    /// One page of a repo's bundles matching `query`, newest first. Without a metadata filter
    /// it costs one listing of the repo's bundle keys and reads only the records of the page.
    ///
    /// # Errors
    /// [`crate::Error::RepoNotFound`]; a store error.
    pub async fn bundles_page(
        &self,
        repo: &RepoName,
        query: &BundlePageQuery,
    ) -> Result<BundlePage> {
        let limit = query.limit.max(1);
        let in_time = |id: &BundleId| {
            let t = id.timestamp_seconds();
            query.since.is_none_or(|s| t >= s.timestamp())
                && query.until.is_none_or(|u| t <= u.timestamp())
        };
        if !query.meta.is_empty() {
            let found = self
                .find_bundles(
                    repo,
                    &BundleQuery {
                        meta: query.meta.clone(),
                        since: None,
                    },
                )
                .await?;
            let matching: Vec<Bundle> = found.into_iter().filter(|b| in_time(&b.id)).collect();
            let total = matching.len();
            let mut page: Vec<Bundle> = matching
                .into_iter()
                .rev()
                .filter(|b| query.before.is_none_or(|x| b.id < x))
                .take(limit + 1)
                .collect();
            let next = (page.len() > limit).then(|| page[limit - 1].id);
            page.truncate(limit);
            return Ok(BundlePage {
                bundles: page,
                total,
                next,
            });
        }
        self.get_repo(repo).await?;
        let mut ids = self.bundle_ids(repo).await?;
        ids.retain(in_time);
        let total = ids.len();
        let end = match query.before {
            Some(b) => ids.partition_point(|x| *x < b),
            None => ids.len(),
        };
        let start = end.saturating_sub(limit);
        let next = (start > 0).then(|| ids[start]);
        let bundles: Vec<Bundle> = futures::stream::iter(
            ids[start..end]
                .iter()
                .rev()
                .map(|id| self.get_bundle(repo, id)),
        )
        .buffered(PAGE_FETCH_CONCURRENCY)
        .try_collect()
        .await?;
        Ok(BundlePage {
            bundles,
            total,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NoProgress, OpenOptions, UploadContext, UploadOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_walk_every_bundle_once_newest_first() {
        let dm = Datamon::open("memory://browse-pages", OpenOptions::default())
            .await
            .expect("open");
        let repo: RepoName = "r".parse().expect("name");
        dm.create_repo(&repo, "d").await.expect("repo");
        let src = tempfile::tempdir().expect("tmp");
        let mut made = Vec::new();
        for i in 0..5 {
            std::fs::create_dir_all(src.path()).expect("dir");
            #[allow(clippy::disallowed_methods)] // a test fixture
            std::fs::write(src.path().join("f"), format!("{i}")).expect("write");
            let ctx = UploadContext {
                repo: repo.clone(),
                path: src.path().to_owned(),
                message: format!("m{i}"),
            };
            let r = dm
                .upload(ctx, UploadOptions::default(), &NoProgress)
                .await
                .expect("upload");
            made.push(r.bundle.id);
        }
        made.reverse();
        let mut seen = Vec::new();
        let mut q = BundlePageQuery {
            limit: 2,
            ..BundlePageQuery::default()
        };
        loop {
            let page = dm.bundles_page(&repo, &q).await.expect("page");
            assert_eq!(page.total, 5);
            assert!(page.bundles.len() <= 2);
            seen.extend(page.bundles.iter().map(|b| b.id));
            match page.next {
                Some(n) => q.before = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, made, "every bundle once, newest first");
        let none = dm
            .bundles_page(
                &repo,
                &BundlePageQuery {
                    limit: 10,
                    until: Some(DateTime::<Utc>::from_timestamp(0, 0).expect("epoch")),
                    ..BundlePageQuery::default()
                },
            )
            .await
            .expect("page");
        assert_eq!((none.total, none.bundles.len()), (0, 0));
        let err = dm
            .bundles_page(&"nope".parse().expect("name"), &q)
            .await
            .expect_err("no repo");
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    }
}
