//! `datamon run ...` (execute and record pipeline steps, list, show and diff runs),
//! `datamon log` and `datamon bundle lineage`.
//!
//! The library records and queries runs; this module captures what only a process can know (the
//! git commit of the working directory, the container image from the environment, host and user)
//! and runs the command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bytesize::ByteSize;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use datamon::{
    BranchName, BundleDiff, BundleId, CodeVersion, Datamon, DownloadOptions, EdgeKind, InputSpec,
    Lineage, LineageDirection, LineageOptions, OutputSpec, RepoName, Run, RunDiff, RunId, RunInput,
    RunOutput, RunQuery, RunStatus, ValueDiff,
};
use serde::Serialize;

use crate::output::{self, BundleView};
use crate::Ctx;

/// Environment variable naming the container image (with its digest) a run executes in.
const ENV_IMAGE: &str = "DATAMON_IMAGE";
/// Environment variable naming the JSON file a command writes its metrics to.
const ENV_METRICS: &str = "DATAMON_METRICS";

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
}

/// `datamon log`.
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

/// Parses `KEY=VALUE` items.
pub(crate) fn parse_kv(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--{flag} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// Parses `--where meta.KEY=VALUE` filters.
pub(crate) fn parse_where(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|w| {
            let kv = w.strip_prefix("meta.").with_context(|| {
                format!("--where {w:?}: only metadata can be queried, as meta.KEY=VALUE")
            })?;
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("--where {w:?}: expected meta.KEY=VALUE"),
            }
        })
        .collect()
}

/// Parses a time: RFC 3339, a date (midnight UTC), or a duration ago (`90s`, `30m`, `12h`, `7d`, `2w`).
pub(crate) fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let unit = s.chars().last().unwrap_or(' ');
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 7 * 86400,
        _ => 0,
    };
    if let Some(Ok(n)) = s
        .strip_suffix(unit)
        .filter(|_| secs > 0)
        .map(str::parse::<i64>)
    {
        return Ok(Utc::now() - chrono::Duration::seconds(n.saturating_mul(secs)));
    }
    bail!("{s:?} is not a time: use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31) or an age (30m, 12h, 7d)")
}

/// Runs a command and returns its trimmed stdout when it succeeds.
fn capture(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The code version of the working directory: git commit and dirty flag, image from the env.
fn code_version() -> CodeVersion {
    let git_commit = capture("git", &["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
    let git_dirty = git_commit.as_ref().and_then(|_| {
        capture("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty())
    });
    CodeVersion {
        git_commit,
        git_dirty,
        image: std::env::var(ENV_IMAGE).ok().filter(|s| !s.is_empty()),
    }
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Flattens a JSON object into dotted keys.
fn flatten(prefix: &str, v: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        v => {
            out.insert(prefix.to_owned(), v);
        }
    }
}

/// Reads a metrics file: a JSON object, nested objects flattened to dotted keys.
fn read_metrics(path: &Path) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the metrics file {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the metrics file {} is not JSON", path.display()))?;
    if !v.is_object() {
        bail!(
            "the metrics file {} must hold a JSON object",
            path.display()
        );
    }
    let mut out = BTreeMap::new();
    flatten("", v, &mut out);
    Ok(out)
}

/// The environment variable suffix for a name: upper case, other characters as `_`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p))
    }
}

/// Resolves inputs to bundles, in order.
async fn resolve_inputs(dm: &Datamon, specs: &[InputSpec]) -> anyhow::Result<Vec<RunInput>> {
    let mut out = Vec::new();
    for s in specs {
        let bundle = dm
            .resolve_text(&s.repo, s.selector.as_deref())
            .await
            .with_context(|| format!("input {}", show_spec(s)))?;
        out.push(RunInput {
            repo: s.repo.clone(),
            bundle,
            selector: s.selector.clone(),
            path: s.path.clone(),
        });
    }
    Ok(out)
}

fn show_spec(s: &InputSpec) -> String {
    let mut t = s.repo.to_string();
    if let Some(sel) = &s.selector {
        t.push('@');
        t.push_str(sel);
    }
    if let Some(p) = &s.path {
        t.push(':');
        t.push_str(p);
    }
    t
}

/// How a child process ended, as an exit code.
fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    if let Some(c) = status.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    1
}

/// The child's stdout goes to our stderr: stdout carries only datamon's result.
fn child_stdout() -> std::process::Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            return std::process::Stdio::from(fd);
        }
    }
    std::process::Stdio::inherit()
}

/// SIGINT and SIGTERM while `run exec` works: caught (so the work folder is cleaned up and the
/// outcome recorded) instead of killing datamon outright.
struct Interrupts {
    rx: tokio::sync::watch::Receiver<Option<i32>>,
}

impl Interrupts {
    fn install() -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            loop {
                let sig = tokio::select! {
                    Some(()) = int.recv() => libc_signal::INT,
                    Some(()) = term.recv() => libc_signal::TERM,
                    else => return,
                };
                if tx.send(Some(sig)).is_err() {
                    return;
                }
            }
        });
        Ok(Interrupts { rx })
    }

    /// The last signal received, if any.
    fn received(&self) -> Option<i32> {
        *self.rx.borrow()
    }

    /// Waits for the next signal.
    async fn next(&mut self) -> i32 {
        loop {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(s) = *self.rx.borrow_and_update() {
                return s;
            }
        }
    }

    /// Runs `fut` unless a signal comes first: then fails saying what was left undone.
    async fn guard<T>(
        &mut self,
        what: &str,
        fut: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let stopped = |s: i32| {
            Err(anyhow::Error::new(Interrupted(s))
                .context(format!("stopped while {what}; nothing was recorded")))
        };
        if let Some(s) = self.received() {
            return stopped(s);
        }
        tokio::select! {
            r = fut => r,
            s = self.next() => stopped(s),
        }
    }
}

/// A `run exec` stopped by a signal (the CLI exits with 128 + the signal).
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Signal numbers (Linux).
mod libc_signal {
    pub const INT: i32 = 2;
    pub const TERM: i32 = 15;
}

/// Waits for the child, passing on signals datamon receives: SIGTERM at once; SIGINT only if
/// the child is still running 2 s later (a Ctrl-C in the terminal reaches the child directly,
/// and a second SIGINT could cut its cleanup short).
async fn wait_child(
    mut child: std::process::Child,
    interrupts: &mut Interrupts,
) -> std::io::Result<std::process::ExitStatus> {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let waiter = tokio::task::spawn_blocking(move || child.wait());
    tokio::pin!(waiter);
    let mut pending_int: Option<tokio::time::Instant> = None;
    loop {
        let int_due = async {
            match pending_int {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut waiter => return r.map_err(std::io::Error::other)?,
            s = interrupts.next() => {
                if s == libc_signal::TERM {
                    if let Some(pid) = pid {
                        let _ = kill_process(pid, Signal::TERM);
                    }
                } else {
                    pending_int = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(2));
                }
            }
            () = int_due => {
                pending_int = None;
                if let Some(pid) = pid {
                    let _ = kill_process(pid, Signal::INT);
                }
            }
        }
    }
}

struct Workdir {
    path: PathBuf,
    remove: bool,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl RunCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self {
            RunCmd::Exec(a) => exec(a, ctx).await,
            RunCmd::Record(a) => record(a, ctx).await,
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

async fn exec(a: ExecArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let params = parse_kv("param", &a.common.params)?;
    let meta = parse_kv("meta", &a.common.meta)?;
    if a.common.step.trim().is_empty() {
        bail!("--step must name the pipeline step");
    }
    let program = a.command[0].clone();
    let dm = ctx.open().await?;

    // Check everything before running anything: inputs resolve, output repos exist, output
    // folders are folders.
    let inputs = resolve_inputs(&dm, &a.common.inputs).await?;
    let mut outputs = Vec::new();
    for o in &a.outputs {
        dm.get_repo(&o.repo)
            .await
            .with_context(|| format!("output repo {}", o.repo))?;
        let (branch, label) = dm.output_target(&o.repo, o.target.as_deref()).await?;
        let dir = absolute(&o.dir)?;
        if let Ok(m) = std::fs::metadata(&dir) {
            if !m.is_dir() {
                bail!(
                    "output {}: {} is not a directory; an output names the folder the command writes",
                    o.repo,
                    dir.display()
                );
            }
        }
        outputs.push((o.repo.clone(), dir, branch, label));
    }
    for (_, dir, _, _) in &outputs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    }

    let id = RunId::generate();
    let code = code_version();
    let started_at = Utc::now();
    let mut interrupts = Interrupts::install()?;
    let work = match &a.workdir {
        Some(w) => Workdir {
            path: absolute(w)?,
            remove: false,
        },
        None => Workdir {
            path: std::env::temp_dir().join(format!("datamon-run-{id}")),
            remove: true,
        },
    };
    std::fs::create_dir_all(&work.path)
        .with_context(|| format!("cannot create {}", work.path.display()))?;

    // Materialize the inputs.
    let quiet = ctx.global.quiet || ctx.global.json;
    let bar = ctx.progress();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut subst: Vec<(String, String)> = Vec::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for i in &inputs {
        let n = used.entry(i.repo.to_string()).or_default();
        *n += 1;
        let name = if *n == 1 {
            i.repo.to_string()
        } else {
            format!("{}-{n}", i.repo)
        };
        let dest = work.path.join("inputs").join(&name);
        let path = match &i.path {
            Some(p) => {
                let fut = async {
                    dm.download_file(&i.repo, &i.bundle, p, &dest, true, &bar)
                        .await
                        .with_context(|| format!("cannot download input {}:{p}", i.repo))
                };
                interrupts.guard("downloading the inputs", fut).await?;
                dest.join(p)
            }
            None => {
                let fut = async {
                    dm.download(
                        &i.repo,
                        &i.bundle,
                        &dest,
                        &DownloadOptions {
                            name_filter: None,
                            force: true,
                        },
                        &bar,
                    )
                    .await
                    .with_context(|| format!("cannot download input {}", i.repo))
                };
                interrupts.guard("downloading the inputs", fut).await?;
                dest
            }
        };
        let p = path.display().to_string();
        // The first input of a repo is `DATAMON_INPUT_<REPO>` / `{input:REPO}`, the next ones
        // `DATAMON_INPUT_<REPO>_2` / `{input:REPO#2}`...
        let (var, key) = if *n == 1 {
            (env_name(i.repo.as_str()), i.repo.to_string())
        } else {
            (
                format!("{}_{n}", env_name(i.repo.as_str())),
                format!("{}#{n}", i.repo),
            )
        };
        vars.push((format!("DATAMON_INPUT_{var}"), p.clone()));
        subst.push((format!("{{input:{key}}}"), p));
    }
    for (repo, dir, _, _) in &outputs {
        let p = dir.display().to_string();
        vars.push((
            format!("DATAMON_OUTPUT_{}", env_name(repo.as_str())),
            p.clone(),
        ));
        subst.push((format!("{{output:{repo}}}"), p));
    }
    for (k, v) in &params {
        vars.push((format!("DATAMON_PARAM_{}", env_name(k)), v.clone()));
        subst.push((format!("{{param:{k}}}"), v.clone()));
    }
    let metrics_file = match std::env::var_os(ENV_METRICS) {
        Some(m) => absolute(Path::new(&m))?,
        None => work.path.join("metrics.json"),
    };
    vars.push((ENV_METRICS.into(), metrics_file.display().to_string()));
    vars.push(("DATAMON_RUN_ID".into(), id.to_string()));
    vars.push(("DATAMON_STEP".into(), a.common.step.clone()));

    let argv: Vec<String> = a
        .command
        .iter()
        .map(|arg| {
            subst
                .iter()
                .fold(arg.clone(), |s, (from, to)| s.replace(from, to))
        })
        .collect();
    if !quiet {
        eprintln!("run {id} ({}): {}", a.common.step, argv.join(" "));
    }
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(vars).stdout(child_stdout());
    let cannot_run = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("command not found: {program:?}; nothing was recorded")
        }
        _ => {
            anyhow::Error::from(e).context(format!("cannot run {program:?}; nothing was recorded"))
        }
    };
    if let Some(s) = interrupts.received() {
        return Err(anyhow::Error::new(Interrupted(s))
            .context("stopped before running the command; nothing was recorded"));
    }
    let child = cmd.spawn().map_err(cannot_run)?;
    let status = wait_child(child, &mut interrupts)
        .await
        .map_err(cannot_run)?;
    let finished_at = Utc::now();
    // Interrupted: the run failed, whatever the command's status (128 + the signal).
    let exit_code = match interrupts.received() {
        Some(s) if status.success() => 128 + s,
        _ => exit_code_of(status),
    };
    let interrupted = interrupts.received().is_some();

    let mut run = Run {
        id,
        step: a.common.step.clone(),
        status: RunStatus::Failed,
        exit_code: Some(exit_code),
        command: a.command.clone(),
        code,
        host: host(),
        user: user(),
        started_at,
        finished_at,
        params,
        inputs,
        outputs: Vec::new(),
        metrics: BTreeMap::new(),
        meta: meta.clone(),
    };
    if metrics_file.exists() {
        match read_metrics(&metrics_file) {
            Ok(m) => run.metrics = m,
            Err(e) => eprintln!("warning: {e:#}; the run is recorded without metrics"),
        }
    }

    if !status.success() || interrupted {
        dm.record_run(&run).await?;
        if interrupted {
            eprintln!(
                "interrupted: recorded failed run {id} (exit status {exit_code}), uploaded nothing"
            );
        } else {
            eprintln!("command failed with exit status {exit_code}; recorded failed run {id}, uploaded nothing");
        }
        if ctx.global.json {
            output::json(&RunView::from(&run))?;
        }
        return Ok(ExitCode::from(u8::try_from(exit_code).unwrap_or(1).max(1)));
    }

    for (repo, dir, _, _) in &outputs {
        if !dir.is_dir() {
            bail!(
                "output {repo}: {} is not a directory after the command; nothing was uploaded or recorded",
                dir.display()
            );
        }
    }
    let message = a
        .message
        .clone()
        .unwrap_or_else(|| format!("{}: run {id}", a.common.step));
    for (repo, dir, branch, label) in outputs {
        let mut bundle_meta = meta.clone();
        bundle_meta.insert(datamon::META_RUN.into(), id.to_string());
        bundle_meta.insert(datamon::META_STEP.into(), a.common.step.clone());
        let fut = async {
            dm.upload(
                datamon::UploadContext {
                    repo: repo.clone(),
                    path: dir.clone(),
                    message: message.clone(),
                },
                datamon::UploadOptions {
                    label,
                    branch,
                    meta: bundle_meta,
                    ..Default::default()
                },
                &bar,
            )
            .await
            .with_context(|| format!("cannot upload output {repo} from {}", dir.display()))
        };
        let r = interrupts.guard("uploading the outputs", fut).await?;
        if !quiet {
            eprintln!(
                "output {repo}: bundle {} ({} files, {})",
                r.bundle.id,
                r.bundle.stats.files,
                ByteSize(r.bundle.stats.bytes)
            );
        }
        run.outputs.push(RunOutput {
            repo,
            bundle: r.bundle.id,
        });
    }
    run.status = RunStatus::Succeeded;
    dm.record_run(&run).await?;
    output::result(ctx.global.json, &RunView::from(&run), || {
        format!("Recorded run id:{id}")
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn record(a: RecordArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let params = parse_kv("param", &a.common.params)?;
    let meta = parse_kv("meta", &a.common.meta)?;
    let now = Utc::now();
    let started_at = a
        .started
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now);
    let finished_at = a
        .finished
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now.max(started_at));
    let metrics = a
        .metrics
        .as_deref()
        .map(read_metrics)
        .transpose()?
        .unwrap_or_default();
    let mut code = code_version();
    if a.git_commit.is_some() {
        code.git_commit = a.git_commit;
        code.git_dirty = a.git_dirty;
    } else if a.git_dirty.is_some() {
        code.git_dirty = a.git_dirty;
    }
    if a.image.is_some() {
        code.image = a.image;
    }
    let dm = ctx.open().await?;
    let inputs = resolve_inputs(&dm, &a.common.inputs).await?;
    let outputs = resolve_inputs(&dm, &a.outputs)
        .await?
        .into_iter()
        .map(|i| RunOutput {
            repo: i.repo,
            bundle: i.bundle,
        })
        .collect();
    let status = match a.status {
        StatusArg::Succeeded => RunStatus::Succeeded,
        StatusArg::Failed => RunStatus::Failed,
    };
    let run = Run {
        id: RunId::generate(),
        step: a.common.step,
        status,
        exit_code: a.exit_code,
        command: a.command,
        code,
        host: host(),
        user: user(),
        started_at,
        finished_at,
        params,
        inputs,
        outputs,
        metrics,
        meta,
    };
    dm.record_run(&run).await?;
    output::result(ctx.global.json, &RunView::from(&run), || {
        format!("Recorded run id:{}", run.id)
    })?;
    Ok(ExitCode::SUCCESS)
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

fn short_time(t: &DateTime<Utc>) -> String {
    output::time(t)
}

fn run_line(r: &Run) -> String {
    format!(
        "{} , {} , {} , {} , {}",
        r.id,
        short_time(&r.started_at),
        r.step,
        r.status,
        r.code
    )
}

fn show_run(r: &Run) -> String {
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

fn show_diff(d: &RunDiff) -> String {
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
struct RunView {
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
struct RunDiffView {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2026-01-02").unwrap().to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert!(parse_time("2026-01-02T03:04:05Z").is_ok());
        assert!(parse_time("7d").unwrap() < Utc::now());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn filters() {
        assert_eq!(
            parse_where(&["meta.a=b=c".into()]).unwrap(),
            vec![("a".to_owned(), "b=c".to_owned())]
        );
        assert!(parse_where(&["a=b".into()]).is_err());
        assert!(parse_kv("param", &["=x".into()]).is_err());
        assert_eq!(env_name("raw-data.v2"), "RAW_DATA_V2");
    }
}
