//! Runs: recording pipeline runs, reading them back, and "what changed?" between two runs.
//!
//! A run is one write-once record, `runs/<run-id>.json`, created with create-if-absent after
//! every bundle it names exists (its outputs are uploaded first). Listing goes through the local
//! catalog cache (see `catalog.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use datamon_store::keys;
use datamon_types::{
    BranchName, BundleId, CodeVersion, LabelName, RepoName, Run, RunId, RunInput, RunOutput,
};
use serde::Serialize;

use crate::{BundleSelector, Change, Datamon, Error, Result};

/// An input of a run as written on a command line: `REPO[@SELECTOR][:PATH]`, where SELECTOR is
/// a bundle id, a label or a branch (`label:NAME` or `branch:NAME` to say which), and PATH a
/// file or directory inside the bundle. Without a selector, the repo's latest bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The repo.
    pub repo: RepoName,
    /// The selector text, if any.
    pub selector: Option<String>,
    /// The part of the bundle to read.
    pub path: Option<String>,
}

impl FromStr for InputSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "input {s:?}: {why}; expected REPO[@SELECTOR][:PATH], e.g. images@latest or images@1INzQ5TV4vAAfU2PbRFgPfnzEwR:train/"
            ))
        };
        let (head, path) = match s.split_once(':') {
            // `label:NAME` / `branch:NAME` inside the selector is not a path separator.
            Some((h, rest)) if h.ends_with("@label") || h.ends_with("@branch") => {
                match rest.split_once(':') {
                    Some((name, p)) => (format!("{h}:{name}"), Some(p.to_owned())),
                    None => (s.to_owned(), None),
                }
            }
            Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
            None => (s.to_owned(), None),
        };
        if path.as_deref() == Some("") {
            return Err(bad("empty path after ':'"));
        }
        let (repo, selector) = match head.split_once('@') {
            Some((_, "")) => return Err(bad("empty selector after '@'")),
            Some((r, sel)) => (r, Some(sel.to_owned())),
            None => (head.as_str(), None),
        };
        if repo.is_empty() {
            return Err(bad("no repo"));
        }
        let repo: RepoName = repo.parse()?;
        if let Some(sel) = &selector {
            parse_selector(sel).map_err(|e| bad(&e.to_string()))?;
        }
        Ok(InputSpec {
            repo,
            selector,
            path,
        })
    }
}

impl std::fmt::Display for InputSpec {
    /// As written: `REPO[@SELECTOR][:PATH]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repo)?;
        if let Some(sel) = &self.selector {
            write!(f, "@{sel}")?;
        }
        if let Some(p) = &self.path {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// What a selector's text says, before looking at the store.
enum SelectorText {
    Id(BundleId),
    Label(LabelName),
    Branch(BranchName),
    /// A name that may be a label or a branch.
    Name(String),
}

fn parse_selector(s: &str) -> Result<SelectorText> {
    if let Some(l) = s.strip_prefix("label:") {
        return Ok(SelectorText::Label(l.parse()?));
    }
    if let Some(b) = s.strip_prefix("branch:") {
        return Ok(SelectorText::Branch(b.parse()?));
    }
    if s.len() == 27 && s.bytes().all(|c| c.is_ascii_alphanumeric()) {
        if let Ok(id) = s.parse() {
            return Ok(SelectorText::Id(id));
        }
    }
    // Must be a valid label or branch name.
    if s.parse::<LabelName>().is_err() && s.parse::<BranchName>().is_err() {
        return Err(Error::InvalidInput(format!(
            "{s:?} is neither a bundle id nor a valid label or branch name"
        )));
    }
    Ok(SelectorText::Name(s.to_owned()))
}

/// An output of a run as written on a command line: `REPO:DIR[@TARGET]`. The folder DIR becomes
/// a new bundle of REPO. TARGET is `branch:NAME`, `label:NAME`, or a bare NAME (a branch when
/// the repo has a branch of that name, else a label set on the new bundle); without it the
/// bundle goes to the default branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The repo.
    pub repo: RepoName,
    /// The folder the command writes.
    pub dir: PathBuf,
    /// Where the bundle goes, if not the default branch.
    pub target: Option<String>,
}

impl FromStr for OutputSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "output {s:?}: {why}; expected REPO:DIR[@BRANCH_OR_LABEL], e.g. model:out/model@main"
            ))
        };
        let Some((repo, rest)) = s.split_once(':') else {
            return Err(bad("no ':' between repo and folder"));
        };
        let (dir, target) = match rest.rsplit_once('@') {
            Some((d, t)) if !t.contains('/') => (d, Some(t.to_owned())),
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(bad("empty folder"));
        }
        if repo.is_empty() {
            return Err(bad("no repo"));
        }
        let repo: RepoName = repo.parse()?;
        if let Some(t) = &target {
            match parse_selector(t) {
                Ok(SelectorText::Id(_)) => {
                    return Err(bad(
                        "an output goes to a branch or a label, not a bundle id",
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(bad(&e.to_string())),
            }
        }
        Ok(OutputSpec {
            repo,
            dir: PathBuf::from(dir),
            target,
        })
    }
}

/// Filters for [`Datamon::list_runs`]; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only runs of this step.
    pub step: Option<String>,
    /// Only runs started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only runs whose metadata has these values.
    pub meta: Vec<(String, String)>,
}

/// One key (a parameter or a metric) on both sides of a run diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueDiff<T> {
    /// The key.
    pub key: String,
    /// Its value in the first run.
    pub a: Option<T>,
    /// Its value in the second run.
    pub b: Option<T>,
}

impl<T: PartialEq> ValueDiff<T> {
    /// Whether the value differs.
    pub fn changed(&self) -> bool {
        self.a != self.b
    }
}

/// One input or output slot on both sides of a run diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleDiff {
    /// The repo (and `:path` when only part of the bundle was read).
    pub key: String,
    /// The repo.
    pub repo: RepoName,
    /// The bundle on the first run's side.
    pub a: Option<BundleId>,
    /// The bundle on the second run's side.
    pub b: Option<BundleId>,
    /// The file-level changes from `a` to `b`, when both exist and differ.
    pub changes: Vec<Change>,
}

impl BundleDiff {
    /// Whether the two sides hold different content (or one side is missing).
    pub fn changed(&self) -> bool {
        match (self.a, self.b) {
            (Some(a), Some(b)) => a != b && !self.changes.is_empty(),
            (None, None) => false,
            _ => true,
        }
    }
}

/// What changed between two runs, side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDiff {
    /// The first run.
    pub a: Run,
    /// The second run.
    pub b: Run,
    /// Whether the code version differs.
    pub code_changed: bool,
    /// Every parameter of either run.
    pub params: Vec<ValueDiff<String>>,
    /// Every input slot of either run.
    pub inputs: Vec<BundleDiff>,
    /// Every output slot of either run.
    pub outputs: Vec<BundleDiff>,
    /// Every metric of either run.
    pub metrics: Vec<ValueDiff<serde_json::Value>>,
}

impl RunDiff {
    /// Whether the runs differ in their causes: code, parameters or input content.
    pub fn causes_changed(&self) -> bool {
        self.code_changed
            || self.a.step != self.b.step
            || self.params.iter().any(ValueDiff::changed)
            || self.inputs.iter().any(BundleDiff::changed)
    }
}

fn slot_key(repo: &RepoName, path: Option<&str>) -> String {
    match path {
        Some(p) => format!("{repo}:{p}"),
        None => repo.to_string(),
    }
}

/// Slots by key; a key seen twice gets `#2`, `#3`...
fn slots(
    items: impl Iterator<Item = (String, RepoName, BundleId)>,
) -> Vec<(String, RepoName, BundleId)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    items
        .map(|(k, r, b)| {
            let n = seen.entry(k.clone()).or_default();
            *n += 1;
            let key = if *n == 1 { k } else { format!("{k}#{n}") };
            (key, r, b)
        })
        .collect()
}

fn value_diffs<T: Clone>(a: &BTreeMap<String, T>, b: &BTreeMap<String, T>) -> Vec<ValueDiff<T>> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| ValueDiff {
            key: k.clone(),
            a: a.get(k).cloned(),
            b: b.get(k).cloned(),
        })
        .collect()
}

impl Datamon {
    /// Resolves the text of a selector (a bundle id, `label:NAME`, `branch:NAME`, or a bare name:
    /// a label if the repo has one of that name, else a branch, else for `latest` the latest
    /// bundle; `None`: the latest bundle).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for malformed text; a `*NotFound` error; a store error.
    pub async fn resolve_text(&self, repo: &RepoName, selector: Option<&str>) -> Result<BundleId> {
        let sel = match selector.map(parse_selector).transpose()? {
            None => BundleSelector::Latest,
            Some(SelectorText::Id(id)) => BundleSelector::Id(id),
            Some(SelectorText::Label(l)) => BundleSelector::Label(l),
            Some(SelectorText::Branch(b)) => BundleSelector::Branch(b),
            Some(SelectorText::Name(n)) => {
                self.get_repo(repo).await?;
                let label = n.parse::<LabelName>().ok();
                let branch = n.parse::<BranchName>().ok();
                let label_exists = match &label {
                    Some(l) => self
                        .store
                        .last_record::<datamon_types::LabelRecord>(&keys::label(
                            repo.as_str(),
                            l.as_str(),
                        ))
                        .await?
                        .is_some(),
                    None => false,
                };
                match (label, branch) {
                    (Some(l), _) if label_exists => BundleSelector::Label(l),
                    (_, Some(b)) if self.branch_head(repo, &b).await?.is_some() => {
                        BundleSelector::Branch(b)
                    }
                    _ if n == "latest" => BundleSelector::Latest,
                    _ => {
                        return Err(Error::SelectorNotFound {
                            repo: repo.to_string(),
                            name: n,
                        })
                    }
                }
            }
        };
        self.resolve(repo, &sel).await
    }

    /// Where an output bundle goes: the branch to advance and the label to set, from the
    /// target of an [`OutputSpec`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed target; a store error.
    pub async fn output_target(
        &self,
        repo: &RepoName,
        target: Option<&str>,
    ) -> Result<(Option<BranchName>, Option<LabelName>)> {
        Ok(match target.map(parse_selector).transpose()? {
            None => (None, None),
            Some(SelectorText::Branch(b)) => (Some(b), None),
            Some(SelectorText::Label(l)) => (None, Some(l)),
            Some(SelectorText::Id(_)) => {
                return Err(Error::InvalidInput(
                    "an output goes to a branch or a label, not a bundle id".into(),
                ))
            }
            Some(SelectorText::Name(n)) => {
                let branch = n.parse::<BranchName>().ok();
                let is_branch = match &branch {
                    Some(b) => self
                        .store
                        .last_record::<datamon_types::BranchRecord>(&keys::branch(
                            repo.as_str(),
                            b.as_str(),
                        ))
                        .await?
                        .is_some(),
                    None => false,
                };
                if is_branch {
                    (branch, None)
                } else {
                    (None, Some(n.parse()?))
                }
            }
        })
    }

    /// Records a run. Every bundle it names must exist; the record is written once
    /// (create-if-absent), so a run id cannot be reused (recording the identical record again
    /// is a no-op, as a retried write).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty step; [`Error::RepoNotFound`],
    /// [`Error::BundleNotFound`]; [`Error::RunExists`]; a store error.
    pub async fn record_run(&self, run: &Run) -> Result<()> {
        if run.step.trim().is_empty() {
            return Err(Error::InvalidInput("a run needs a step name".into()));
        }
        if run.finished_at < run.started_at {
            return Err(Error::InvalidInput(
                "a run cannot finish before it starts".into(),
            ));
        }
        let named = run
            .inputs
            .iter()
            .map(|i| (&i.repo, &i.bundle))
            .chain(run.outputs.iter().map(|o| (&o.repo, &o.bundle)));
        for (repo, bundle) in named {
            self.get_repo(repo).await?;
            self.get_bundle(repo, bundle).await?;
        }
        match self.store.create_json(&keys::run(&run.id), run).await {
            Ok(()) => Ok(()),
            Err(datamon_store::Error::AlreadyExists { .. }) => Err(Error::RunExists {
                id: run.id.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a run.
    ///
    /// # Errors
    /// [`Error::RunNotFound`]; a store error.
    pub async fn get_run(&self, id: &RunId) -> Result<Run> {
        match self.store.get_json(&keys::run(id)).await {
            Ok(r) => Ok(r),
            Err(datamon_store::Error::NotFound { .. }) => {
                Err(Error::RunNotFound { id: id.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// All runs, oldest first (through the local catalog cache).
    ///
    /// # Errors
    /// A store error.
    pub async fn all_runs(&self) -> Result<Vec<Run>> {
        Ok(self
            .sync_records::<Run>(keys::RUNS, "runs")
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// The runs matching `query`, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        let mut runs = self.all_runs().await?;
        runs.retain(|r| {
            query.step.as_ref().is_none_or(|s| &r.step == s)
                && query.since.is_none_or(|t| r.started_at >= t)
                && query
                    .meta
                    .iter()
                    .all(|(k, v)| r.meta.get(k).is_some_and(|x| x == v))
        });
        Ok(runs)
    }

    async fn bundle_slots(
        &self,
        a: Vec<(String, RepoName, BundleId)>,
        b: Vec<(String, RepoName, BundleId)>,
    ) -> Result<Vec<BundleDiff>> {
        let mut out: Vec<BundleDiff> = Vec::new();
        for (key, repo, id) in &a {
            out.push(BundleDiff {
                key: key.clone(),
                repo: repo.clone(),
                a: Some(*id),
                b: None,
                changes: Vec::new(),
            });
        }
        for (key, repo, id) in b {
            match out.iter_mut().find(|d| d.key == key && d.b.is_none()) {
                Some(d) => d.b = Some(id),
                None => out.push(BundleDiff {
                    key,
                    repo,
                    a: None,
                    b: Some(id),
                    changes: Vec::new(),
                }),
            }
        }
        // The index is loaded once, and only when two different trees are to be compared.
        let mut index = None;
        for d in &mut out {
            if let (Some(x), Some(y)) = (d.a, d.b) {
                if x == y {
                    continue;
                }
                // A deleted bundle (its data may be collected already) is compared by id only.
                let (bx, by) = match futures::try_join!(
                    self.get_bundle(&d.repo, &x),
                    self.get_bundle(&d.repo, &y)
                ) {
                    Err(Error::BundleDeleted { .. }) => continue,
                    r => r?,
                };
                if bx.root == by.root {
                    continue;
                }
                if index.is_none() {
                    index = Some(self.store.load_index().await?);
                }
                let index = index.as_ref().expect("loaded above");
                d.changes = self.diff_roots(index, bx.root, by.root).await?;
            }
        }
        Ok(out)
    }

    /// What changed from run `a` to run `b`: code version, parameters, each input (the same
    /// bundle, or a different one and its file-level changes), outputs and metrics.
    ///
    /// # Errors
    /// [`Error::RunNotFound`]; a store error.
    pub async fn diff_runs(&self, a: &RunId, b: &RunId) -> Result<RunDiff> {
        let (ra, rb) = futures::try_join!(self.get_run(a), self.get_run(b))?;
        let ins = |r: &Run| {
            slots(r.inputs.iter().map(|i: &RunInput| {
                (
                    slot_key(&i.repo, i.path.as_deref()),
                    i.repo.clone(),
                    i.bundle,
                )
            }))
        };
        let outs = |r: &Run| {
            slots(
                r.outputs
                    .iter()
                    .map(|o: &RunOutput| (o.repo.to_string(), o.repo.clone(), o.bundle)),
            )
        };
        let inputs = self.bundle_slots(ins(&ra), ins(&rb)).await?;
        let outputs = self.bundle_slots(outs(&ra), outs(&rb)).await?;
        let code_changed: bool = code_differs(&ra.code, &rb.code);
        Ok(RunDiff {
            code_changed,
            params: value_diffs(&ra.params, &rb.params),
            metrics: value_diffs(&ra.metrics, &rb.metrics),
            inputs,
            outputs,
            a: ra,
            b: rb,
        })
    }
}

fn code_differs(a: &CodeVersion, b: &CodeVersion) -> bool {
    a != b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_specs() {
        let i: InputSpec = "images@latest".parse().unwrap();
        assert_eq!(i.repo.as_str(), "images");
        assert_eq!(i.selector.as_deref(), Some("latest"));
        assert_eq!(i.path, None);
        let i: InputSpec = "images@label:prod:train/a.csv".parse().unwrap();
        assert_eq!(i.selector.as_deref(), Some("label:prod"));
        assert_eq!(i.path.as_deref(), Some("train/a.csv"));
        let i: InputSpec = "images".parse().unwrap();
        assert_eq!(i.selector, None);
        let i: InputSpec = "images:sub".parse().unwrap();
        assert_eq!(i.path.as_deref(), Some("sub"));
        for bad in ["", "@x", "images@", "images@x:", "images@a b", "Bad Repo@x"] {
            assert!(bad.parse::<InputSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn output_specs() {
        let o: OutputSpec = "model:out/m".parse().unwrap();
        assert_eq!(o.dir, PathBuf::from("out/m"));
        assert_eq!(o.target, None);
        let o: OutputSpec = "model:out/m@dev".parse().unwrap();
        assert_eq!(o.target.as_deref(), Some("dev"));
        let o: OutputSpec = "model:/tmp/x@y/z".parse().unwrap();
        assert_eq!(o.dir, PathBuf::from("/tmp/x@y/z"));
        for bad in [
            "model",
            "model:",
            ":dir",
            "model:dir@1INzQ5TV4vAAfU2PbRFgPfnzEwR",
        ] {
            assert!(bad.parse::<OutputSpec>().is_err(), "{bad}");
        }
    }
}
