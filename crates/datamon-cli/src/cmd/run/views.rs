//! How runs look: the text of `run list`, `run get` and `run diff`, and the JSON views (version
//! 1) that `--json` prints, shared with `bundle lineage`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use datamon::{BundleDiff, Run, RunDiff, RunStatus, ValueDiff};
use serde::Serialize;

use crate::output;

pub(crate) fn short_time(t: &DateTime<Utc>) -> String {
    output::time(t)
}

pub(crate) fn run_line(r: &Run) -> String {
    format!(
        "{} , {} , {} , {} , {}",
        r.id,
        short_time(&r.started_at),
        r.step,
        r.status,
        r.code
    )
}

pub(crate) fn show_run(r: &Run) -> String {
    let mut s = String::new();
    s.push_str(&format!("run      {}\n", r.id));
    s.push_str(&format!("step     {}\n", r.step));
    let exit = r
        .exit_code
        .map(|c| format!(" (exit {c})"))
        .unwrap_or_default();
    s.push_str(&format!("status   {}{exit}\n", r.status));
    s.push_str(&format!("code     {}\n", r.code));
    if !r.command.is_empty() {
        s.push_str(&format!("command  {}\n", r.command.join(" ")));
    }
    s.push_str(&format!("host     {}\n", r.host));
    s.push_str(&format!("user     {}\n", r.user));
    s.push_str(&format!("started  {}\n", short_time(&r.started_at)));
    let secs = (r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0;
    s.push_str(&format!(
        "finished {} ({secs:.1} s)\n",
        short_time(&r.finished_at)
    ));
    for (k, v) in &r.params {
        s.push_str(&format!("param    {k}={v}\n"));
    }
    for i in &r.inputs {
        let path = i.path.as_ref().map(|p| format!(":{p}")).unwrap_or_default();
        let sel = i
            .selector
            .as_ref()
            .map(|x| format!(" (from {x})"))
            .unwrap_or_default();
        s.push_str(&format!("input    {}@{}{path}{sel}\n", i.repo, i.bundle));
    }
    for o in &r.outputs {
        s.push_str(&format!("output   {}@{}\n", o.repo, o.bundle));
    }
    for (k, v) in &r.metrics {
        s.push_str(&format!("metric   {k}={v}\n"));
    }
    for (k, v) in &r.meta {
        s.push_str(&format!("meta     {k}={v}\n"));
    }
    s.trim_end().to_owned()
}

fn opt<T: std::fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "-".to_owned(), ToString::to_string)
}

pub(crate) fn show_diff(d: &RunDiff) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mark = |changed: bool| if changed { "changed" } else { "same" }.to_owned();
    let mut extra: Vec<(usize, Vec<String>)> = Vec::new();
    rows.push([
        "run".into(),
        d.a.id.to_string(),
        d.b.id.to_string(),
        String::new(),
    ]);
    rows.push([
        "step".into(),
        d.a.step.clone(),
        d.b.step.clone(),
        mark(d.a.step != d.b.step),
    ]);
    rows.push([
        "status".into(),
        d.a.status.to_string(),
        d.b.status.to_string(),
        mark(d.a.status != d.b.status),
    ]);
    rows.push([
        "code".into(),
        d.a.code.to_string(),
        d.b.code.to_string(),
        mark(d.code_changed),
    ]);
    for p in &d.params {
        rows.push([
            format!("param {}", p.key),
            opt(p.a.as_ref()),
            opt(p.b.as_ref()),
            mark(p.changed()),
        ]);
    }
    for (what, list) in [("input", &d.inputs), ("output", &d.outputs)] {
        for i in list {
            let status = match (i.a, i.b) {
                (Some(x), Some(y)) if x == y => "same bundle".to_owned(),
                (Some(_), Some(_)) if i.changes.is_empty() => "same content".to_owned(),
                (Some(_), Some(_)) => format!("changed: {} paths", i.changes.len()),
                _ => "changed".to_owned(),
            };
            rows.push([
                format!("{what} {}", i.key),
                opt(i.a.as_ref()),
                opt(i.b.as_ref()),
                status,
            ]);
            if !i.changes.is_empty() {
                extra.push((
                    rows.len() - 1,
                    i.changes.iter().map(ToString::to_string).collect(),
                ));
            }
        }
    }
    for m in &d.metrics {
        rows.push([
            format!("metric {}", m.key),
            opt(m.a.as_ref()),
            opt(m.b.as_ref()),
            mark(m.changed()),
        ]);
    }
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r[2].len()).max().unwrap_or(0);
    let mut s = String::new();
    for (n, r) in rows.iter().enumerate() {
        let line = format!("{:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3]);
        s.push_str(line.trim_end());
        s.push('\n');
        for (_, changes) in extra.iter().filter(|(i, _)| *i == n) {
            for c in changes {
                s.push_str(&format!("{:w0$}    {c}\n", ""));
            }
        }
    }
    s.trim_end().to_owned()
}

// ---- JSON views (version 1) ----

#[derive(Serialize)]
struct InputView {
    repo: String,
    bundle: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

#[derive(Serialize)]
struct OutputView {
    repo: String,
    bundle: String,
}

#[derive(Serialize)]
pub(crate) struct RunView {
    id: String,
    step: String,
    status: RunStatus,
    exit_code: Option<i32>,
    command: Vec<String>,
    git_commit: Option<String>,
    git_dirty: Option<bool>,
    image: Option<String>,
    host: String,
    user: String,
    started_at: String,
    finished_at: String,
    params: BTreeMap<String, String>,
    inputs: Vec<InputView>,
    outputs: Vec<OutputView>,
    metrics: BTreeMap<String, serde_json::Value>,
    meta: BTreeMap<String, String>,
}

impl From<&Run> for RunView {
    fn from(r: &Run) -> Self {
        RunView {
            id: r.id.to_string(),
            step: r.step.clone(),
            status: r.status,
            exit_code: r.exit_code,
            command: r.command.clone(),
            git_commit: r.code.git_commit.clone(),
            git_dirty: r.code.git_dirty,
            image: r.code.image.clone(),
            host: r.host.clone(),
            user: r.user.clone(),
            started_at: output::time(&r.started_at),
            finished_at: output::time(&r.finished_at),
            params: r.params.clone(),
            inputs: r
                .inputs
                .iter()
                .map(|i| InputView {
                    repo: i.repo.to_string(),
                    bundle: i.bundle.to_string(),
                    selector: i.selector.clone(),
                    path: i.path.clone(),
                })
                .collect(),
            outputs: r
                .outputs
                .iter()
                .map(|o| OutputView {
                    repo: o.repo.to_string(),
                    bundle: o.bundle.to_string(),
                })
                .collect(),
            metrics: r.metrics.clone(),
            meta: r.meta.clone(),
        }
    }
}

#[derive(Serialize)]
struct SlotView {
    key: String,
    repo: String,
    a: Option<String>,
    b: Option<String>,
    changed: bool,
    changes: Vec<datamon::Change>,
}

impl From<&BundleDiff> for SlotView {
    fn from(d: &BundleDiff) -> Self {
        SlotView {
            key: d.key.clone(),
            repo: d.repo.to_string(),
            a: d.a.map(|x| x.to_string()),
            b: d.b.map(|x| x.to_string()),
            changed: d.changed(),
            changes: d.changes.clone(),
        }
    }
}

#[derive(Serialize)]
struct ValueView<T> {
    key: String,
    a: Option<T>,
    b: Option<T>,
    changed: bool,
}

fn value_views<T: Clone + PartialEq>(v: &[ValueDiff<T>]) -> Vec<ValueView<T>> {
    v.iter()
        .map(|d| ValueView {
            key: d.key.clone(),
            a: d.a.clone(),
            b: d.b.clone(),
            changed: d.changed(),
        })
        .collect()
}

#[derive(Serialize)]
pub(crate) struct RunDiffView {
    a: RunView,
    b: RunView,
    code_changed: bool,
    params: Vec<ValueView<String>>,
    inputs: Vec<SlotView>,
    outputs: Vec<SlotView>,
    metrics: Vec<ValueView<serde_json::Value>>,
}

impl From<&RunDiff> for RunDiffView {
    fn from(d: &RunDiff) -> Self {
        RunDiffView {
            a: RunView::from(&d.a),
            b: RunView::from(&d.b),
            code_changed: d.code_changed,
            params: value_views(&d.params),
            inputs: d.inputs.iter().map(SlotView::from).collect(),
            outputs: d.outputs.iter().map(SlotView::from).collect(),
            metrics: value_views(&d.metrics),
        }
    }
}

// ---- `run compare` and `run diff --deep` (version 1) ----

/// A bundle of a compared run: its slot and the labels on it now.
#[derive(Serialize)]
struct RowBundleView {
    slot: String,
    repo: String,
    bundle: String,
    labels: Vec<String>,
}

impl From<&datamon::RowBundle> for RowBundleView {
    fn from(b: &datamon::RowBundle) -> Self {
        RowBundleView {
            slot: b.slot.clone(),
            repo: b.repo.to_string(),
            bundle: b.bundle.to_string(),
            labels: b.labels.iter().map(ToString::to_string).collect(),
        }
    }
}

/// One line of `run compare --json`: the run (as `run get`), and its bundles with their slots
/// and labels.
#[derive(Serialize)]
pub(crate) struct CompareRowView {
    run: RunView,
    inputs: Vec<RowBundleView>,
    outputs: Vec<RowBundleView>,
}

impl From<&datamon::RunRow> for CompareRowView {
    fn from(r: &datamon::RunRow) -> Self {
        CompareRowView {
            run: RunView::from(&r.run),
            inputs: r.inputs.iter().map(RowBundleView::from).collect(),
            outputs: r.outputs.iter().map(RowBundleView::from).collect(),
        }
    }
}

#[derive(Serialize)]
struct ComponentValueView {
    component: String,
    value: Option<String>,
}

#[derive(Serialize)]
struct VaryRunView {
    value: Vec<Option<String>>,
    run: RunView,
}

#[derive(Serialize)]
struct VaryGroupView {
    fixed: Vec<ComponentValueView>,
    runs: Vec<VaryRunView>,
}

#[derive(Serialize)]
struct LeftOutByView {
    component: String,
    runs: usize,
}

#[derive(Serialize)]
struct LeftOutView {
    runs: usize,
    by: Vec<LeftOutByView>,
    other: usize,
}

/// `run compare --vary --json`.
#[derive(Serialize)]
pub(crate) struct VariationView {
    step: String,
    component: String,
    varies: Vec<String>,
    upstream: bool,
    runs: usize,
    groups: Vec<VaryGroupView>,
    left_out: LeftOutView,
    steps: Vec<String>,
}

impl From<&datamon::Variation> for VariationView {
    fn from(v: &datamon::Variation) -> Self {
        VariationView {
            step: v.step.clone(),
            component: v.asked.clone(),
            varies: v.varies.iter().map(ToString::to_string).collect(),
            upstream: v.upstream,
            runs: v.runs,
            groups: v
                .groups
                .iter()
                .map(|g| VaryGroupView {
                    fixed: g
                        .fixed
                        .iter()
                        .map(|f| ComponentValueView {
                            component: f.component.to_string(),
                            value: f.value.clone(),
                        })
                        .collect(),
                    runs: g
                        .runs
                        .iter()
                        .map(|r| VaryRunView {
                            value: r.value.clone(),
                            run: RunView::from(&r.run),
                        })
                        .collect(),
                })
                .collect(),
            left_out: LeftOutView {
                runs: v.left_out.runs,
                by: v
                    .left_out
                    .by
                    .iter()
                    .map(|(c, n)| LeftOutByView {
                        component: c.to_string(),
                        runs: *n,
                    })
                    .collect(),
                other: v.left_out.other,
            },
            steps: v.steps.clone(),
        }
    }
}

#[derive(Serialize)]
struct InputTraceView {
    slot: String,
    /// same_bundle, same_content, one_sided, followed, no_producer, depth_limit
    origin: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_a: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_b: Option<String>,
}

impl From<&datamon::InputTrace> for InputTraceView {
    fn from(t: &datamon::InputTrace) -> Self {
        use datamon::InputOrigin as O;
        let (origin, step, pa, pb) = match &t.origin {
            O::SameBundle => ("same_bundle", None, None, None),
            O::SameContent => ("same_content", None, None, None),
            O::OneSided => ("one_sided", None, None, None),
            O::Followed { step } => ("followed", Some(*step), None, None),
            O::NoProducer { a, b } => ("no_producer", None, *a, *b),
            O::DepthLimit => ("depth_limit", None, None, None),
            _ => ("other", None, None, None),
        };
        InputTraceView {
            slot: t.slot.clone(),
            origin,
            step,
            producer_a: pa.map(|r| r.to_string()),
            producer_b: pb.map(|r| r.to_string()),
        }
    }
}

#[derive(Serialize)]
struct DeepStepView {
    depth: usize,
    via: Vec<String>,
    diff: RunDiffView,
    inputs: Vec<InputTraceView>,
}

#[derive(Serialize)]
struct CauseView {
    step: usize,
    step_name: String,
    /// `step` (the runs are of different steps) or `component`
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<String>,
    a: Option<String>,
    b: Option<String>,
    changes: Vec<datamon::Change>,
    unexplained: bool,
}

impl From<&datamon::Cause> for CauseView {
    fn from(c: &datamon::Cause) -> Self {
        let (kind, component) = match &c.kind {
            datamon::CauseKind::Component { component } => {
                ("component", Some(component.to_string()))
            }
            _ => ("step", None),
        };
        CauseView {
            step: c.step,
            step_name: c.step_name.clone(),
            kind,
            component,
            a: c.a.clone(),
            b: c.b.clone(),
            changes: c.changes.clone(),
            unexplained: c.unexplained,
        }
    }
}

/// `run diff --deep --json`.
#[derive(Serialize)]
pub(crate) struct DeepDiffView {
    a: String,
    b: String,
    steps: Vec<DeepStepView>,
    causes: Vec<CauseView>,
    only: Option<CauseView>,
}

impl From<&datamon::DeepDiff> for DeepDiffView {
    fn from(d: &datamon::DeepDiff) -> Self {
        let top = d.steps.first().map(|s| (s.diff.a.id, s.diff.b.id));
        DeepDiffView {
            a: top.map(|t| t.0.to_string()).unwrap_or_default(),
            b: top.map(|t| t.1.to_string()).unwrap_or_default(),
            steps: d
                .steps
                .iter()
                .map(|s| DeepStepView {
                    depth: s.depth,
                    via: s.via.clone(),
                    diff: RunDiffView::from(&s.diff),
                    inputs: s.inputs.iter().map(InputTraceView::from).collect(),
                })
                .collect(),
            causes: d.causes.iter().map(CauseView::from).collect(),
            only: d.only().map(CauseView::from),
        }
    }
}
