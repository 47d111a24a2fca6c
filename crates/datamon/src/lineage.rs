//! Lineage and history: which run produced a bundle and from which inputs, which runs consumed
//! it, a branch's log, and metadata queries over bundles.
//!
//! Runs are read through the local catalog cache, so a query costs one listing of `runs/` plus
//! the records not seen before; a branch log and a bundle query likewise list
//! `repos/<repo>/bundles/` once.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use datamon_store::keys;
use datamon_types::{BranchName, Bundle, BundleId, RepoName, Run, RunId, DEFAULT_BRANCH};
use futures::StreamExt;
use serde::Serialize;

use crate::{Datamon, Error, Result};

/// The bundle metadata key under which `run exec` records the run that produced a bundle.
pub const META_RUN: &str = "datamon.run";
/// The bundle metadata key under which `run exec` records the step that produced a bundle.
pub const META_STEP: &str = "datamon.step";

/// Which way to follow lineage from a bundle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineageDirection {
    /// Producing runs and their inputs, recursively.
    Upstream,
    /// Consuming runs and their outputs, recursively.
    Downstream,
    /// Both.
    #[default]
    Both,
}

/// How to follow lineage.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineageOptions {
    /// Which way.
    pub direction: LineageDirection,
    /// How many runs deep (default: no limit).
    pub depth: Option<usize>,
}

/// How a bundle and a run are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// The run read the bundle.
    Input,
    /// The run wrote the bundle.
    Output,
}

/// One link of a lineage graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LineageEdge {
    /// Input (bundle -> run) or output (run -> bundle).
    pub kind: EdgeKind,
    /// The run.
    pub run: RunId,
    /// The bundle's repo.
    pub repo: RepoName,
    /// The bundle.
    pub bundle: BundleId,
}

/// A bundle of a lineage graph; `record` is `None` when the bundle record is gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineageBundle {
    /// The repo.
    pub repo: RepoName,
    /// The bundle id.
    pub id: BundleId,
    /// The bundle record.
    pub record: Option<Bundle>,
    /// Whether the bundle was deleted (its record stays readable until gc).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The bundle that replaced it, when a history rewrite deleted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<BundleId>,
}

/// The lineage of one bundle: bundles and runs linked by input and output edges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lineage {
    /// The bundle asked about.
    pub repo: RepoName,
    /// Its id.
    pub bundle: BundleId,
    /// Every bundle in the graph (the one asked about first).
    pub bundles: Vec<LineageBundle>,
    /// Every run in the graph, oldest first.
    pub runs: Vec<Run>,
    /// Every edge, sorted.
    pub edges: Vec<LineageEdge>,
}

/// One bundle of a branch's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    /// The bundle.
    pub bundle: Bundle,
    /// The run that produced it, if one was recorded.
    pub run: Option<RunId>,
}

/// Filters for [`Datamon::find_bundles`]; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct BundleQuery {
    /// Metadata keys that must have these values.
    pub meta: Vec<(String, String)>,
    /// Only bundles committed at or after this time.
    pub since: Option<DateTime<Utc>>,
}

type Key = (RepoName, BundleId);

/// Up to this many entries, `log` reads bundle records one by one instead of syncing the catalog.
const SHORT_LOG: usize = 100;

/// Runs indexed by the bundles they read and wrote.
struct RunGraph {
    runs: HashMap<RunId, Run>,
    producers: HashMap<Key, Vec<RunId>>,
    consumers: HashMap<Key, Vec<RunId>>,
}

impl RunGraph {
    fn new(all: Vec<Run>) -> Self {
        let mut producers: HashMap<Key, Vec<RunId>> = HashMap::new();
        let mut consumers: HashMap<Key, Vec<RunId>> = HashMap::new();
        for r in &all {
            for o in &r.outputs {
                producers
                    .entry((o.repo.clone(), o.bundle))
                    .or_default()
                    .push(r.id);
            }
            for i in &r.inputs {
                consumers
                    .entry((i.repo.clone(), i.bundle))
                    .or_default()
                    .push(r.id);
            }
        }
        RunGraph {
            runs: all.into_iter().map(|r| (r.id, r)).collect(),
            producers,
            consumers,
        }
    }
}

impl Datamon {
    /// The lineage of a bundle: upstream, the runs that produced it and their inputs,
    /// recursively; downstream, the runs that read it and what they wrote, recursively.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`]; a store error.
    pub async fn lineage(
        &self,
        repo: &RepoName,
        bundle: &BundleId,
        opts: LineageOptions,
    ) -> Result<Lineage> {
        self.get_repo(repo).await?;
        // The lineage of a deleted bundle is still asked for (which runs used it?).
        let root = self.get_bundle_record(repo, bundle).await?;
        let graph = RunGraph::new(self.all_runs().await?);
        let depth = opts.depth.unwrap_or(usize::MAX);
        let mut edges: BTreeSet<LineageEdge> = BTreeSet::new();
        let mut runs: HashSet<RunId> = HashSet::new();
        // A bundle that a history rewrite made stands in for the bundles it replaced: the
        // runs that read or wrote those are its lineage too.
        let mut starts: Vec<Key> = vec![(repo.clone(), *bundle)];
        starts.extend(
            self.replaced_by_rewrite(repo, bundle)
                .await?
                .into_iter()
                .map(|old| (repo.clone(), old)),
        );
        let mut bundles: Vec<Key> = starts.clone();
        let mut seen_bundles: HashSet<Key> = bundles.iter().cloned().collect();
        let directions: &[bool] = match opts.direction {
            LineageDirection::Upstream => &[true],
            LineageDirection::Downstream => &[false],
            LineageDirection::Both => &[true, false],
        };
        for &up in directions {
            let mut queue: VecDeque<(Key, usize)> = starts.iter().map(|k| (k.clone(), 0)).collect();
            let mut visited: HashSet<RunId> = HashSet::new();
            while let Some((key, d)) = queue.pop_front() {
                if d >= depth {
                    continue;
                }
                let linked = if up {
                    graph.producers.get(&key)
                } else {
                    graph.consumers.get(&key)
                };
                for run_id in linked.into_iter().flatten() {
                    let Some(run) = graph.runs.get(run_id) else {
                        continue;
                    };
                    edges.insert(LineageEdge {
                        kind: if up {
                            EdgeKind::Output
                        } else {
                            EdgeKind::Input
                        },
                        run: run.id,
                        repo: key.0.clone(),
                        bundle: key.1,
                    });
                    runs.insert(run.id);
                    if !visited.insert(run.id) {
                        continue;
                    }
                    let next: Vec<(EdgeKind, Key)> = if up {
                        run.inputs
                            .iter()
                            .map(|i| (EdgeKind::Input, (i.repo.clone(), i.bundle)))
                            .collect()
                    } else {
                        run.outputs
                            .iter()
                            .map(|o| (EdgeKind::Output, (o.repo.clone(), o.bundle)))
                            .collect()
                    };
                    for (kind, k) in next {
                        edges.insert(LineageEdge {
                            kind,
                            run: run.id,
                            repo: k.0.clone(),
                            bundle: k.1,
                        });
                        if seen_bundles.insert(k.clone()) {
                            bundles.push(k.clone());
                        }
                        queue.push_back((k, d + 1));
                    }
                }
            }
        }
        let root = &root;
        let records: Vec<LineageBundle> =
            futures::stream::iter(bundles.into_iter().map(|(r, id)| async move {
                let record = if r == root.repo && id == root.id {
                    Some(root.clone())
                } else {
                    match self.get_bundle_record(&r, &id).await {
                        Ok(b) => Some(b),
                        Err(e) if e.kind() == crate::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    }
                };
                let tomb = self.bundle_tombstone(&r, &id).await?;
                Ok(LineageBundle {
                    repo: r,
                    id,
                    record,
                    deleted: tomb.is_some(),
                    replaced_by: tomb.and_then(|t| t.replaced_by),
                })
            }))
            .buffered(32)
            .collect::<Vec<Result<LineageBundle>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let mut runs: Vec<Run> = runs
            .into_iter()
            .filter_map(|id| graph.runs.get(&id).cloned())
            .collect();
        runs.sort_by_key(|r| r.id);
        Ok(Lineage {
            repo: repo.clone(),
            bundle: *bundle,
            bundles: records,
            runs,
            edges: edges.into_iter().collect(),
        })
    }

    /// All bundle records of a repo, oldest first, through the local catalog cache.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn all_bundles(&self, repo: &RepoName) -> Result<Vec<Bundle>> {
        let deleted = self.deleted_bundle_ids(repo).await?;
        let mut all = self.all_bundle_records(repo).await?;
        all.retain(|b| !deleted.contains(&b.id));
        Ok(all)
    }

    /// Every bundle record of a repo, deleted or not, oldest first, through the catalog.
    pub(crate) async fn all_bundle_records(&self, repo: &RepoName) -> Result<Vec<Bundle>> {
        self.get_repo(repo).await?;
        Ok(self
            .sync_records::<Bundle>(&keys::bundles(repo.as_str()), &format!("bundles-{repo}"))
            .await?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// A repo's bundles matching `query`, oldest first.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`]; a store error.
    pub async fn find_bundles(&self, repo: &RepoName, query: &BundleQuery) -> Result<Vec<Bundle>> {
        let mut all = self.all_bundles(repo).await?;
        all.retain(|b| {
            query.since.is_none_or(|t| b.created_at >= t)
                && query
                    .meta
                    .iter()
                    .all(|(k, v)| b.meta.get(k).is_some_and(|x| x == v))
        });
        Ok(all)
    }

    /// The history of a branch (default `main`), newest first: each bundle from the head along
    /// its first parent, with the run that produced it. At most `limit` entries.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::BranchNotFound`]; a store error.
    pub async fn log(
        &self,
        repo: &RepoName,
        branch: Option<&BranchName>,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>> {
        let default: BranchName = DEFAULT_BRANCH
            .parse()
            .expect("the default branch name is valid");
        let branch = branch.unwrap_or(&default);
        self.get_repo(repo).await?;
        let head = self
            .branch_head(repo, branch)
            .await?
            .ok_or_else(|| Error::BranchNotFound {
                repo: repo.to_string(),
                branch: branch.to_string(),
            })?;
        // A short log reads its few bundle records directly; a long one syncs the repo's catalog.
        let short = limit.is_some_and(|n| n <= SHORT_LOG);
        let bundles = async {
            if short {
                Ok(Vec::new())
            } else {
                self.all_bundle_records(repo).await
            }
        };
        let (bundles, runs, deleted) =
            futures::try_join!(bundles, self.all_runs(), self.deleted_bundle_ids(repo))?;
        let by_id: HashMap<BundleId, Bundle> = bundles.into_iter().map(|b| (b.id, b)).collect();
        let graph = RunGraph::new(runs);
        let mut out = Vec::new();
        let mut next = Some(head);
        let mut seen = HashSet::new();
        while let Some(id) = next {
            if out.len() >= limit.unwrap_or(usize::MAX) || !seen.insert(id) {
                break;
            }
            let bundle = match by_id.get(&id) {
                Some(b) => b.clone(),
                None => self.get_bundle_record(repo, &id).await?,
            };
            // A deleted bundle is left out of the log; the walk goes on through its parent.
            if deleted.contains(&id) {
                next = bundle.parents.first().copied();
                continue;
            }
            let run = graph
                .producers
                .get(&(repo.clone(), id))
                .and_then(|r| r.last().copied())
                .or_else(|| bundle.meta.get(META_RUN).and_then(|r| r.parse().ok()));
            next = bundle.parents.first().copied();
            out.push(LogEntry { bundle, run });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datamon_types::{BundleStats, CodeVersion, Hash, RunInput, RunOutput, RunStatus};

    use super::*;
    use crate::{ErrorKind, OpenOptions, RunQuery};

    async fn bundle(dm: &Datamon, repo: &str) -> Key {
        let repo: RepoName = repo.parse().unwrap();
        let b = Bundle {
            id: BundleId::generate(),
            repo: repo.clone(),
            parents: vec![],
            branch: None,
            message: "m".into(),
            author: "a".into(),
            created_at: Utc::now(),
            root: Hash::of(b"root"),
            stats: BundleStats::default(),
            meta: BTreeMap::new(),
        };
        dm.store
            .create_json(&keys::bundle(repo.as_str(), &b.id), &b)
            .await
            .unwrap();
        (repo, b.id)
    }

    fn run(step: &str, inputs: &[&Key], outputs: &[&Key]) -> Run {
        Run {
            id: RunId::generate(),
            step: step.into(),
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            command: vec![],
            code: CodeVersion::default(),
            host: String::new(),
            user: String::new(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            params: BTreeMap::new(),
            inputs: inputs
                .iter()
                .map(|(r, b)| RunInput {
                    repo: r.clone(),
                    bundle: *b,
                    selector: None,
                    path: None,
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|(r, b)| RunOutput {
                    repo: r.clone(),
                    bundle: *b,
                })
                .collect(),
            metrics: BTreeMap::new(),
            meta: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn runs_lineage_and_catalog() {
        let cache = tempfile::tempdir().unwrap();
        let dm = Datamon::open(
            "memory://lineage",
            OpenOptions {
                cache_dir: Some(cache.path().to_owned()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for r in ["a", "b", "c"] {
            dm.create_repo(&r.parse().unwrap(), "").await.unwrap();
        }
        let a1 = bundle(&dm, "a").await;
        let b1 = bundle(&dm, "b").await;
        let c1 = bundle(&dm, "c").await;
        let r1 = run("one", &[&a1], &[&b1]);
        let r2 = run("two", &[&b1], &[&c1]);
        dm.record_run(&r1).await.unwrap();
        dm.record_run(&r2).await.unwrap();
        // The same record again is a no-op (a retried write); another record under the same
        // id is refused.
        dm.record_run(&r1).await.unwrap();
        let mut other = r1.clone();
        other.step = "other".into();
        assert_eq!(
            dm.record_run(&other).await.unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        let missing = run("x", &[&(a1.0.clone(), BundleId::generate())], &[]);
        assert_eq!(
            dm.record_run(&missing).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            dm.get_run(&RunId::generate()).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );

        let all = dm.list_runs(&RunQuery::default()).await.unwrap();
        assert_eq!(all, vec![r1.clone(), r2.clone()]);
        // Served from the cache the second time, same answer.
        let again = dm.list_runs(&RunQuery::default()).await.unwrap();
        assert_eq!(again, all);
        let cached = std::fs::read_to_string(
            cache
                .path()
                .join("catalog")
                .join(&dm.store.config().id)
                .join("runs.ndjson"),
        )
        .unwrap();
        assert_eq!(cached.lines().count(), 2);
        let step = RunQuery {
            step: Some("two".into()),
            ..Default::default()
        };
        assert_eq!(dm.list_runs(&step).await.unwrap(), vec![r2.clone()]);

        let up = dm
            .lineage(
                &c1.0,
                &c1.1,
                LineageOptions {
                    direction: LineageDirection::Upstream,
                    depth: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(up.runs, vec![r1.clone(), r2.clone()]);
        assert_eq!(up.edges.len(), 4);
        assert_eq!(up.bundles.len(), 3);
        let one = dm
            .lineage(
                &c1.0,
                &c1.1,
                LineageOptions {
                    direction: LineageDirection::Upstream,
                    depth: Some(1),
                },
            )
            .await
            .unwrap();
        assert_eq!(one.runs, vec![r2.clone()]);
        let down = dm
            .lineage(
                &a1.0,
                &a1.1,
                LineageOptions {
                    direction: LineageDirection::Downstream,
                    depth: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(down.runs, vec![r1, r2]);
        let none = dm
            .lineage(
                &a1.0,
                &a1.1,
                LineageOptions {
                    direction: LineageDirection::Upstream,
                    depth: None,
                },
            )
            .await
            .unwrap();
        assert!(none.runs.is_empty() && none.edges.is_empty());
    }
}
