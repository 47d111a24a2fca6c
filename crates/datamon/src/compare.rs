//! Queries across runs: a table of runs ([`Datamon::compare_runs`]), "if only one component
//! changes, how does the result vary?" ([`Datamon::vary_runs`]), and a diff of two runs that
//! follows their inputs upstream through the runs that produced them
//! ([`Datamon::diff_runs_deep`]).
//!
//! All three read every run through the local catalog (see `catalog.rs`: one listing of `runs/`
//! plus the records not seen before, so runs another machine added are picked up by the next
//! query) and index them by the bundles they wrote, as the lineage queries do (`lineage.rs`);
//! only the links of each record (id, step, start, outputs) are parsed up front, the rest of a
//! record only when the query needs it.
//!
//! **Components.** A run's components are its code version (`code`), each parameter
//! (`param:KEY`) and each input slot (`input:REPO`, or `input:REPO:PATH` when it read part of a
//! bundle, `#2` for a second input of one repo, as in [`RunDiff`]). Seen *through lineage*, an
//! input that a recorded run produced is replaced by that run's components, recursively: the
//! components of the upstream run are named after the input slots followed to reach it, so a
//! train run whose input `prepared` came from a prepare run that read `raw` has the component
//! `prepared/input:raw`. A component asked for by name (`lr`, `raw`, `code`, or the full forms
//! above) is looked up among the run's own components first, and through lineage only when the
//! run has no component of that name.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

// Hash maps over ids and interned values, by the hundred thousand: FxHash, as SipHash was a
// fifth of a 100,000-run query's time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use datamon_store::{keys, Index};
use datamon_types::{Bundle, BundleId, CodeVersion, LabelName, RepoName, Run, RunId, RunStatus};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{BundleDiff, Change, Datamon, Error, Result, RunDiff, ValueDiff};

/// How far upstream lineage is followed at most (a guard against cycles in hand-made records).
const MAX_UPSTREAM: usize = 64;

// ---- queries ----

/// One condition on a run, written `KEY=VALUE`:
/// - `KEY=VALUE` or `param.KEY=VALUE`: a parameter;
/// - `metric.KEY=VALUE`: a metric (numbers compare as numbers: `0.50` matches `0.5`);
/// - `meta.KEY=VALUE`: run metadata;
/// - `code=PREFIX`: a git commit (or container image) starting with PREFIX;
/// - `status=succeeded|failed`;
/// - `input.REPO=PREFIX`: an input bundle of REPO whose id starts with PREFIX.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunFilter {
    /// A parameter has this value.
    Param {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A metric has this value.
    Metric {
        /// The metric.
        key: String,
        /// Its value, as text.
        value: String,
    },
    /// A metadata key has this value.
    Meta {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The git commit or the image starts with this.
    Code(String),
    /// The run ended so.
    Status(RunStatus),
    /// An input bundle of this repo has an id starting with `bundle`.
    Input {
        /// The repo.
        repo: String,
        /// The bundle id or a prefix of it.
        bundle: String,
    },
}

impl FromStr for RunFilter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "filter {s:?}: {why}; expected KEY=VALUE (a parameter), param.KEY=VALUE, metric.KEY=VALUE, meta.KEY=VALUE, code=COMMIT, status=succeeded|failed or input.REPO=BUNDLE"
            ))
        };
        let Some((key, value)) = s.split_once('=') else {
            return Err(bad("no '='"));
        };
        let value = value.to_owned();
        let named = |prefix: &str| key.strip_prefix(prefix).filter(|k| !k.is_empty());
        if key.is_empty() || ["param.", "metric.", "meta.", "input."].contains(&key) {
            return Err(bad("empty key"));
        }
        Ok(if key == "code" {
            if value.is_empty() {
                return Err(bad("empty code version"));
            }
            RunFilter::Code(value)
        } else if key == "status" {
            match value.as_str() {
                "succeeded" => RunFilter::Status(RunStatus::Succeeded),
                "failed" => RunFilter::Status(RunStatus::Failed),
                _ => return Err(bad("a status is succeeded or failed")),
            }
        } else if let Some(k) = named("param.") {
            RunFilter::Param {
                key: k.to_owned(),
                value,
            }
        } else if let Some(k) = named("metric.") {
            RunFilter::Metric {
                key: k.to_owned(),
                value,
            }
        } else if let Some(k) = named("meta.") {
            RunFilter::Meta {
                key: k.to_owned(),
                value,
            }
        } else if let Some(k) = named("input.") {
            if value.is_empty() {
                return Err(bad("empty bundle id"));
            }
            RunFilter::Input {
                repo: k.to_owned(),
                bundle: value,
            }
        } else {
            RunFilter::Param {
                key: key.to_owned(),
                value,
            }
        })
    }
}

impl RunFilter {
    /// Whether `run` meets the condition.
    pub fn matches(&self, run: &Run) -> bool {
        match self {
            RunFilter::Param { key, value } => run.params.get(key) == Some(value),
            RunFilter::Metric { key, value } => {
                run.metrics.get(key).is_some_and(|m| json_is(m, value))
            }
            RunFilter::Meta { key, value } => run.meta.get(key) == Some(value),
            RunFilter::Code(prefix) => {
                run.code
                    .git_commit
                    .as_ref()
                    .is_some_and(|c| c.starts_with(prefix.as_str()))
                    || run
                        .code
                        .image
                        .as_ref()
                        .is_some_and(|i| i.starts_with(prefix.as_str()))
            }
            RunFilter::Status(s) => run.status == *s,
            RunFilter::Input { repo, bundle } => run.inputs.iter().any(|i| {
                i.repo.as_str() == repo && i.bundle.to_string().starts_with(bundle.as_str())
            }),
        }
    }
}

/// Whether a JSON metric value is the text `v` (numbers compare as numbers).
fn json_is(m: &serde_json::Value, v: &str) -> bool {
    match m {
        serde_json::Value::Number(n) => match (n.as_f64(), v.trim().parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => n.to_string() == v,
        },
        serde_json::Value::String(s) => s == v,
        other => serde_json::to_string(other).is_ok_and(|t| t == v),
    }
}

/// The order of a run table: by a metric, a parameter, or `time`, `id`, `step`, `status`,
/// `code`. Written `NAME` (ascending), `-NAME` or `NAME:desc` (descending); a bare name is a
/// metric if some run has that metric, else a parameter; `metric.NAME`/`param.NAME` say which.
/// Runs without the value come last either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSort {
    /// What to sort by.
    pub key: String,
    /// Largest first.
    pub descending: bool,
}

impl FromStr for RunSort {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (key, descending) = if let Some(k) = s.strip_prefix('-') {
            (k, true)
        } else if let Some(k) = s.strip_suffix(":desc") {
            (k, true)
        } else if let Some(k) = s.strip_suffix(":asc") {
            (k, false)
        } else {
            (s, false)
        };
        if key.is_empty() {
            return Err(Error::InvalidInput(format!(
                "sort {s:?}: empty; expected a metric or parameter name, or time, id, step, status, code"
            )));
        }
        Ok(RunSort {
            key: key.to_owned(),
            descending,
        })
    }
}

/// Which runs a comparison looks at; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct CompareQuery {
    /// Only runs of this step.
    pub step: Option<String>,
    /// Only runs started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Conditions on parameters, metrics, metadata, code, status or inputs.
    pub filters: Vec<RunFilter>,
    /// The order of the rows (default: oldest first); in a [`Variation`], of the runs of
    /// each group (default: by the value of the component that varies).
    pub sort: Option<RunSort>,
}

// ---- the run table ----

/// A bundle a run read or wrote, as a table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowBundle {
    /// The slot: the repo, with `:PATH` when only part of the bundle was read and `#2`... for
    /// a repo's second bundle (as in [`RunDiff`]).
    pub slot: String,
    /// The repo.
    pub repo: RepoName,
    /// The bundle.
    pub bundle: BundleId,
    /// The labels that point at the bundle now.
    pub labels: Vec<LabelName>,
}

/// One row of a [`RunTable`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// The run.
    pub run: Run,
    /// Its inputs, by slot, with their labels.
    pub inputs: Vec<RowBundle>,
    /// Its outputs, by slot, with their labels.
    pub outputs: Vec<RowBundle>,
}

/// Runs side by side ([`Datamon::compare_runs`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunTable {
    /// The runs, in the order asked for (default: oldest first).
    pub rows: Vec<RunRow>,
    /// Every parameter of the rows, sorted.
    pub params: Vec<String>,
    /// Every metric of the rows, sorted.
    pub metrics: Vec<String>,
    /// Every input slot of the rows, in order of appearance.
    pub inputs: Vec<String>,
    /// Every output slot of the rows, in order of appearance.
    pub outputs: Vec<String>,
    /// Every step recorded in the store, sorted (to say what exists when no row matched).
    pub steps: Vec<String>,
}

// ---- components and variations ----

/// What a component of a run is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ComponentKind {
    /// The code version.
    Code,
    /// A parameter.
    Param {
        /// Its key.
        key: String,
    },
    /// An input slot.
    Input {
        /// The slot (see [`RowBundle::slot`]).
        slot: String,
        /// The repo.
        repo: RepoName,
    },
}

/// One component of a run (see the module docs): its own code, a parameter or an input, or one
/// of an upstream run's, reached through the input slots in `via`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Component {
    /// The input slots followed upstream, from the run to the run this component belongs to
    /// (empty: the run's own).
    pub via: Vec<String>,
    /// What it is.
    #[serde(flatten)]
    pub kind: ComponentKind,
}

impl fmt::Display for Component {
    /// `code`, `param:lr`, `input:raw`; upstream `prepared/input:raw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.via {
            write!(f, "{v}/")?;
        }
        match &self.kind {
            ComponentKind::Code => f.write_str("code"),
            ComponentKind::Param { key } => write!(f, "param:{key}"),
            ComponentKind::Input { slot, .. } => write!(f, "input:{slot}"),
        }
    }
}

impl Component {
    /// How many runs upstream it belongs to (0: the run's own).
    pub fn depth(&self) -> usize {
        self.via.len()
    }
}

/// A component name as asked for: `[SLOT/...]LEAF`, LEAF being `code`, `param:KEY`,
/// `input:REPO` or a bare name (a parameter or an input repo).
struct ComponentName {
    via: Option<Vec<String>>,
    leaf: Leaf,
}

enum Leaf {
    Code,
    Param(String),
    Input(String),
    Bare(String),
}

impl ComponentName {
    fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "component {s:?}: {why}; expected code, a parameter name, an input repo, or param:KEY, input:REPO, SLOT/.../input:REPO"
            ))
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        // An input slot may hold a path (`model:model.txt`), so split off `via` at the slash
        // before the last leaf marker.
        let leaf_start = ["code", "param:", "input:"]
            .iter()
            .filter_map(|m| {
                s.match_indices(m)
                    .filter(|(i, _)| *i == 0 || s.as_bytes()[i - 1] == b'/')
                    .map(|(i, _)| i)
                    .last()
            })
            .max();
        let (via, leaf) = match leaf_start {
            Some(0) => (None, s),
            Some(i) => (Some(&s[..i - 1]), &s[i..]),
            None => match s.rsplit_once('/') {
                Some((v, l)) => (Some(v), l),
                None => (None, s),
            },
        };
        let via = match via {
            Some(v) => {
                let parts: Vec<String> = v.split('/').map(str::to_owned).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(bad("an empty slot in the path"));
                }
                Some(parts)
            }
            None => None,
        };
        let leaf = if leaf == "code" {
            Leaf::Code
        } else if let Some(k) = leaf.strip_prefix("param:") {
            Leaf::Param(k.to_owned())
        } else if let Some(r) = leaf.strip_prefix("input:") {
            Leaf::Input(r.to_owned())
        } else {
            Leaf::Bare(leaf.to_owned())
        };
        if matches!(&leaf, Leaf::Param(x) | Leaf::Input(x) | Leaf::Bare(x) if x.is_empty()) {
            return Err(bad("no name"));
        }
        Ok(ComponentName { via, leaf })
    }

    fn matches(&self, c: &Component) -> bool {
        if self.via.as_ref().is_some_and(|v| *v != c.via) {
            return false;
        }
        let input = |name: &str, slot: &str, repo: &RepoName| slot == name || repo.as_str() == name;
        match (&self.leaf, &c.kind) {
            (Leaf::Code, ComponentKind::Code) => true,
            (Leaf::Param(k) | Leaf::Bare(k), ComponentKind::Param { key }) => k == key,
            (Leaf::Input(n) | Leaf::Bare(n), ComponentKind::Input { slot, repo }) => {
                input(n, slot, repo)
            }
            _ => false,
        }
    }
}

/// A component and its value in the runs of a [`VaryGroup`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentValue {
    /// The component.
    pub component: Component,
    /// Its value: the code version, the parameter's value or the bundle id (`None`: the runs
    /// have no such component).
    pub value: Option<String>,
}

/// One run of a [`VaryGroup`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VaryRun {
    /// The value of each varying component ([`Variation::varies`]), in order.
    pub value: Vec<Option<String>>,
    /// The run.
    pub run: Run,
}

/// Runs identical in every component but the one that varies, which takes at least two values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VaryGroup {
    /// What the runs of the group share: every other component and its value.
    pub fixed: Vec<ComponentValue>,
    /// The runs, by the value of the varying component (or as [`CompareQuery::sort`] says).
    pub runs: Vec<VaryRun>,
}

/// Runs that differ from every other run in more than the component asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LeftOut {
    /// How many.
    pub runs: usize,
    /// For each other component, how many of them would join a group if it were allowed to
    /// differ too (a run may count under several).
    pub by: Vec<(Component, usize)>,
    /// How many would not join a group by letting any one other component differ (they differ
    /// in two or more, or nothing else has another value of the component).
    pub other: usize,
}

/// "If only one component changes, how does the result vary?" ([`Datamon::vary_runs`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variation {
    /// The step.
    pub step: String,
    /// The component as asked for.
    pub asked: String,
    /// The components that vary (several when the name matches one kind of component at several
    /// places upstream, as a raw input read by two branches of a pipeline).
    pub varies: Vec<Component>,
    /// Whether they were found through lineage (upstream of the step's own components).
    pub upstream: bool,
    /// How many runs of the step matched the query.
    pub runs: usize,
    /// The groups, oldest first.
    pub groups: Vec<VaryGroup>,
    /// The runs kept out of every group, and which components kept them out.
    pub left_out: LeftOut,
    /// Every step recorded in the store, sorted.
    pub steps: Vec<String>,
}

// ---- deep diffs ----

/// How far [`Datamon::diff_runs_deep`] walks.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeepOptions {
    /// How many steps upstream at most (default: no limit).
    pub depth: Option<usize>,
}

/// What [`Datamon::diff_runs_deep`] did with one input slot of a pair of runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InputOrigin {
    /// Both runs read the same bundle: nothing upstream can differ.
    SameBundle,
    /// Different bundles with the same content: not followed.
    SameContent,
    /// Only one of the runs has this input.
    OneSided,
    /// Both bundles were produced by recorded runs, compared at [`DeepDiff::steps`]`[step]`.
    Followed {
        /// The index of that step.
        step: usize,
    },
    /// No recorded run produced one of the bundles (or both): the walk ends here.
    NoProducer {
        /// The run that produced the first run's bundle, if any.
        a: Option<RunId>,
        /// The run that produced the second run's bundle, if any.
        b: Option<RunId>,
    },
    /// Not followed: the depth limit.
    DepthLimit,
}

/// One input slot of a [`DeepStep`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputTrace {
    /// The slot (as in [`RunDiff::inputs`]).
    pub slot: String,
    /// What was done with it.
    pub origin: InputOrigin,
}

/// One pair of runs of a deep diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeepStep {
    /// How many steps above the runs asked about (0: those runs).
    pub depth: usize,
    /// The input slots followed from the runs asked about to these (empty at depth 0).
    pub via: Vec<String>,
    /// What differs between the two runs.
    pub diff: RunDiff,
    /// What was done with each input slot.
    pub inputs: Vec<InputTrace>,
}

/// What a [`Cause`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum CauseKind {
    /// The runs are of different steps.
    Step,
    /// A component: the code, a parameter or an input (an input that differs and that could
    /// not be explained further upstream).
    Component {
        /// The component, as the runs asked about see it (its `via` leads to the step).
        component: Component,
    },
}

/// One difference that explains the others: a component that differs at some step and is not
/// itself the result of a difference further upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    /// The index of the step in [`DeepDiff::steps`].
    pub step: usize,
    /// The step's name (of the first run).
    pub step_name: String,
    /// What differs.
    pub kind: CauseKind,
    /// The value on the first run's side (code version, parameter value or bundle id).
    pub a: Option<String>,
    /// The value on the second run's side.
    pub b: Option<String>,
    /// For an input, the file-level changes from `a` to `b`.
    pub changes: Vec<Change>,
    /// For an input: both bundles came from runs that differ in nothing (that step is not
    /// reproducible).
    pub unexplained: bool,
}

/// Two runs compared step by step upstream ([`Datamon::diff_runs_deep`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeepDiff {
    /// The pairs of runs compared, the two asked about first, then upstream, breadth first.
    pub steps: Vec<DeepStep>,
    /// The differences that explain all others, in the order of the steps.
    pub causes: Vec<Cause>,
}

impl DeepDiff {
    /// The one component that alone differs, when exactly one does.
    pub fn only(&self) -> Option<&Cause> {
        match self.causes.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Whether the runs differ in anything: causes, outputs or metrics.
    pub fn differs(&self) -> bool {
        !self.causes.is_empty()
            || self.steps.first().is_some_and(|s| {
                s.diff.causes_changed()
                    || s.diff.outputs.iter().any(BundleDiff::changed)
                    || s.diff.metrics.iter().any(ValueDiff::changed)
            })
    }
}

// ---- shared helpers ----

/// Input slots of a run: (slot, repo, bundle), as [`Datamon::diff_runs`] keys them.
fn input_slots(r: &Run) -> Vec<(String, RepoName, BundleId)> {
    slots(r.inputs.iter().map(|i| {
        let key = match &i.path {
            Some(p) => format!("{}:{p}", i.repo),
            None => i.repo.to_string(),
        };
        (key, i.repo.clone(), i.bundle)
    }))
}

fn output_slots(r: &Run) -> Vec<(String, RepoName, BundleId)> {
    slots(
        r.outputs
            .iter()
            .map(|o| (o.repo.to_string(), o.repo.clone(), o.bundle)),
    )
}

/// A key seen twice gets `#2`, `#3`...
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
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .map(|k| ValueDiff {
            key: k.clone(),
            a: a.get(k).cloned(),
            b: b.get(k).cloned(),
        })
        .collect()
}

/// Orders two optional values: numbers as numbers, else as text; missing last.
fn cmp_values(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => x.cmp(y),
        },
    }
}

/// A sortable value of a run.
enum SortValue {
    Num(f64),
    Text(String),
}

fn sort_value_of_json(v: &serde_json::Value) -> SortValue {
    match v {
        serde_json::Value::Number(n) => SortValue::Num(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => text_or_number(s),
        other => SortValue::Text(other.to_string()),
    }
}

fn text_or_number(s: &str) -> SortValue {
    s.parse::<f64>()
        .map_or_else(|_| SortValue::Text(s.to_owned()), SortValue::Num)
}

fn cmp_sort(a: &Option<SortValue>, b: &Option<SortValue>, descending: bool) -> Ordering {
    let o = match (a, b) {
        (None, None) => return Ordering::Equal,
        (None, Some(_)) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (Some(SortValue::Num(x)), Some(SortValue::Num(y))) => x.total_cmp(y),
        (Some(SortValue::Num(_)), Some(SortValue::Text(_))) => Ordering::Less,
        (Some(SortValue::Text(_)), Some(SortValue::Num(_))) => Ordering::Greater,
        (Some(SortValue::Text(x)), Some(SortValue::Text(y))) => x.cmp(y),
    };
    if descending {
        o.reverse()
    } else {
        o
    }
}

/// What a [`RunSort`] key reads from a run.
enum SortKey {
    Time,
    Id,
    Step,
    Status,
    Code,
    Metric(String),
    Param(String),
}

impl SortKey {
    fn resolve<'a>(key: &str, runs: impl Iterator<Item = &'a Run> + Clone) -> Result<SortKey> {
        Ok(match key {
            "time" | "started" | "started_at" => SortKey::Time,
            "id" => SortKey::Id,
            "step" => SortKey::Step,
            "status" => SortKey::Status,
            "code" => SortKey::Code,
            _ => {
                if let Some(m) = key
                    .strip_prefix("metric.")
                    .or_else(|| key.strip_prefix("metric:"))
                {
                    SortKey::Metric(m.to_owned())
                } else if let Some(p) = key
                    .strip_prefix("param.")
                    .or_else(|| key.strip_prefix("param:"))
                {
                    SortKey::Param(p.to_owned())
                } else if runs.clone().any(|r| r.metrics.contains_key(key)) {
                    SortKey::Metric(key.to_owned())
                } else if runs.clone().any(|r| r.params.contains_key(key)) {
                    SortKey::Param(key.to_owned())
                } else {
                    let metrics: BTreeSet<&String> =
                        runs.clone().flat_map(|r| r.metrics.keys()).collect();
                    let params: BTreeSet<&String> = runs.flat_map(|r| r.params.keys()).collect();
                    let list = |s: BTreeSet<&String>| {
                        if s.is_empty() {
                            "none".to_owned()
                        } else {
                            s.into_iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    };
                    return Err(Error::InvalidInput(format!(
                        "cannot sort by {key:?}: no run has a metric or parameter of that name (metrics: {}; parameters: {}; or time, id, step, status, code)",
                        list(metrics),
                        list(params)
                    )));
                }
            }
        })
    }

    fn value(&self, r: &Run) -> Option<SortValue> {
        match self {
            SortKey::Time => Some(SortValue::Num(
                r.started_at.timestamp_nanos_opt().unwrap_or_default() as f64,
            )),
            SortKey::Id => Some(SortValue::Text(r.id.to_string())),
            SortKey::Step => Some(SortValue::Text(r.step.clone())),
            SortKey::Status => Some(SortValue::Text(r.status.to_string())),
            SortKey::Code => Some(SortValue::Text(r.code.to_string())),
            SortKey::Metric(m) => r.metrics.get(m).map(sort_value_of_json),
            SortKey::Param(p) => r.params.get(p).map(|v| text_or_number(v)),
        }
    }
}

/// What a run's record says about its place in lineage, parsed without the rest of it.
#[derive(Deserialize)]
/// Ids stay text: parsing a KSUID costs more than the rest of a link.
struct Link {
    id: String,
    step: String,
    started_at: DateTime<Utc>,
    #[serde(default)]
    outputs: Vec<LinkBundle>,
}

#[derive(Deserialize)]
struct LinkBundle {
    repo: String,
    bundle: String,
}

/// `f` over `items` on a few threads (the parsing of many records), in order.
fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8);
    if threads < 2 || items.len() < 4096 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<U>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Every run, read through the local catalog and indexed by the bundles it wrote. Only the
/// links of a record (id, step, start, outputs) are parsed up front; a query parses whole only
/// the records it needs (at 100,000 runs, parsing every record whole costs more than the rest
/// of a query).
struct RunIndex {
    keys: Vec<String>,
    json: Vec<String>,
    links: Vec<Link>,
    /// Records parsed whole while reading (those of the query's step).
    whole: Vec<Option<Box<Run>>>,
    /// The runs that wrote each bundle (by id, then repo): the last in key order counts, when
    /// several name it (as `Datamon::log` picks).
    producers: HashMap<String, Vec<(String, usize)>>,
}

impl RunIndex {
    #[allow(clippy::type_complexity)] // (record key, run id, (link, run)) as the catalog yields them
    fn new(entries: Vec<(String, String, (Link, Option<Box<Run>>))>) -> RunIndex {
        let n = entries.len();
        let (mut keys, mut json, mut links, mut whole) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (k, j, (l, w)) in entries {
            keys.push(k);
            json.push(j);
            links.push(l);
            whole.push(w);
        }
        let mut producers: HashMap<String, Vec<(String, usize)>> =
            HashMap::with_capacity_and_hasher(links.len(), Default::default());
        for (i, l) in links.iter().enumerate() {
            for o in &l.outputs {
                producers
                    .entry(o.bundle.clone())
                    .or_default()
                    .push((o.repo.clone(), i));
            }
        }
        RunIndex {
            keys,
            json,
            links,
            whole,
            producers,
        }
    }

    fn producer(&self, repo: &str, bundle: &str) -> Option<usize> {
        self.producers
            .get(bundle)?
            .iter()
            .rev()
            .find(|(r, _)| r == repo)
            .map(|(_, i)| *i)
    }

    fn run_id(&self, i: usize) -> Result<RunId> {
        Ok(self.links[i].id.parse()?)
    }

    fn parse(&self, i: usize) -> Result<Run> {
        self.parse_as(i)
    }

    fn parse_as<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T> {
        serde_json::from_str(&self.json[i]).map_err(|source| {
            Error::Store(datamon_store::Error::Json {
                key: self.keys[i].clone(),
                source,
            })
        })
    }

    fn parse_many(&self, idx: &[usize]) -> Result<Vec<Run>> {
        par_map(idx, |&i| self.parse(i)).into_iter().collect()
    }

    /// Every step recorded, sorted.
    fn steps(&self) -> Vec<String> {
        let s: BTreeSet<&str> = self.links.iter().map(|l| l.step.as_str()).collect();
        s.into_iter().map(str::to_owned).collect()
    }

    /// The runs of the query, by start time (those parsed while reading are taken).
    fn select(&mut self, query: &CompareQuery) -> Result<Vec<Run>> {
        let idx: Vec<usize> = (0..self.links.len())
            .filter(|&i| {
                let l = &self.links[i];
                query.step.as_ref().is_none_or(|s| &l.step == s)
                    && query.since.is_none_or(|t| l.started_at >= t)
            })
            .collect();
        // Parsed here only when not already (a query other than the one read for).
        let missing: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| self.whole[i].is_none())
            .collect();
        let mut parsed: HashMap<usize, Run> = missing
            .iter()
            .copied()
            .zip(self.parse_many(&missing)?)
            .collect();
        let mut runs: Vec<Run> = Vec::with_capacity(idx.len());
        for &i in &idx {
            runs.push(match self.whole[i].take() {
                Some(r) => *r,
                None => parsed.remove(&i).expect("parsed above"),
            });
        }
        runs.retain(|r| query.filters.iter().all(|f| f.matches(r)));
        // Run ids sort by time only to the second.
        runs.sort_by_key(|r| (r.started_at, r.id));
        Ok(runs)
    }

    /// The runs that produced the inputs of `runs`, and theirs, recursively, their compared
    /// parts parsed.
    fn upstream(&self, runs: &[Run]) -> Result<HashMap<usize, Core>> {
        let mut out: HashMap<usize, Core> = HashMap::default();
        let mut next: Vec<usize> = runs
            .iter()
            .flat_map(|r| {
                r.inputs
                    .iter()
                    .filter_map(|i| self.producer(i.repo.as_str(), &i.bundle.to_string()))
            })
            .collect();
        for _ in 0..MAX_UPSTREAM {
            next.sort_unstable();
            next.dedup();
            next.retain(|i| !out.contains_key(i));
            if next.is_empty() {
                break;
            }
            let parsed: Vec<Core> = par_map(&next, |&i| self.parse_as::<Core>(i))
                .into_iter()
                .collect::<Result<_>>()?;
            let after: Vec<usize> = parsed
                .iter()
                .flat_map(|r| {
                    r.inputs
                        .iter()
                        .filter_map(|i| self.producer(i.repo.as_str(), &i.bundle))
                })
                .collect();
            out.extend(next.drain(..).zip(parsed));
            next = after;
        }
        Ok(out)
    }
}

/// What an upstream run contributes to the components of the runs below it: the parts of its
/// record a variation compares (parsed without the rest).
#[derive(Deserialize)]
struct Core {
    #[serde(default)]
    code: CodeVersion,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    inputs: Vec<CoreInput>,
}

/// An input of a [`Core`], ids as text.
#[derive(Deserialize)]
struct CoreInput {
    repo: RepoName,
    bundle: String,
    #[serde(default)]
    path: Option<String>,
}

/// The compared parts of a run or of a [`Core`].
struct Parts<'a> {
    code: &'a CodeVersion,
    params: &'a BTreeMap<String, String>,
    inputs: Vec<InputRef<'a>>,
}

/// An input of [`Parts`].
struct InputRef<'a> {
    repo: &'a RepoName,
    path: Option<&'a str>,
    bundle: Cow<'a, str>,
}

impl<'a> From<&'a Run> for Parts<'a> {
    fn from(r: &'a Run) -> Self {
        Parts {
            code: &r.code,
            params: &r.params,
            inputs: r
                .inputs
                .iter()
                .map(|i| InputRef {
                    repo: &i.repo,
                    path: i.path.as_deref(),
                    bundle: Cow::Owned(i.bundle.to_string()),
                })
                .collect(),
        }
    }
}

impl<'a> From<&'a Core> for Parts<'a> {
    fn from(r: &'a Core) -> Self {
        Parts {
            code: &r.code,
            params: &r.params,
            inputs: r
                .inputs
                .iter()
                .map(|i| InputRef {
                    repo: &i.repo,
                    path: i.path.as_deref(),
                    bundle: Cow::Borrowed(i.bundle.as_str()),
                })
                .collect(),
        }
    }
}

/// Input slots as [`input_slots`] names them, borrowed where they can be.
fn borrowed_slots<'a>(inputs: &[InputRef<'a>]) -> Vec<(Cow<'a, str>, &'a RepoName, Cow<'a, str>)> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut seen: Vec<(Cow<'a, str>, usize)> = Vec::new();
    for i in inputs {
        let key: Cow<'a, str> = match i.path {
            Some(p) => Cow::Owned(format!("{}:{p}", i.repo)),
            None => Cow::Borrowed(i.repo.as_str()),
        };
        let n = match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((key.clone(), 1));
                1
            }
        };
        let key = if n == 1 {
            key
        } else {
            Cow::Owned(format!("{key}#{n}"))
        };
        out.push((key, i.repo, i.bundle.clone()));
    }
    out
}

/// The upstream runs of a query's runs, to see components through lineage.
struct Upstream<'a> {
    index: &'a RunIndex,
    runs: &'a HashMap<usize, Core>,
}

impl<'a> Upstream<'a> {
    fn producer(&self, repo: &str, bundle: &str) -> Option<(usize, &'a Core)> {
        let i = self.index.producer(repo, bundle)?;
        self.runs.get(&i).map(|c| (i, c))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum KindKey<'a> {
    Code,
    Param(&'a str),
    Input(Cow<'a, str>, &'a RepoName),
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum ValueKey<'a> {
    Code(Option<&'a str>, Option<bool>, Option<&'a str>),
    Text(&'a str),
    Bundle(Cow<'a, str>),
}

/// Components and values as numbers, borrowed from the runs (a variation over 100,000 runs
/// compares millions of them).
#[derive(Default)]
struct Interner<'a> {
    /// (parent path, slot) -> path; path 0 is the run's own.
    paths: HashMap<(u32, Cow<'a, str>), u32>,
    path_list: Vec<(u32, Cow<'a, str>)>,
    comps: HashMap<(u32, KindKey<'a>), u32>,
    comp_list: Vec<(u32, KindKey<'a>)>,
    values: HashMap<ValueKey<'a>, u32>,
    value_list: Vec<ValueKey<'a>>,
}

fn intern<K: Clone + Eq + std::hash::Hash>(
    map: &mut HashMap<K, u32>,
    list: &mut Vec<K>,
    k: K,
) -> u32 {
    if let Some(&id) = map.get(&k) {
        return id;
    }
    let id = list.len() as u32;
    list.push(k.clone());
    map.insert(k, id);
    id
}

impl<'a> Interner<'a> {
    fn new() -> Self {
        Interner {
            // Path 0: the run's own components (its parent is never looked up).
            path_list: vec![(0, Cow::Borrowed(""))],
            ..Default::default()
        }
    }

    fn path(&mut self, parent: u32, slot: Cow<'a, str>) -> u32 {
        intern(&mut self.paths, &mut self.path_list, (parent, slot))
    }

    fn via(&self, mut path: u32) -> Vec<String> {
        let mut v = Vec::new();
        while path != 0 {
            let (parent, slot) = &self.path_list[path as usize];
            v.push(slot.to_string());
            path = *parent;
        }
        v.reverse();
        v
    }

    fn comp(&mut self, path: u32, kind: KindKey<'a>) -> u32 {
        intern(&mut self.comps, &mut self.comp_list, (path, kind))
    }

    fn value(&mut self, v: ValueKey<'a>) -> u32 {
        intern(&mut self.values, &mut self.value_list, v)
    }

    fn component(&self, id: u32) -> Component {
        let (path, kind) = &self.comp_list[id as usize];
        Component {
            via: self.via(*path),
            kind: match kind {
                KindKey::Code => ComponentKind::Code,
                KindKey::Param(k) => ComponentKind::Param {
                    key: (*k).to_owned(),
                },
                KindKey::Input(slot, repo) => ComponentKind::Input {
                    slot: slot.to_string(),
                    repo: (*repo).clone(),
                },
            },
        }
    }

    fn text(&self, id: u32) -> String {
        match &self.value_list[id as usize] {
            ValueKey::Code(git, dirty, image) => CodeVersion {
                git_commit: git.map(str::to_owned),
                git_dirty: *dirty,
                image: image.map(str::to_owned),
            }
            .to_string(),
            ValueKey::Text(t) => (*t).to_owned(),
            ValueKey::Bundle(b) => b.to_string(),
        }
    }

    /// Every component of a run and its value, as numbers; through lineage (`up`), inputs
    /// that a recorded run produced are replaced by that run's components.
    fn collect(
        &mut self,
        run: Parts<'a>,
        up: Option<&Upstream<'a>>,
        path: u32,
        depth: usize,
        seen: &mut Vec<usize>,
        out: &mut Vec<(u32, u32)>,
    ) {
        let c = run.code;
        let comp = self.comp(path, KindKey::Code);
        let value = self.value(ValueKey::Code(
            c.git_commit.as_deref(),
            c.git_dirty,
            c.image.as_deref(),
        ));
        out.push((comp, value));
        for (k, v) in run.params {
            let comp = self.comp(path, KindKey::Param(k));
            let value = self.value(ValueKey::Text(v));
            out.push((comp, value));
        }
        for (slot, repo, bundle) in borrowed_slots(&run.inputs) {
            if let Some((i, p)) = up
                .filter(|_| depth < MAX_UPSTREAM)
                .and_then(|u| u.producer(repo.as_str(), &bundle))
            {
                if !seen.contains(&i) {
                    let below = self.path(path, slot);
                    seen.push(i);
                    self.collect(Parts::from(p), up, below, depth + 1, seen, out);
                    seen.pop();
                    continue;
                }
            }
            let comp = self.comp(path, KindKey::Input(slot, repo));
            let value = self.value(ValueKey::Bundle(bundle));
            out.push((comp, value));
        }
    }

    fn all(&mut self, run: &'a Run, up: Option<&Upstream<'a>>) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        self.collect(Parts::from(run), up, 0, 0, &mut Vec::new(), &mut out);
        out
    }
}

/// "the runs of step train have no component "x": they have ...".
fn no_component(
    step: &str,
    asked: &str,
    direct: &BTreeSet<Component>,
    up: &BTreeSet<Component>,
) -> Error {
    let names = |s: &BTreeSet<Component>| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let upstream = if up.is_empty() {
        " (no input of theirs was produced by a recorded run)".to_owned()
    } else {
        format!("; through lineage: {}", names(up))
    };
    Error::InvalidInput(format!(
        "the runs of step {step:?} have no component {asked:?}: they have {}{upstream}",
        names(direct)
    ))
}

/// The rows of a run table, sorted as asked.
fn table_runs(index: &mut RunIndex, query: &CompareQuery) -> Result<Vec<Run>> {
    let mut runs = index.select(query)?;
    if let Some(sort) = &query.sort {
        let key = SortKey::resolve(&sort.key, runs.iter())?;
        let mut keyed: Vec<(Option<SortValue>, Run)> =
            runs.into_iter().map(|r| (key.value(&r), r)).collect();
        keyed.sort_by(|(a, _), (b, _)| cmp_sort(a, b, sort.descending));
        runs = keyed.into_iter().map(|(_, r)| r).collect();
    }
    Ok(runs)
}

/// The runs of a group, before they are moved into it: (index, value of the varying
/// components).
type Members = Vec<(usize, Vec<Option<String>>)>;

/// The groups of a variation, before the runs are moved into them.
struct Grouping {
    varies: Vec<Component>,
    /// The fixed components and the runs of each group.
    groups: Vec<(Vec<ComponentValue>, Members)>,
    left_out: LeftOut,
}

/// Groups `rows` (each run's components and values) by every component but `varies`.
fn group(it: &Interner<'_>, rows: &[Vec<(u32, u32)>], varies: &[u32]) -> Grouping {
    let mut universe: Vec<u32> = rows
        .iter()
        .flatten()
        .map(|(c, _)| *c)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    universe.sort_by_cached_key(|&c| it.component(c));
    let mut column: Vec<Option<usize>> = vec![None; it.comp_list.len()];
    for (i, &c) in universe.iter().enumerate() {
        column[c as usize] = Some(i);
    }
    let table: Vec<Vec<Option<u32>>> = rows
        .iter()
        .map(|comps| {
            let mut row = vec![None; universe.len()];
            for &(c, v) in comps {
                if let Some(i) = column[c as usize] {
                    row[i] = Some(v);
                }
            }
            row
        })
        .collect();
    let varied: Vec<usize> = varies.iter().filter_map(|&c| column[c as usize]).collect();
    let others: Vec<usize> = (0..universe.len())
        .filter(|i| !varied.contains(i))
        .collect();
    let project = |row: &[Option<u32>], cols: &[usize]| -> Vec<Option<u32>> {
        cols.iter().map(|&i| row[i]).collect()
    };
    let mut texts: HashMap<u32, String> = HashMap::default();
    let mut text =
        |v: Option<u32>| v.map(|id| texts.entry(id).or_insert_with(|| it.text(id)).clone());

    // Groups: equal in every other component.
    let mut order: Vec<Vec<Option<u32>>> = Vec::new();
    let mut classes: HashMap<Vec<Option<u32>>, Vec<usize>> = HashMap::default();
    for (i, row) in table.iter().enumerate() {
        let key = project(row, &others);
        classes
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(i);
    }
    let mut groups = Vec::new();
    let mut left: Vec<usize> = Vec::new();
    for key in &order {
        let members = &classes[key];
        let values: HashSet<Vec<Option<u32>>> = members
            .iter()
            .map(|&i| project(&table[i], &varied))
            .collect();
        if values.len() < 2 {
            left.extend(members);
            continue;
        }
        let runs: Members = members
            .iter()
            .map(|&i| (i, varied.iter().map(|&c| text(table[i][c])).collect()))
            .collect();
        let fixed = others
            .iter()
            .zip(key)
            .map(|(&c, v)| ComponentValue {
                component: it.component(universe[c]),
                value: text(*v),
            })
            .collect();
        groups.push((fixed, runs));
    }

    // Why the others are out: which single other component, allowed to differ too, would put
    // each in a group.
    let mut by = Vec::new();
    let mut explained: HashSet<usize> = HashSet::default();
    if !left.is_empty() {
        for (j, &c) in others.iter().enumerate() {
            let rest: Vec<usize> = others
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != j)
                .map(|(_, &i)| i)
                .collect();
            let mut values: HashMap<Vec<Option<u32>>, HashSet<Vec<Option<u32>>>> =
                HashMap::default();
            for row in &table {
                let v = values.entry(project(row, &rest)).or_default();
                if v.len() < 2 {
                    v.insert(project(row, &varied));
                }
            }
            let n = left
                .iter()
                .filter(|&&i| values[&project(&table[i], &rest)].len() >= 2)
                .inspect(|&&i| {
                    explained.insert(i);
                })
                .count();
            if n > 0 {
                by.push((it.component(universe[c]), n));
            }
        }
        by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    Grouping {
        varies: varied.iter().map(|&i| it.component(universe[i])).collect(),
        groups,
        left_out: LeftOut {
            runs: left.len(),
            other: left.len() - explained.len(),
            by,
        },
    }
}

/// The components of `it` among `rows` that `name` matches.
fn matching(it: &Interner<'_>, rows: &[Vec<(u32, u32)>], name: &ComponentName) -> Vec<u32> {
    let ids: BTreeSet<u32> = rows.iter().flatten().map(|(c, _)| *c).collect();
    let mut m: Vec<u32> = ids
        .into_iter()
        .filter(|&c| name.matches(&it.component(c)))
        .collect();
    m.sort_by_cached_key(|&c| it.component(c));
    m
}

fn names_of(it: &Interner<'_>, rows: &[Vec<(u32, u32)>]) -> BTreeSet<Component> {
    rows.iter()
        .flatten()
        .map(|(c, _)| *c)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .map(|c| it.component(c))
        .collect()
}

/// [`Datamon::vary_runs`] once the runs are read.
fn vary(
    index: &mut RunIndex,
    query: &CompareQuery,
    step: &str,
    component: &str,
    name: &ComponentName,
) -> Result<Variation> {
    let steps = index.steps();
    let runs = index.select(query)?;
    let empty = Variation {
        step: step.to_owned(),
        asked: component.to_owned(),
        varies: Vec::new(),
        upstream: false,
        runs: 0,
        groups: Vec::new(),
        left_out: LeftOut::default(),
        steps,
    };
    if runs.is_empty() {
        return Ok(empty);
    }
    let kind_of = |c: &Component| match &c.kind {
        ComponentKind::Code => 0,
        ComponentKind::Param { .. } => 1,
        ComponentKind::Input { .. } => 2,
    };
    let check = |g: &[Component]| -> Result<()> {
        if g.iter().any(|c| kind_of(c) != kind_of(&g[0])) {
            return Err(Error::InvalidInput(format!(
                "component {component:?} is ambiguous: it names {}; say param:NAME or input:REPO",
                g.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            )));
        }
        Ok(())
    };

    // The runs' own components first; through lineage only if the name is not among them.
    let grouping = {
        let mut it = Interner::new();
        let rows: Vec<Vec<(u32, u32)>> = runs.iter().map(|r| it.all(r, None)).collect();
        let found = if name.via.is_some() {
            Vec::new()
        } else {
            matching(&it, &rows, name)
        };
        if found.is_empty() {
            let direct = names_of(&it, &rows);
            let parsed = index.upstream(&runs)?;
            let up = Upstream {
                index,
                runs: &parsed,
            };
            let mut it = Interner::new();
            let rows: Vec<Vec<(u32, u32)>> = runs.iter().map(|r| it.all(r, Some(&up))).collect();
            let found = matching(&it, &rows, name);
            if found.is_empty() {
                let up: BTreeSet<Component> = names_of(&it, &rows)
                    .into_iter()
                    .filter(|c| c.depth() > 0)
                    .collect();
                return Err(no_component(step, component, &direct, &up));
            }
            check(&found.iter().map(|&c| it.component(c)).collect::<Vec<_>>())?;
            (group(&it, &rows, &found), true)
        } else {
            check(&found.iter().map(|&c| it.component(c)).collect::<Vec<_>>())?;
            (group(&it, &rows, &found), false)
        }
    };
    let (grouping, upstream) = grouping;

    let sort_key = match &query.sort {
        Some(s) => Some((SortKey::resolve(&s.key, runs.iter())?, s.descending)),
        None => None,
    };
    let n_runs = runs.len();
    let mut runs: Vec<Option<Run>> = runs.into_iter().map(Some).collect();
    let groups = grouping
        .groups
        .into_iter()
        .map(|(fixed, members)| {
            let mut vruns: Vec<VaryRun> = members
                .into_iter()
                .map(|(i, value)| VaryRun {
                    value,
                    run: runs[i].take().expect("each run is in one group"),
                })
                .collect();
            match &sort_key {
                Some((k, desc)) => {
                    vruns.sort_by(|a, b| cmp_sort(&k.value(&a.run), &k.value(&b.run), *desc))
                }
                None => vruns.sort_by(|a, b| {
                    a.value
                        .iter()
                        .zip(&b.value)
                        .map(|(x, y)| cmp_values(x.as_deref(), y.as_deref()))
                        .find(|o| o.is_ne())
                        .unwrap_or(Ordering::Equal)
                }),
            }
            VaryGroup { fixed, runs: vruns }
        })
        .collect();
    Ok(Variation {
        varies: grouping.varies,
        upstream,
        runs: n_runs,
        groups,
        left_out: grouping.left_out,
        ..empty
    })
}

impl Datamon {
    /// Every run, indexed (see [`RunIndex`]). The records of `query`'s step and time (when
    /// given) are parsed whole on the way; the parsing runs on the blocking pool, while the
    /// store is being listed.
    async fn run_index(&self, query: Option<&CompareQuery>) -> Result<RunIndex> {
        let wanted = query.map(|q| (q.step.clone(), q.since));
        let entries = self
            .sync_prepared::<Run, _, _>(keys::RUNS, "runs", move |lines| {
                par_map(lines, |(_, json)| {
                    let link: Link = serde_json::from_str(json).ok()?;
                    let whole = match &wanted {
                        Some((step, since))
                            if step.as_ref().is_none_or(|s| *s == link.step)
                                && since.is_none_or(|t| link.started_at >= t) =>
                        {
                            Some(Box::new(serde_json::from_str::<Run>(json).ok()?))
                        }
                        _ => None,
                    };
                    Some((link, whole))
                })
            })
            .await?;
        Ok(tokio::task::spawn_blocking(move || RunIndex::new(entries)).await?)
    }

    /// The labels currently on each bundle of `repos` (a repo that is gone has none).
    async fn labels_of(
        &self,
        repos: BTreeSet<RepoName>,
    ) -> Result<HashMap<(RepoName, BundleId), Vec<LabelName>>> {
        let lists = futures::stream::iter(repos.into_iter().map(|repo| async move {
            match self.list_labels(&repo).await {
                Ok(l) => Ok((repo, l)),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok((repo, Vec::new())),
                Err(e) => Err(e),
            }
        }))
        .buffer_unordered(8)
        .collect::<Vec<Result<_>>>()
        .await;
        let mut out: HashMap<(RepoName, BundleId), Vec<LabelName>> = HashMap::default();
        for l in lists {
            let (repo, labels) = l?;
            for (name, rec) in labels {
                out.entry((repo.clone(), rec.bundle))
                    .or_default()
                    .push(name);
            }
        }
        Ok(out)
    }

    /// A table of the runs matching `query`: code version, parameters, input and output
    /// bundles (with the labels on them now) and metrics of each, by start time or as
    /// [`CompareQuery::sort`] says.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a sort key that no run has; a store error.
    pub async fn compare_runs(&self, query: &CompareQuery) -> Result<RunTable> {
        let mut index = self.run_index(Some(query)).await?;
        let q = query.clone();
        let (runs, steps) = tokio::task::spawn_blocking(move || {
            let runs = table_runs(&mut index, &q);
            runs.map(|r| (r, index.steps()))
        })
        .await??;
        let repos: BTreeSet<RepoName> = runs
            .iter()
            .flat_map(|r| {
                r.inputs
                    .iter()
                    .map(|i| i.repo.clone())
                    .chain(r.outputs.iter().map(|o| o.repo.clone()))
            })
            .collect();
        let labels = self.labels_of(repos).await?;
        let row_bundles = |s: Vec<(String, RepoName, BundleId)>| -> Vec<RowBundle> {
            s.into_iter()
                .map(|(slot, repo, bundle)| RowBundle {
                    labels: labels
                        .get(&(repo.clone(), bundle))
                        .cloned()
                        .unwrap_or_default(),
                    slot,
                    repo,
                    bundle,
                })
                .collect()
        };
        let mut params = BTreeSet::new();
        let mut metrics = BTreeSet::new();
        let mut inputs: Vec<String> = Vec::new();
        let mut outputs: Vec<String> = Vec::new();
        let mut rows = Vec::with_capacity(runs.len());
        for r in runs {
            params.extend(r.params.keys().cloned());
            metrics.extend(r.metrics.keys().cloned());
            let ins = row_bundles(input_slots(&r));
            let outs = row_bundles(output_slots(&r));
            for (list, seen) in [(&ins, &mut inputs), (&outs, &mut outputs)] {
                for b in list {
                    if !seen.contains(&b.slot) {
                        seen.push(b.slot.clone());
                    }
                }
            }
            rows.push(RunRow {
                run: r,
                inputs: ins,
                outputs: outs,
            });
        }
        Ok(RunTable {
            rows,
            params: params.into_iter().collect(),
            metrics: metrics.into_iter().collect(),
            inputs,
            outputs,
            steps,
        })
    }

    /// "If only `component` changes, how does the result vary?": the runs of the query's step
    /// grouped so that the runs of a group are identical in every other component (code,
    /// parameters, inputs) and take at least two values of `component`. `component` is `code`,
    /// a parameter name, an input repo, or a full component name (see the module docs); a name
    /// the step's runs do not have is looked up through lineage, so `raw` finds the raw-data
    /// input two steps up. Runs that differ from all others in more than that are left out,
    /// counted, with the components that kept them out.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the query names no step, or for a component name the
    /// runs do not have (the message lists those they have) or that names different kinds of
    /// component; a store error.
    pub async fn vary_runs(&self, query: &CompareQuery, component: &str) -> Result<Variation> {
        let Some(step) = query.step.clone() else {
            return Err(Error::InvalidInput(
                "a variation is over the runs of one step: name the step".into(),
            ));
        };
        let name = ComponentName::parse(component)?;
        let mut index = self.run_index(Some(query)).await?;
        let (q, c) = (query.clone(), component.to_owned());
        tokio::task::spawn_blocking(move || vary(&mut index, &q, &step, &c, &name)).await?
    }

    /// The input and output slots of two runs side by side, with file-level changes where the
    /// bundles differ (the index is loaded once, into `index`, when a tree diff is needed);
    /// the bundle records read on the way go into `records`.
    async fn slot_diffs(
        &self,
        a: Vec<(String, RepoName, BundleId)>,
        b: Vec<(String, RepoName, BundleId)>,
        index: &mut Option<Index>,
        records: &mut HashMap<(RepoName, BundleId), Bundle>,
    ) -> Result<Vec<BundleDiff>> {
        let mut out: Vec<BundleDiff> = a
            .into_iter()
            .map(|(key, repo, id)| BundleDiff {
                key,
                repo,
                a: Some(id),
                b: None,
                changes: Vec::new(),
            })
            .collect();
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
        for d in &mut out {
            let (Some(x), Some(y)) = (d.a, d.b) else {
                continue;
            };
            if x == y {
                continue;
            }
            for id in [x, y] {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    records.entry((d.repo.clone(), id))
                {
                    e.insert(self.get_bundle(&d.repo, &id).await?);
                }
            }
            let ra = records[&(d.repo.clone(), x)].root;
            let rb = records[&(d.repo.clone(), y)].root;
            if ra == rb {
                continue;
            }
            if index.is_none() {
                *index = Some(self.store.load_index().await?);
            }
            let idx = index.as_ref().expect("loaded above");
            d.changes = self.diff_roots(idx, ra, rb).await?;
        }
        Ok(out)
    }

    /// What differs between two runs, as [`Datamon::diff_runs`] says it.
    async fn pair_diff(
        &self,
        ra: Run,
        rb: Run,
        index: &mut Option<Index>,
        records: &mut HashMap<(RepoName, BundleId), Bundle>,
    ) -> Result<RunDiff> {
        let inputs = self
            .slot_diffs(input_slots(&ra), input_slots(&rb), index, records)
            .await?;
        let outputs = self
            .slot_diffs(output_slots(&ra), output_slots(&rb), index, records)
            .await?;
        Ok(RunDiff {
            code_changed: ra.code != rb.code,
            params: value_diffs(&ra.params, &rb.params),
            metrics: value_diffs(&ra.metrics, &rb.metrics),
            inputs,
            outputs,
            a: ra,
            b: rb,
        })
    }

    /// What differs between runs `a` and `b`, and why: the two runs compared as
    /// [`Datamon::diff_runs`] does, then, for every input slot whose bundles differ and were
    /// both produced by recorded runs, those two producing runs, and so on upstream, step by
    /// step. The causes are the differences not explained by one further upstream (code,
    /// parameters, inputs no recorded run produced): when there is exactly one,
    /// [`DeepDiff::only`] names the one component that alone differs, e.g. the raw-data bundle
    /// two steps up.
    ///
    /// # Errors
    /// [`Error::RunNotFound`]; a store error.
    pub async fn diff_runs_deep(
        &self,
        a: &RunId,
        b: &RunId,
        opts: DeepOptions,
    ) -> Result<DeepDiff> {
        let (ra, rb) = futures::try_join!(self.get_run(a), self.get_run(b))?;
        let runs = self.run_index(None).await?;
        let limit = opts.depth.unwrap_or(usize::MAX);
        let mut index: Option<Index> = None;
        let mut records: HashMap<(RepoName, BundleId), Bundle> = HashMap::default();
        let mut steps: Vec<DeepStep> = Vec::new();
        let mut seen: HashMap<(RunId, RunId), usize> = HashMap::default();
        let mut pending: Vec<(Run, Run, usize, Vec<String>)> = vec![(ra, rb, 0, Vec::new())];
        // Breadth first: `pending` holds the pairs of the next index to fill, in order.
        let mut next = 0;
        while next < pending.len() {
            let (ra, rb, depth, via) = pending[next].clone();
            next += 1;
            let diff = self.pair_diff(ra, rb, &mut index, &mut records).await?;
            let mut inputs = Vec::new();
            for d in &diff.inputs {
                let origin = match (d.a, d.b) {
                    (Some(x), Some(y)) if x == y => InputOrigin::SameBundle,
                    (Some(_), Some(_)) if !d.changed() => InputOrigin::SameContent,
                    (Some(_), Some(_)) if depth >= limit => InputOrigin::DepthLimit,
                    (Some(x), Some(y)) => {
                        let pa = runs.producer(d.repo.as_str(), &x.to_string());
                        let pb = runs.producer(d.repo.as_str(), &y.to_string());
                        match (pa, pb) {
                            (Some(pa), Some(pb)) if pa != pb => {
                                let ids = (runs.run_id(pa)?, runs.run_id(pb)?);
                                let step = match seen.get(&ids) {
                                    Some(&s) => s,
                                    None => {
                                        let mut v = via.clone();
                                        v.push(d.key.clone());
                                        pending.push((
                                            runs.parse(pa)?,
                                            runs.parse(pb)?,
                                            depth + 1,
                                            v,
                                        ));
                                        seen.insert(ids, pending.len() - 1);
                                        pending.len() - 1
                                    }
                                };
                                InputOrigin::Followed { step }
                            }
                            (pa, pb) => InputOrigin::NoProducer {
                                a: pa.map(|i| runs.run_id(i)).transpose()?,
                                b: pb.map(|i| runs.run_id(i)).transpose()?,
                            },
                        }
                    }
                    _ => InputOrigin::OneSided,
                };
                inputs.push(InputTrace {
                    slot: d.key.clone(),
                    origin,
                });
            }
            steps.push(DeepStep {
                depth,
                via,
                diff,
                inputs,
            });
        }
        let mut causes = Vec::new();
        let mut done = HashSet::default();
        collect_causes(&steps, 0, &mut done, &mut causes);
        Ok(DeepDiff { steps, causes })
    }
}

/// The causes of step `i` (its own differences, and its followed inputs' causes, or the input
/// itself when the runs upstream differ in nothing), each step once.
fn collect_causes(steps: &[DeepStep], i: usize, done: &mut HashSet<usize>, out: &mut Vec<Cause>) {
    if !done.insert(i) {
        return;
    }
    let s = &steps[i];
    let d = &s.diff;
    let component = |kind: ComponentKind| CauseKind::Component {
        component: Component {
            via: s.via.clone(),
            kind,
        },
    };
    let cause = |kind, a, b, changes, unexplained| Cause {
        step: i,
        step_name: d.a.step.clone(),
        kind,
        a,
        b,
        changes,
        unexplained,
    };
    if d.a.step != d.b.step {
        out.push(cause(
            CauseKind::Step,
            Some(d.a.step.clone()),
            Some(d.b.step.clone()),
            Vec::new(),
            false,
        ));
    }
    if d.code_changed {
        out.push(cause(
            component(ComponentKind::Code),
            Some(d.a.code.to_string()),
            Some(d.b.code.to_string()),
            Vec::new(),
            false,
        ));
    }
    for p in d.params.iter().filter(|p| p.changed()) {
        out.push(cause(
            component(ComponentKind::Param { key: p.key.clone() }),
            p.a.clone(),
            p.b.clone(),
            Vec::new(),
            false,
        ));
    }
    let mut upstream = Vec::new();
    for (slot, t) in d.inputs.iter().zip(&s.inputs) {
        let input = |unexplained| {
            cause(
                component(ComponentKind::Input {
                    slot: slot.key.clone(),
                    repo: slot.repo.clone(),
                }),
                slot.a.map(|x| x.to_string()),
                slot.b.map(|x| x.to_string()),
                slot.changes.clone(),
                unexplained,
            )
        };
        match t.origin {
            InputOrigin::SameBundle | InputOrigin::SameContent => {}
            InputOrigin::OneSided | InputOrigin::NoProducer { .. } | InputOrigin::DepthLimit => {
                out.push(input(false));
            }
            InputOrigin::Followed { step } => {
                let before = out.len();
                let mut theirs = Vec::new();
                let first_visit = !done.contains(&step);
                collect_causes(steps, step, done, &mut theirs);
                if first_visit && theirs.is_empty() && before == out.len() {
                    out.push(input(true));
                } else {
                    upstream.extend(theirs);
                }
            }
        }
    }
    out.extend(upstream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let f: RunFilter = "lr=0.1".parse().unwrap();
        assert_eq!(
            f,
            RunFilter::Param {
                key: "lr".into(),
                value: "0.1".into()
            }
        );
        assert!(matches!(
            "metric.acc=0.5".parse().unwrap(),
            RunFilter::Metric { .. }
        ));
        assert!(matches!(
            "meta.team=a=b".parse().unwrap(),
            RunFilter::Meta { ref value, .. } if value == "a=b"
        ));
        assert_eq!(
            "status=failed".parse::<RunFilter>().unwrap(),
            RunFilter::Status(RunStatus::Failed)
        );
        for bad in [
            "",
            "lr",
            "=1",
            "status=odd",
            "code=",
            "input.raw=",
            "meta.=x",
        ] {
            assert!(bad.parse::<RunFilter>().is_err(), "{bad}");
        }
        assert!(json_is(&serde_json::json!(0.5), "0.50"));
        assert!(json_is(&serde_json::json!("x"), "x"));
        assert!(!json_is(&serde_json::json!(1), "2"));
    }

    #[test]
    fn sorts_parse() {
        let s: RunSort = "-acc".parse().unwrap();
        assert!(s.descending && s.key == "acc");
        let s: RunSort = "loss:desc".parse().unwrap();
        assert!(s.descending && s.key == "loss");
        let s: RunSort = "loss".parse().unwrap();
        assert!(!s.descending);
        assert!("-".parse::<RunSort>().is_err());
    }

    fn comp(via: &[&str], kind: ComponentKind) -> Component {
        Component {
            via: via.iter().map(|s| (*s).to_owned()).collect(),
            kind,
        }
    }

    #[test]
    fn component_names() {
        let raw = comp(
            &["prepared"],
            ComponentKind::Input {
                slot: "raw".into(),
                repo: "raw".parse().unwrap(),
            },
        );
        assert_eq!(raw.to_string(), "prepared/input:raw");
        let part = comp(
            &["model:model.txt"],
            ComponentKind::Input {
                slot: "prepared".into(),
                repo: "prepared".parse().unwrap(),
            },
        );
        let lr = comp(&[], ComponentKind::Param { key: "lr".into() });
        let code = comp(&[], ComponentKind::Code);
        let m = |s: &str, c: &Component| ComponentName::parse(s).unwrap().matches(c);
        assert!(m("raw", &raw) && m("input:raw", &raw) && m("prepared/raw", &raw));
        assert!(m("prepared/input:raw", &raw) && !m("other/raw", &raw));
        assert!(!m("param:raw", &raw) && !m("code", &raw));
        assert!(m("model:model.txt/input:prepared", &part));
        assert!(m("lr", &lr) && m("param:lr", &lr) && !m("input:lr", &lr));
        assert!(m("code", &code) && !m("prepared/code", &code));
        for bad in ["", "param:", "a//code", "/x"] {
            assert!(ComponentName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_order_as_numbers_then_text() {
        assert_eq!(cmp_values(Some("0.5"), Some("0.25")), Ordering::Greater);
        assert_eq!(cmp_values(Some("10"), Some("9")), Ordering::Greater);
        assert_eq!(cmp_values(Some("b"), Some("a")), Ordering::Greater);
        assert_eq!(cmp_values(None, Some("a")), Ordering::Greater);
    }
}
