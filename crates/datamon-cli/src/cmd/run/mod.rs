//! `datamon run ...`: execute and record pipeline steps, list, show and diff runs.
//!
//! The library plans, executes and records runs (`datamon::exec`, `Datamon::record_run`...);
//! this module holds the arguments (here), the execution front end that maps signals onto the
//! library's cancellation (`exec.rs`), the queries across runs (`compare.rs`: `run compare`,
//! `run diff --deep`), and the views (`views.rs`).

mod compare;
mod exec;
pub(crate) mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use datamon::{BundleDiff, InputSpec, OutputSpec, RunId, RunQuery, ValueDiff};

pub(crate) use exec::Interrupted;
use views::{run_line, show_diff, show_run, RunDiffView, RunView};

use crate::cmd::parse::{parse_time, parse_where};
use crate::output;
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Run a pipeline step: download inputs, run COMMAND, upload outputs, record the run
    Exec(ExecArgs),
    /// Record a run executed elsewhere (e.g. an Argo step) whose outputs are already uploaded
    Record(RecordArgs),
    /// List runs, oldest first: id , started , step , status , code
    List(ListArgs),
    /// Show one run; exit code 2 if it does not exist
    Get(GetArgs),
    /// What changed between two runs: code, parameters, inputs, outputs, metrics; exit 1 if they differ
    Diff(DiffArgs),
    /// Runs side by side (a table; --csv, --json), or with --vary, how the results vary when
    /// only one component (a parameter, an input, the code) changes
    Compare(compare::CompareArgs),
}

/// Shared by `run exec` and `run record`.
#[derive(Debug, Args)]
pub struct RunCommon {
    /// The pipeline step (prepare, train...)
    #[arg(long)]
    step: String,
    /// An input bundle, `REPO@SELECTOR[:PATH]`: SELECTOR is a bundle id, a label or a branch
    /// (`label:NAME`, `branch:NAME` to say which); no selector: the latest bundle (repeatable)
    #[arg(long = "input", value_name = "REPO@SELECTOR[:PATH]")]
    inputs: Vec<InputSpec>,
    /// A parameter, KEY=VALUE (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Metadata to record on the run (and on `run exec` output bundles), KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    common: RunCommon,
    /// An output, `REPO:DIR[@BRANCH_OR_LABEL]`: DIR becomes a new bundle of REPO when COMMAND
    /// succeeds (default branch main; `branch:NAME`/`label:NAME` to say which) (repeatable)
    #[arg(long = "output", value_name = "REPO:DIR[@BRANCH_OR_LABEL]")]
    outputs: Vec<OutputSpec>,
    /// Message of the output bundles (default: `STEP: run ID`)
    #[arg(long)]
    message: Option<String>,
    /// Mount the inputs read-only (FUSE) instead of downloading them: files are fetched as the
    /// command reads them, through the chunk cache
    #[arg(long)]
    mount_inputs: bool,
    /// Where inputs are downloaded (default: a temporary folder, removed afterwards)
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// The command and its arguments, after `--`. `{input:REPO}`, `{output:REPO}` and
    /// `{param:KEY}` in them are replaced by the input folder, output folder and parameter
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    common: RunCommon,
    /// An output bundle: REPO@SELECTOR (usually a bundle id) (repeatable)
    #[arg(long = "output", value_name = "REPO@SELECTOR")]
    outputs: Vec<InputSpec>,
    /// How the run ended
    #[arg(long, value_enum, default_value = "succeeded")]
    status: StatusArg,
    /// The command's exit status
    #[arg(long)]
    exit_code: Option<i32>,
    /// When it started (RFC 3339; default: now)
    #[arg(long, value_name = "TIME")]
    started: Option<String>,
    /// When it ended (RFC 3339; default: now)
    #[arg(long, value_name = "TIME")]
    finished: Option<String>,
    /// Git commit of the code (default: the working directory's)
    #[arg(long)]
    git_commit: Option<String>,
    /// Whether the code had uncommitted changes
    #[arg(long)]
    git_dirty: Option<bool>,
    /// Container image (default: $DATAMON_IMAGE)
    #[arg(long)]
    image: Option<String>,
    /// A JSON file of metrics
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// The command line that ran, for the record
    #[arg(long = "command", value_name = "ARG")]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Succeeded,
    Failed,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs of this step
    #[arg(long)]
    step: Option<String>,
    /// Only runs started at or after this time (RFC 3339, YYYY-MM-DD, or 30m/12h/7d ago)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only runs whose metadata matches, `meta.KEY=VALUE` (repeatable)
    #[arg(long = "where", value_name = "meta.KEY=VALUE")]
    filters: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The run id
    id: RunId,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first (old) run
    a: RunId,
    /// The second (new) run
    b: RunId,
    #[command(flatten)]
    deep: compare::DeepArgs,
}

impl RunCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self {
            RunCmd::Exec(a) => exec::exec(a, ctx).await,
            RunCmd::Record(a) => exec::record(a, ctx).await,
            RunCmd::List(a) => {
                let query = RunQuery {
                    step: a.step,
                    since: a.since.as_deref().map(parse_time).transpose()?,
                    meta: parse_where(&a.filters)?,
                };
                let dm = ctx.open().await?;
                for r in dm.list_runs(&query).await? {
                    output::result(ctx.global.json, &RunView::from(&r), || run_line(&r))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            RunCmd::Get(a) => {
                let dm = ctx.open().await?;
                let r = dm.get_run(&a.id).await?;
                output::result(ctx.global.json, &RunView::from(&r), || show_run(&r))?;
                Ok(ExitCode::SUCCESS)
            }
            RunCmd::Compare(a) => compare::compare(a, ctx).await,
            RunCmd::Diff(a) if a.deep.deep => compare::deep(a.a, a.b, &a.deep, ctx).await,
            RunCmd::Diff(a) => {
                let dm = ctx.open().await?;
                let d = dm.diff_runs(&a.a, &a.b).await?;
                output::result(ctx.global.json, &RunDiffView::from(&d), || show_diff(&d))?;
                let differ = d.causes_changed()
                    || d.outputs.iter().any(BundleDiff::changed)
                    || d.metrics.iter().any(ValueDiff::changed);
                Ok(if differ {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
        }
    }
}
