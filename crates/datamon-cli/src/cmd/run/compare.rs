//! `datamon run compare` and `datamon run diff --deep`: queries across runs. The library answers
//! (`Datamon::compare_runs`, `Datamon::vary_runs`, `Datamon::diff_runs_deep`); this module
//! renders tables, CSV and JSON.

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use datamon::{
    BundleId, Cause, CauseKind, CodeVersion, CompareQuery, DeepDiff, DeepOptions, InputOrigin, Run,
    RunFilter, RunId, RunRow, RunSort, RunTable, Variation,
};

use super::views::{CompareRowView, DeepDiffView, VariationView};
use crate::cmd::parse::parse_time;
use crate::output;
use crate::Ctx;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Only runs of this step (required with --vary)
    #[arg(long)]
    step: Option<String>,
    /// Only runs matching: `KEY=VALUE` or `param.KEY=VALUE` (a parameter), `metric.KEY=VALUE`,
    /// `meta.KEY=VALUE`, `code=COMMIT_PREFIX`, `status=succeeded|failed`,
    /// `input.REPO=BUNDLE_PREFIX` (repeatable)
    #[arg(long = "where", value_name = "KEY=VALUE")]
    filters: Vec<RunFilter>,
    /// Only runs started at or after this time (RFC 3339, YYYY-MM-DD, or 30m/12h/7d ago)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Order by a metric or parameter (or time, id, step, status, code); `-NAME` or
    /// `NAME:desc` for largest first
    #[arg(long, value_name = "METRIC", allow_hyphen_values = true)]
    sort: Option<RunSort>,
    /// The columns, comma-separated: id, time, step, status, code, params, inputs, outputs,
    /// metrics, or one parameter, metric, input or output by name (`lr`, `metric:acc`,
    /// `input:raw`)
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    columns: Vec<String>,
    /// Group the runs of --step that are identical in everything but COMPONENT (a parameter
    /// name, an input repo, also one upstream through lineage, or `code`), showing each value
    #[arg(long, value_name = "COMPONENT", requires = "step")]
    vary: Option<String>,
    /// Print CSV (a header line, then one line per run) instead of a table
    #[arg(long)]
    csv: bool,
}

/// The `--deep` part of `run diff`.
#[derive(Debug, Args)]
pub struct DeepArgs {
    /// Also compare, step by step upstream, the runs that produced the two runs' differing
    /// inputs, and say which components alone explain the difference
    #[arg(long)]
    pub(crate) deep: bool,
    /// With --deep: at most this many steps upstream
    #[arg(long, value_name = "N", requires = "deep")]
    pub(crate) depth: Option<usize>,
}

/// `datamon run compare`.
pub(crate) async fn compare(a: CompareArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if a.csv && ctx.global.json {
        bail!("--csv and --json: choose one");
    }
    let query = CompareQuery {
        step: a.step.clone(),
        since: a.since.as_deref().map(parse_time).transpose()?,
        filters: a.filters.clone(),
        sort: a.sort.clone(),
    };
    let dm = ctx.open().await?;
    if let Some(component) = &a.vary {
        let v = dm.vary_runs(&query, component).await?;
        if v.runs == 0 {
            eprintln!("{}", no_runs(&query, &v.steps));
        } else if v.groups.is_empty() {
            eprintln!(
                "no two runs of step {:?} differ only in {}{}",
                v.step,
                varies(&v),
                left_out_summary(&v)
            );
        }
        if ctx.global.json {
            output::json(&VariationView::from(&v))?;
        } else if a.csv {
            output::line(vary_csv(&v, &a.columns)?.trim_end())?;
        } else if v.runs > 0 {
            output::line(vary_text(&v, &a.columns)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let t = dm.compare_runs(&query).await?;
    if t.rows.is_empty() {
        eprintln!("{}", no_runs(&query, &t.steps));
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.global.json {
        for r in &t.rows {
            output::json(&CompareRowView::from(r))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cols = columns(&t, &a.columns, query.step.is_none())?;
    if a.csv {
        output::line(table_csv(&t, &cols).trim_end())?;
    } else {
        output::line(table_text(&t, &cols))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `datamon run diff A B --deep`: exit 1 when the runs differ.
pub(crate) async fn deep(
    a: RunId,
    b: RunId,
    opts: &DeepArgs,
    ctx: &Ctx,
) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    let d = dm
        .diff_runs_deep(&a, &b, DeepOptions { depth: opts.depth })
        .await?;
    output::result(ctx.global.json, &DeepDiffView::from(&d), || deep_text(&d))?;
    Ok(if d.differs() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Why nothing matched.
fn no_runs(q: &CompareQuery, steps: &[String]) -> String {
    let recorded = if steps.is_empty() {
        "no run is recorded in this store".to_owned()
    } else {
        format!("recorded steps: {}", steps.join(", "))
    };
    match &q.step {
        Some(s) if !steps.contains(s) => format!("no runs of step {s:?} ({recorded})"),
        _ => {
            let mut what = Vec::new();
            if let Some(s) = &q.step {
                what.push(format!("step {s}"));
            }
            if let Some(t) = &q.since {
                what.push(format!("since {}", output::time(t)));
            }
            if !q.filters.is_empty() {
                what.push(format!("{} --where filters", q.filters.len()));
            }
            format!(
                "no runs match ({}); see `datamon run list`",
                if what.is_empty() {
                    recorded
                } else {
                    what.join(", ")
                }
            )
        }
    }
}

// ---- columns ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Col {
    Id,
    Time,
    Step,
    Status,
    Code,
    Param(String),
    Metric(String),
    Input(String),
    Output(String),
}

impl Col {
    fn header(&self) -> String {
        match self {
            Col::Id => "run".into(),
            Col::Time => "started".into(),
            Col::Step => "step".into(),
            Col::Status => "status".into(),
            Col::Code => "code".into(),
            Col::Param(k) | Col::Metric(k) | Col::Input(k) | Col::Output(k) => k.clone(),
        }
    }

    /// The header with its kind, for when two columns share a name.
    fn qualified(&self) -> String {
        match self {
            Col::Param(k) => format!("param:{k}"),
            Col::Metric(k) => format!("metric:{k}"),
            Col::Input(k) => format!("input:{k}"),
            Col::Output(k) => format!("output:{k}"),
            other => other.header(),
        }
    }
}

/// What a table or variation has, to resolve column names against.
struct Available {
    params: Vec<String>,
    metrics: Vec<String>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Available {
    fn of_table(t: &RunTable) -> Available {
        Available {
            params: t.params.clone(),
            metrics: t.metrics.clone(),
            inputs: t.inputs.clone(),
            outputs: t.outputs.clone(),
        }
    }

    fn of_runs<'a>(runs: impl Iterator<Item = &'a Run>) -> Available {
        let mut params = BTreeSet::new();
        let mut metrics = BTreeSet::new();
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for r in runs {
            params.extend(r.params.keys().cloned());
            metrics.extend(r.metrics.keys().cloned());
            let (ins, outs) = slot_names(r);
            for s in ins {
                if !inputs.contains(&s) {
                    inputs.push(s);
                }
            }
            for s in outs {
                if !outputs.contains(&s) {
                    outputs.push(s);
                }
            }
        }
        Available {
            params: params.into_iter().collect(),
            metrics: metrics.into_iter().collect(),
            inputs,
            outputs,
        }
    }

    fn list(&self) -> String {
        let group = |name: &str, items: &[String]| {
            if items.is_empty() {
                name.to_owned()
            } else {
                format!("{name} ({})", items.join(", "))
            }
        };
        format!(
            "id, time, step, status, code, {}, {}, {}, {}",
            group("params", &self.params),
            group("metrics", &self.metrics),
            group("inputs", &self.inputs),
            group("outputs", &self.outputs)
        )
    }

    fn resolve(&self, specs: &[String]) -> anyhow::Result<Vec<Col>> {
        let mut cols = Vec::new();
        for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let named = |prefix: &str| {
                spec.strip_prefix(&format!("{prefix}:"))
                    .or_else(|| spec.strip_prefix(&format!("{prefix}.")))
            };
            let found: Vec<Col> = match spec {
                "id" | "run" => vec![Col::Id],
                "time" | "started" => vec![Col::Time],
                "step" => vec![Col::Step],
                "status" => vec![Col::Status],
                "code" => vec![Col::Code],
                "params" => self.params.iter().cloned().map(Col::Param).collect(),
                "metrics" => self.metrics.iter().cloned().map(Col::Metric).collect(),
                "inputs" => self.inputs.iter().cloned().map(Col::Input).collect(),
                "outputs" => self.outputs.iter().cloned().map(Col::Output).collect(),
                _ => {
                    let col = if let Some(k) = named("param") {
                        self.params
                            .iter()
                            .any(|p| p == k)
                            .then(|| Col::Param(k.into()))
                    } else if let Some(k) = named("metric") {
                        self.metrics
                            .iter()
                            .any(|p| p == k)
                            .then(|| Col::Metric(k.into()))
                    } else if let Some(k) = named("input") {
                        self.inputs
                            .iter()
                            .any(|p| p == k)
                            .then(|| Col::Input(k.into()))
                    } else if let Some(k) = named("output") {
                        self.outputs
                            .iter()
                            .any(|p| p == k)
                            .then(|| Col::Output(k.into()))
                    } else if self.metrics.iter().any(|p| p == spec) {
                        Some(Col::Metric(spec.into()))
                    } else if self.params.iter().any(|p| p == spec) {
                        Some(Col::Param(spec.into()))
                    } else if self.inputs.iter().any(|p| p == spec) {
                        Some(Col::Input(spec.into()))
                    } else if self.outputs.iter().any(|p| p == spec) {
                        Some(Col::Output(spec.into()))
                    } else {
                        None
                    };
                    match col {
                        Some(c) => vec![c],
                        None => bail!(
                            "--columns {spec:?}: no such column; the runs have: {}",
                            self.list()
                        ),
                    }
                }
            };
            for c in found {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
        Ok(cols)
    }
}

fn columns(t: &RunTable, specs: &[String], with_step: bool) -> anyhow::Result<Vec<Col>> {
    let avail = Available::of_table(t);
    if !specs.is_empty() {
        return avail.resolve(specs);
    }
    let mut cols = vec![Col::Id, Col::Time];
    if with_step {
        cols.push(Col::Step);
    }
    if t.rows
        .iter()
        .any(|r| r.run.status != datamon::RunStatus::Succeeded)
    {
        cols.push(Col::Status);
    }
    cols.push(Col::Code);
    cols.extend(t.params.iter().cloned().map(Col::Param));
    cols.extend(t.inputs.iter().cloned().map(Col::Input));
    cols.extend(t.outputs.iter().cloned().map(Col::Output));
    cols.extend(t.metrics.iter().cloned().map(Col::Metric));
    Ok(cols)
}

/// Headers, qualified where two columns would share one.
fn headers(cols: &[Col]) -> Vec<String> {
    let plain: Vec<String> = cols.iter().map(Col::header).collect();
    cols.iter()
        .zip(&plain)
        .map(|(c, h)| {
            if plain.iter().filter(|x| *x == h).count() > 1 {
                c.qualified()
            } else {
                h.clone()
            }
        })
        .collect()
}

/// Input and output slot names of a run, as the library keys them.
fn slot_names(r: &Run) -> (Vec<String>, Vec<String>) {
    let number = |keys: Vec<String>| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        keys.into_iter()
            .map(|k| {
                let n = seen.entry(k.clone()).or_default();
                *n += 1;
                if *n == 1 {
                    k
                } else {
                    format!("{k}#{n}")
                }
            })
            .collect::<Vec<_>>()
    };
    let ins = number(
        r.inputs
            .iter()
            .map(|i| match &i.path {
                Some(p) => format!("{}:{p}", i.repo),
                None => i.repo.to_string(),
            })
            .collect(),
    );
    let outs = number(r.outputs.iter().map(|o| o.repo.to_string()).collect());
    (ins, outs)
}

// ---- cells ----

/// Shortest unique prefixes (at least 8 characters) of the ids shown.
struct Short(HashMap<String, usize>);

impl Short {
    fn new(ids: impl Iterator<Item = String>) -> Short {
        let mut ids: Vec<String> = ids.collect();
        ids.sort();
        ids.dedup();
        let common =
            |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let mut len = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            let mut n = 8;
            if i > 0 {
                n = n.max(common(id, &ids[i - 1]) + 1);
            }
            if i + 1 < ids.len() {
                n = n.max(common(id, &ids[i + 1]) + 1);
            }
            len.insert(id.clone(), n.min(id.len()));
        }
        Short(len)
    }

    fn of(&self, id: &str) -> String {
        let n = self.0.get(id).copied().unwrap_or(id.len());
        id[..n.min(id.len())].to_owned()
    }
}

fn code_cell(c: &CodeVersion, full: bool) -> String {
    match (&c.git_commit, &c.image) {
        (Some(g), _) => {
            let g = if full || g.len() <= 10 {
                g.clone()
            } else {
                g[..10].to_owned()
            };
            if c.git_dirty == Some(true) {
                format!("{g}+dirty")
            } else {
                g
            }
        }
        (None, Some(i)) => i.clone(),
        (None, None) => "-".into(),
    }
}

fn metric_cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "-".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// A cell of a run: full ids and times for CSV, short ones for the table.
fn cell(col: &Col, run: &Run, bundles: Option<&RunRow>, short: Option<&Short>) -> String {
    let id = |s: String| match short {
        Some(sh) => sh.of(&s),
        None => s,
    };
    let bundle =
        |list: &[datamon::RowBundle], slot: &str| match list.iter().find(|b| b.slot == slot) {
            Some(b) => {
                let mut s = id(b.bundle.to_string());
                if short.is_some() && !b.labels.is_empty() {
                    let labels: Vec<String> = b.labels.iter().map(ToString::to_string).collect();
                    s.push_str(&format!(" ({})", labels.join(",")));
                }
                s
            }
            None => "-".into(),
        };
    let slot_of = |slot: &str, inputs: bool| -> String {
        match bundles {
            Some(row) => bundle(if inputs { &row.inputs } else { &row.outputs }, slot),
            None => {
                let (ins, outs) = slot_names(run);
                let (names, ids): (Vec<String>, Vec<BundleId>) = if inputs {
                    (ins, run.inputs.iter().map(|i| i.bundle).collect())
                } else {
                    (outs, run.outputs.iter().map(|o| o.bundle).collect())
                };
                names
                    .iter()
                    .position(|n| n == slot)
                    .map_or_else(|| "-".to_owned(), |i| id(ids[i].to_string()))
            }
        }
    };
    match col {
        Col::Id => id(run.id.to_string()),
        Col::Time => output::time(&run.started_at),
        Col::Step => run.step.clone(),
        Col::Status => run.status.to_string(),
        Col::Code => code_cell(&run.code, short.is_none()),
        Col::Param(k) => run.params.get(k).cloned().unwrap_or_else(|| "-".into()),
        Col::Metric(k) => metric_cell(run.metrics.get(k)),
        Col::Input(s) => slot_of(s, true),
        Col::Output(s) => slot_of(s, false),
    }
}

/// Aligned columns, two spaces apart; `indent` before each line.
fn align(rows: &[Vec<String>], indent: &str) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = indent.to_owned();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s.trim_end_matches('\n').to_owned()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut l = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    l.push('\n');
    l
}

fn ids_of(row: &RunRow) -> impl Iterator<Item = String> + '_ {
    std::iter::once(row.run.id.to_string()).chain(
        row.inputs
            .iter()
            .chain(&row.outputs)
            .map(|b| b.bundle.to_string()),
    )
}

fn table_text(t: &RunTable, cols: &[Col]) -> String {
    let short = Short::new(t.rows.iter().flat_map(ids_of));
    let mut rows = vec![headers(cols)];
    for r in &t.rows {
        rows.push(
            cols.iter()
                .map(|c| cell(c, &r.run, Some(r), Some(&short)))
                .collect(),
        );
    }
    align(&rows, "")
}

fn table_csv(t: &RunTable, cols: &[Col]) -> String {
    let mut s = csv_line(&headers(cols));
    for r in &t.rows {
        let fields: Vec<String> = cols
            .iter()
            .map(|c| cell(c, &r.run, Some(r), None))
            .collect();
        s.push_str(&csv_line(&fields));
    }
    s
}

// ---- variations ----

fn varies(v: &Variation) -> String {
    v.varies
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

fn left_out_summary(v: &Variation) -> String {
    if v.left_out.runs == 0 {
        return String::new();
    }
    let mut parts: Vec<String> = v
        .left_out
        .by
        .iter()
        .map(|(c, n)| format!("{n} also differ in {c}"))
        .collect();
    if v.left_out.other > 0 {
        parts.push(format!("{} in two or more components", v.left_out.other));
    }
    format!(
        "; {} of {} runs left out ({})",
        v.left_out.runs,
        v.runs,
        parts.join(", ")
    )
}

fn vary_columns(v: &Variation, specs: &[String]) -> anyhow::Result<Vec<Col>> {
    let avail = Available::of_runs(v.groups.iter().flat_map(|g| g.runs.iter().map(|r| &r.run)));
    if !specs.is_empty() {
        return avail.resolve(specs);
    }
    let mut cols = vec![Col::Id, Col::Time];
    if v.groups
        .iter()
        .flat_map(|g| &g.runs)
        .any(|r| r.run.status != datamon::RunStatus::Succeeded)
    {
        cols.push(Col::Status);
    }
    cols.extend(avail.metrics.into_iter().map(Col::Metric));
    Ok(cols)
}

/// A code version as [`CodeVersion`] displays it, with git commits cut to 10 digits.
fn short_code(v: &str) -> String {
    v.split(", ")
        .map(|part| match part.strip_prefix("git ") {
            Some(c) => {
                let (sha, dirty) = c.split_once('+').map_or((c, ""), |(s, _)| (s, "+dirty"));
                if sha.len() > 10 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    format!("git {}{dirty}", &sha[..10])
                } else {
                    part.to_owned()
                }
            }
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn value_text(value: &[Option<String>], short: &Short) -> String {
    value
        .iter()
        .map(|x| match x {
            Some(s) if s.len() == 27 && s.parse::<BundleId>().is_ok() => short.of(s),
            Some(s) if s.starts_with("git ") => short_code(s),
            Some(s) => s.clone(),
            None => "-".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn vary_text(v: &Variation, specs: &[String]) -> anyhow::Result<String> {
    let cols = vary_columns(v, specs)?;
    let grouped: usize = v.groups.iter().map(|g| g.runs.len()).sum();
    let mut ids: Vec<String> = Vec::new();
    for g in &v.groups {
        for f in &g.fixed {
            ids.extend(f.value.iter().filter(|x| x.len() == 27).cloned());
        }
        for r in &g.runs {
            ids.push(r.run.id.to_string());
            ids.extend(r.value.iter().flatten().cloned());
        }
    }
    let short = Short::new(ids.into_iter());
    let through = if v.upstream { " (through lineage)" } else { "" };
    let mut s = format!(
        "step {}: runs that differ only in {}{through}: {} group{}, {grouped} of {} runs\n",
        v.step,
        varies(v),
        v.groups.len(),
        if v.groups.len() == 1 { "" } else { "s" },
        v.runs
    );
    // Each group is named by what sets it apart from the others.
    let distinct: Vec<bool> = match v.groups.first() {
        Some(first) => (0..first.fixed.len())
            .map(|i| {
                v.groups.iter().any(|g| {
                    g.fixed.get(i).map(|f| &f.value) != first.fixed.get(i).map(|f| &f.value)
                })
            })
            .collect(),
        None => Vec::new(),
    };
    for (n, g) in v.groups.iter().enumerate() {
        // One code version at several steps is said once.
        let mut codes: Vec<(String, usize)> = Vec::new();
        let mut what: Vec<String> = Vec::new();
        for (f, _) in g.fixed.iter().zip(&distinct).filter(|(_, d)| **d) {
            let value = value_text(std::slice::from_ref(&f.value), &short);
            if matches!(f.component.kind, datamon::ComponentKind::Code) {
                match codes.iter_mut().find(|(v, _)| *v == value) {
                    Some((_, k)) => *k += 1,
                    None => codes.push((value, 1)),
                }
                continue;
            }
            what.push(format!("{}={value}", f.component));
        }
        let codes = codes.into_iter().map(|(v, k)| match k {
            1 => format!("code={v}"),
            k => format!("code={v} (at {k} steps)"),
        });
        let what: Vec<String> = codes.chain(what).collect();
        let what = if what.is_empty() {
            "every other component equal".to_owned()
        } else {
            what.join(" ")
        };
        s.push_str(&format!("\ngroup {}: {what}\n", n + 1));
        let mut rows = vec![std::iter::once(varies(v))
            .chain(headers(&cols))
            .collect::<Vec<_>>()];
        for r in &g.runs {
            rows.push(
                std::iter::once(value_text(&r.value, &short))
                    .chain(cols.iter().map(|c| cell(c, &r.run, None, Some(&short))))
                    .collect(),
            );
        }
        s.push_str(&align(&rows, "  "));
        s.push('\n');
    }
    if v.left_out.runs > 0 {
        s.push_str(&format!(
            "\nleft out: {} run{} that differ from every other run in more than {}:\n",
            v.left_out.runs,
            if v.left_out.runs == 1 { "" } else { "s" },
            varies(v)
        ));
        for (c, n) in &v.left_out.by {
            s.push_str(&format!("  {n} would be grouped if {c} could differ too\n"));
        }
        if v.left_out.other > 0 {
            s.push_str(&format!(
                "  {} differ in two or more other components (or have no other value of {})\n",
                v.left_out.other,
                varies(v)
            ));
        }
    }
    Ok(s.trim_end().to_owned())
}

fn vary_csv(v: &Variation, specs: &[String]) -> anyhow::Result<String> {
    let cols = vary_columns(v, specs)?;
    let mut head = vec!["group".to_owned()];
    head.extend(v.varies.iter().map(ToString::to_string));
    head.extend(headers(&cols));
    let mut s = csv_line(&head);
    for (n, g) in v.groups.iter().enumerate() {
        for r in &g.runs {
            let mut fields = vec![(n + 1).to_string()];
            fields.extend(r.value.iter().map(|x| x.clone().unwrap_or_default()));
            fields.extend(cols.iter().map(|c| cell(c, &r.run, None, None)));
            s.push_str(&csv_line(&fields));
        }
    }
    Ok(s)
}

// ---- deep diffs ----

fn changes_summary(changes: &[datamon::Change]) -> String {
    if changes.is_empty() {
        return "same content".into();
    }
    let shown: Vec<String> = changes.iter().take(5).map(ToString::to_string).collect();
    let more = if changes.len() > 5 {
        format!(", ... {} more", changes.len() - 5)
    } else {
        String::new()
    };
    format!(
        "{} path{} changed: {}{more}",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        shown.join(", ")
    )
}

fn opt(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| "-".into())
}

fn cause_text(d: &DeepDiff, c: &Cause, short: &Short) -> String {
    let s = &d.steps[c.step];
    let where_ = match s.depth {
        0 => format!("step {}", c.step_name),
        1 => format!("step {}, 1 step up", c.step_name),
        n => format!("step {}, {n} steps up", c.step_name),
    };
    let val = |v: &Option<String>| match v {
        Some(x) if x.len() == 27 && x.parse::<BundleId>().is_ok() => short.of(x),
        Some(x) => x.clone(),
        None => "-".into(),
    };
    match &c.kind {
        CauseKind::Component { component } => {
            let mut t = format!("{component} ({where_}): {} -> {}", val(&c.a), val(&c.b));
            if !c.changes.is_empty() {
                t.push_str(&format!(", {}", changes_summary(&c.changes)));
            }
            if c.unexplained {
                t.push_str(
                    " (the runs that produced these bundles differ in nothing: that step is not reproducible)",
                );
            }
            t
        }
        _ => format!("the step ({where_}): {} -> {}", val(&c.a), val(&c.b)),
    }
}

fn deep_text(d: &DeepDiff) -> String {
    let mut ids: Vec<String> = Vec::new();
    for s in &d.steps {
        ids.push(s.diff.a.id.to_string());
        ids.push(s.diff.b.id.to_string());
        for i in &s.diff.inputs {
            ids.extend(i.a.iter().chain(&i.b).map(ToString::to_string));
        }
    }
    let short = Short::new(ids.into_iter());
    let mut out = String::new();
    for (n, s) in d.steps.iter().enumerate() {
        let diff = &s.diff;
        let via = if s.via.is_empty() {
            String::new()
        } else {
            format!(" (via {})", s.via.join("/"))
        };
        let step = if diff.a.step == diff.b.step {
            diff.a.step.clone()
        } else {
            format!("{} / {}", diff.a.step, diff.b.step)
        };
        out.push_str(&format!(
            "[{}] {step}{via}: run {} -> {}\n",
            n + 1,
            short.of(&diff.a.id.to_string()),
            short.of(&diff.b.id.to_string())
        ));
        let mut rows: Vec<Vec<String>> = Vec::new();
        if diff.code_changed {
            rows.push(vec![
                "code".into(),
                format!("{} -> {}", diff.a.code, diff.b.code),
            ]);
        }
        for p in diff.params.iter().filter(|p| p.changed()) {
            rows.push(vec![
                format!("param {}", p.key),
                format!("{} -> {}", opt(p.a.as_ref()), opt(p.b.as_ref())),
            ]);
        }
        for (i, t) in diff.inputs.iter().zip(&s.inputs) {
            let ids = format!(
                "{} -> {}",
                i.a.map_or_else(|| "-".into(), |x| short.of(&x.to_string())),
                i.b.map_or_else(|| "-".into(), |x| short.of(&x.to_string()))
            );
            let what = match &t.origin {
                InputOrigin::SameBundle => continue,
                InputOrigin::SameContent => "different bundles, same content (not followed)".into(),
                InputOrigin::OneSided => "only one run has this input".into(),
                InputOrigin::Followed { step } => format!(
                    "{}; both produced by runs of step {}: see [{}]",
                    changes_summary(&i.changes),
                    d.steps[*step].diff.a.step,
                    step + 1
                ),
                InputOrigin::NoProducer { a, b } => format!(
                    "{}; {}",
                    changes_summary(&i.changes),
                    match (a, b) {
                        (None, None) => "no recorded run produced either bundle".to_owned(),
                        (Some(_), None) | (None, Some(_)) =>
                            "only one of the bundles was produced by a recorded run".to_owned(),
                        (Some(_), Some(_)) => "both produced by the same run".to_owned(),
                    }
                ),
                InputOrigin::DepthLimit => {
                    format!("{} (not followed: --depth)", changes_summary(&i.changes))
                }
                _ => changes_summary(&i.changes),
            };
            rows.push(vec![format!("input {}", i.key), format!("{ids}  {what}")]);
        }
        if n == 0 {
            for m in diff.metrics.iter().filter(|m| m.changed()) {
                let v = |x: Option<&serde_json::Value>| metric_cell(x);
                rows.push(vec![
                    format!("metric {}", m.key),
                    format!("{} -> {}", v(m.a.as_ref()), v(m.b.as_ref())),
                ]);
            }
        }
        if rows.is_empty() {
            out.push_str("    same code, parameters and inputs\n");
        } else {
            out.push_str(&align(&rows, "    "));
            out.push('\n');
        }
    }
    out.push('\n');
    match d.causes.as_slice() {
        [] if d.differs() => out.push_str(
            "no cause found: the runs have the same code, parameters and inputs at every step, yet their results differ (a step is not reproducible)",
        ),
        [] => out.push_str("the runs do not differ"),
        [one] => {
            out.push_str("only one component differs: ");
            out.push_str(&cause_text(d, one, &short));
        }
        many => {
            out.push_str(&format!("{} components differ:\n", many.len()));
            for c in many {
                out.push_str(&format!("  {}\n", cause_text(d, c, &short)));
            }
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_unique_prefixes() {
        let ids = [
            "3MXU6q2YNl7HHKtRDaepSNiNh3P",
            "3MXU6q2YNl7XXKtRDaepSNiNh3P",
            "3MXU6q5bbFsfRCdhYxUJIPNQwu2",
        ];
        let s = Short::new(ids.iter().map(|s| (*s).to_owned()));
        assert_eq!(s.of(ids[0]), "3MXU6q2YNl7H");
        assert_eq!(s.of(ids[1]), "3MXU6q2YNl7X");
        assert_eq!(s.of(ids[2]), "3MXU6q5b");
    }

    #[test]
    fn code_versions_are_cut_to_ten_digits() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(short_code(&format!("git {sha}")), "git 0123456789");
        assert_eq!(
            short_code(&format!("git {sha}+dirty, image x:1")),
            "git 0123456789+dirty, image x:1"
        );
        assert_eq!(short_code("git c1"), "git c1");
        assert_eq!(short_code("unknown"), "unknown");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(
            csv_line(&["a".into(), "b,c".into(), "say \"x\"".into()]),
            "a,\"b,c\",\"say \"\"x\"\"\"\n"
        );
    }
}
