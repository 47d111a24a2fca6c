//! `datamon bundle lineage` and `datamon log`: where a bundle came from and went, and the
//! history of a branch. The library answers (`Datamon::lineage`, `Datamon::log`); this module
//! renders text, JSON, Graphviz dot and Mermaid.

use std::process::ExitCode;

use bytesize::ByteSize;
use clap::{Args, ValueEnum};
use datamon::exec::env_name;
use datamon::{
    BranchName, BundleId, EdgeKind, Lineage, LineageDirection, LineageOptions, RepoName, RunId,
};
use serde::Serialize;

use crate::cmd::run::views::RunView;
use crate::output::{self, BundleView};
use crate::Ctx;

#[derive(Debug, Args)]
pub struct LogArgs {
    #[arg(long)]
    repo: RepoName,
    /// The branch (default: main)
    #[arg(long)]
    branch: Option<BranchName>,
    /// At most this many bundles
    #[arg(long, short = 'n', value_name = "N")]
    max_count: Option<usize>,
}

/// `datamon bundle lineage`.
#[derive(Debug, Args)]
pub struct LineageArgs {
    #[arg(long)]
    repo: RepoName,
    /// The bundle
    #[arg(long)]
    bundle: BundleId,
    /// Only the runs that produced it and their inputs, recursively
    #[arg(long, conflicts_with = "downstream")]
    upstream: bool,
    /// Only the runs that read it and what they wrote, recursively
    #[arg(long)]
    downstream: bool,
    /// How many runs deep (default: all)
    #[arg(long, value_name = "N")]
    depth: Option<usize>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: LineageFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LineageFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// `datamon log`.
pub async fn log(a: LogArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    let entries = dm.log(&a.repo, a.branch.as_ref(), a.max_count).await?;
    let mut text = String::new();
    for e in &entries {
        let b = &e.bundle;
        if ctx.global.json {
            output::json(&LogView {
                bundle: BundleView::from(b),
                run: e.run.map(|r| r.to_string()),
            })?;
            continue;
        }
        text.push_str(&format!("bundle {}\n", b.id));
        text.push_str(&format!("Author: {}\n", b.author));
        text.push_str(&format!("Date:   {}\n", output::time(&b.created_at)));
        if let Some(r) = e.run {
            let step = b
                .meta
                .get(datamon::META_STEP)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            text.push_str(&format!("Run:    {r}{step}\n"));
        }
        let s = &b.stats;
        text.push_str(&format!(
            "Stats:  {} files, {}; new data {} stored as {}\n",
            s.files,
            ByteSize(s.bytes),
            ByteSize(s.new_bytes),
            ByteSize(s.stored_bytes)
        ));
        let user_meta: Vec<String> = b
            .meta
            .iter()
            .filter(|(k, _)| !k.starts_with("datamon."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !user_meta.is_empty() {
            text.push_str(&format!("Meta:   {}\n", user_meta.join(" ")));
        }
        text.push_str(&format!("\n    {}\n\n", b.message));
    }
    if !ctx.global.json {
        output::line(text.trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `datamon bundle lineage`.
pub async fn lineage(a: LineageArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    let direction = match (a.upstream, a.downstream) {
        (true, _) => LineageDirection::Upstream,
        (_, true) => LineageDirection::Downstream,
        _ => LineageDirection::Both,
    };
    let l = dm
        .lineage(
            &a.repo,
            &a.bundle,
            LineageOptions {
                direction,
                depth: a.depth,
            },
        )
        .await?;
    let format = if ctx.global.json {
        LineageFormat::Json
    } else {
        a.format
    };
    match format {
        LineageFormat::Json => output::json(&LineageView::from(&l))?,
        LineageFormat::Text => output::line(lineage_text(&l, direction))?,
        LineageFormat::Dot => output::line(lineage_dot(&l))?,
        LineageFormat::Mermaid => output::line(lineage_mermaid(&l))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn bundle_label(l: &Lineage, repo: &RepoName, id: &BundleId) -> String {
    let rec = l
        .bundles
        .iter()
        .find(|b| &b.repo == repo && &b.id == id)
        .and_then(|b| b.record.as_ref());
    match rec {
        Some(b) => format!(
            "{repo}@{id} \"{}\" {}",
            b.message,
            output::time(&b.created_at)
        ),
        None => format!("{repo}@{id} (record missing)"),
    }
}

fn run_label(l: &Lineage, id: &RunId) -> String {
    match l.runs.iter().find(|r| &r.id == id) {
        Some(r) => {
            let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let params = if params.is_empty() {
                String::new()
            } else {
                format!(" [{}]", params.join(" "))
            };
            format!(
                "run {id} step {} {}{params} code {}",
                r.step, r.status, r.code
            )
        }
        None => format!("run {id}"),
    }
}

fn lineage_text(l: &Lineage, dir: LineageDirection) -> String {
    let mut s = format!("{}\n", bundle_label(l, &l.repo, &l.bundle));
    let root = (l.repo.clone(), l.bundle);
    if dir != LineageDirection::Downstream {
        s.push_str("upstream:\n");
        let mut seen = std::collections::HashSet::new();
        let before = s.len();
        lineage_branch(l, &root, true, "  ", &mut seen, &mut s);
        if s.len() == before {
            s.push_str("  (no recorded run produced it)\n");
        }
    }
    if dir != LineageDirection::Upstream {
        s.push_str("downstream:\n");
        let mut seen = std::collections::HashSet::new();
        let before = s.len();
        lineage_branch(l, &root, false, "  ", &mut seen, &mut s);
        if s.len() == before {
            s.push_str("  (no recorded run read it)\n");
        }
    }
    s.trim_end().to_owned()
}

/// One direction of a lineage as indented text. Upstream (`<-`) follows the runs that wrote a
/// bundle and then what they read; downstream (`->`) the runs that read it and then what they
/// wrote. A run already shown is not expanded again.
fn lineage_branch(
    l: &Lineage,
    b: &(RepoName, BundleId),
    upstream: bool,
    pad: &str,
    seen: &mut std::collections::HashSet<RunId>,
    s: &mut String,
) {
    let (via, then, arrow) = if upstream {
        (EdgeKind::Output, EdgeKind::Input, "<-")
    } else {
        (EdgeKind::Input, EdgeKind::Output, "->")
    };
    for e in l
        .edges
        .iter()
        .filter(|e| e.kind == via && e.repo == b.0 && e.bundle == b.1)
    {
        s.push_str(&format!("{pad}{arrow} {}\n", run_label(l, &e.run)));
        if !seen.insert(e.run) {
            s.push_str(&format!("{pad}   (shown above)\n"));
            continue;
        }
        for o in l.edges.iter().filter(|o| o.kind == then && o.run == e.run) {
            let k = (o.repo.clone(), o.bundle);
            s.push_str(&format!(
                "{pad}   {arrow} {}\n",
                bundle_label(l, &k.0, &k.1)
            ));
            lineage_branch(l, &k, upstream, &format!("{pad}      "), seen, s);
        }
    }
}

fn lineage_dot(l: &Lineage) -> String {
    let mut s = String::from("digraph lineage {\n  rankdir=LR;\n");
    for b in &l.bundles {
        let msg = b.record.as_ref().map(|r| r.message.as_str()).unwrap_or("");
        let style = if b.repo == l.repo && b.id == l.bundle {
            ", style=bold"
        } else {
            ""
        };
        s.push_str(&format!(
            "  \"b:{}@{}\" [shape=box{style}, label={:?}];\n",
            b.repo,
            b.id,
            format!("{}@{}\n{msg}", b.repo, b.id)
        ));
    }
    for r in &l.runs {
        s.push_str(&format!(
            "  \"r:{}\" [shape=ellipse, label={:?}];\n",
            r.id,
            format!("{} ({})\n{}", r.step, r.status, r.id)
        ));
    }
    for e in &l.edges {
        let (b, r) = (
            format!("\"b:{}@{}\"", e.repo, e.bundle),
            format!("\"r:{}\"", e.run),
        );
        match e.kind {
            EdgeKind::Input => s.push_str(&format!("  {b} -> {r};\n")),
            EdgeKind::Output => s.push_str(&format!("  {r} -> {b};\n")),
        }
    }
    s.push('}');
    s
}

fn lineage_mermaid(l: &Lineage) -> String {
    let bid = |repo: &RepoName, id: &BundleId| format!("b_{}_{}", env_name(repo.as_str()), id);
    let mut s = String::from("flowchart LR\n");
    for b in &l.bundles {
        s.push_str(&format!(
            "  {}[\"{}@{}\"]\n",
            bid(&b.repo, &b.id),
            b.repo,
            b.id
        ));
    }
    for r in &l.runs {
        s.push_str(&format!(
            "  r_{}([\"{} ({})<br/>{}\"])\n",
            r.id, r.step, r.status, r.id
        ));
    }
    for e in &l.edges {
        let b = bid(&e.repo, &e.bundle);
        match e.kind {
            EdgeKind::Input => s.push_str(&format!("  {b} --> r_{}\n", e.run)),
            EdgeKind::Output => s.push_str(&format!("  r_{} --> {b}\n", e.run)),
        }
    }
    s.trim_end().to_owned()
}

#[derive(Serialize)]
struct LogView<'a> {
    #[serde(flatten)]
    bundle: BundleView<'a>,
    run: Option<String>,
}

#[derive(Serialize)]
struct EdgeView {
    kind: EdgeKind,
    run: String,
    repo: String,
    bundle: String,
}

#[derive(Serialize)]
struct LineageView<'a> {
    repo: String,
    bundle: String,
    bundles: Vec<BundleView<'a>>,
    missing_bundles: Vec<String>,
    runs: Vec<RunView>,
    edges: Vec<EdgeView>,
}

impl<'a> From<&'a Lineage> for LineageView<'a> {
    fn from(l: &'a Lineage) -> Self {
        LineageView {
            repo: l.repo.to_string(),
            bundle: l.bundle.to_string(),
            bundles: l
                .bundles
                .iter()
                .filter_map(|b| b.record.as_ref().map(BundleView::from))
                .collect(),
            missing_bundles: l
                .bundles
                .iter()
                .filter(|b| b.record.is_none())
                .map(|b| format!("{}@{}", b.repo, b.id))
                .collect(),
            runs: l.runs.iter().map(RunView::from).collect(),
            edges: l
                .edges
                .iter()
                .map(|e| EdgeView {
                    kind: e.kind,
                    run: e.run.to_string(),
                    repo: e.repo.to_string(),
                    bundle: e.bundle.to_string(),
                })
                .collect(),
        }
    }
}
