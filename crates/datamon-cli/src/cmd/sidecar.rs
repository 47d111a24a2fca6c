//! `datamon sidecar` and `datamon sidecar exec`: the two containers of a pod step, coordinated
//! through files in a shared folder (`datamon::sidecar`; the protocol is in docs/sidecar.md).
//!
//! This module reads the configuration (flags, or one YAML or JSON file), maps SIGTERM and
//! SIGINT onto the library's cancellation, runs the application's command, and says what
//! happened. The protocol itself lives in the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use datamon::exec::{capture_code_version, capture_host, capture_user, exit_code_of, spawn_error};
use datamon::sidecar::{self, Coordination, OutcomeStatus, Side, SidecarSpec, Timeouts};
use datamon::{CancellationToken, ErrorKind, InputSpec, OutputSpec, RunSpec};
use serde::Deserialize;

use crate::cmd::fuse_inputs::FuseInputs;
use crate::cmd::parse::{parse_duration, parse_kv};
use crate::Ctx;

/// Environment variable naming the coordination folder (both containers).
const ENV_DIR: &str = "DATAMON_SIDECAR_DIR";

/// `datamon sidecar`: serve a step's inputs and outputs; `datamon sidecar exec`: run the
/// application's command under it.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SidecarCmd {
    #[command(subcommand)]
    sub: Option<SidecarSub>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum SidecarSub {
    /// In the application container: wait for the sidecar's inputs, run COMMAND, report its
    /// exit status, wait for the upload; exits with COMMAND's status (non-zero when the sidecar fails)
    Exec(ExecArgs),
}

/// The coordination folder and the protocol's time limits (both sides).
#[derive(Debug, Clone, Args)]
struct CoordArgs {
    /// The coordination folder on the volume both containers share
    #[arg(long, env = ENV_DIR, value_name = "DIR")]
    coordination: Option<PathBuf>,
    /// How often each side writes its heartbeat (default 1s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    heartbeat: Option<Duration>,
    /// The other side is gone when its heartbeat has not changed for this long (default 10s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stale_after: Option<Duration>,
    /// How long to wait for the other side's first heartbeat (default 10m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    start_timeout: Option<Duration>,
    /// How long the application waits for the inputs (default 6h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ready_timeout: Option<Duration>,
    /// How long the sidecar waits for the command to end (default 7d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    run_timeout: Option<Duration>,
    /// How long the application waits for the upload (default 6h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    finish_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A YAML or JSON file with the settings below (flags add inputs, outputs, params and meta,
    /// and override the rest)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The pipeline step (prepare, train...)
    #[arg(long)]
    step: Option<String>,
    /// An input, `REPO@SELECTOR[:PATH][=LINK]`: the bundle is mounted or downloaded into the
    /// work folder, and LINK (if given) is made a symlink to it (repeatable)
    #[arg(long = "input", value_name = "REPO@SELECTOR[:PATH][=LINK]")]
    inputs: Vec<String>,
    /// An output, `REPO:DIR[@BRANCH_OR_LABEL]`: DIR becomes a bundle of REPO when the command
    /// succeeds (repeatable)
    #[arg(long = "output", value_name = "REPO:DIR[@BRANCH_OR_LABEL]")]
    outputs: Vec<OutputSpec>,
    /// A parameter, KEY=VALUE (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Metadata of the run and its output bundles, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Message of the output bundles (default: `STEP: run ID`)
    #[arg(long)]
    message: Option<String>,
    /// Mount the inputs read-only with FUSE instead of downloading them
    #[arg(long)]
    mount: bool,
    /// Where the inputs go (default: `work/` in the coordination folder); on the shared volume
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Where the output ids are written: `DIR/REPO` (the id alone, for Argo output
    /// parameters), `DIR/run-id`, `DIR/outputs.json`
    #[arg(long, value_name = "DIR")]
    ids_dir: Option<PathBuf>,
    #[command(flatten)]
    coord: CoordArgs,
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    coord: CoordArgs,
    /// The command and its arguments, after `--`; `{input:REPO}`, `{output:REPO}` and
    /// `{param:KEY}` are replaced as in `run exec`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The configuration file (YAML or JSON; JSON is YAML too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct FileConfig {
    step: Option<String>,
    #[serde(default)]
    inputs: Vec<FileInput>,
    #[serde(default)]
    outputs: Vec<FileOutput>,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    meta: BTreeMap<String, serde_json::Value>,
    message: Option<String>,
    mount: Option<bool>,
    coordination: Option<PathBuf>,
    workdir: Option<PathBuf>,
    ids_dir: Option<PathBuf>,
    #[serde(default)]
    timeouts: FileTimeouts,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInput {
    /// `REPO@SELECTOR[:PATH]`.
    input: String,
    /// Where a symlink to it is made.
    link: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOutput {
    /// The folder the command writes.
    path: PathBuf,
    /// The repo.
    repo: String,
    /// `BRANCH`, `LABEL`, `branch:NAME` or `label:NAME`.
    target: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    heartbeat: Option<String>,
    stale_after: Option<String>,
    start: Option<String>,
    ready: Option<String>,
    run: Option<String>,
    finish: Option<String>,
}

impl SidecarCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self.sub {
            Some(SidecarSub::Exec(a)) => exec(a).await,
            None => serve(self.serve, ctx).await,
        }
    }
}

/// A value of a YAML map as text (`0.1`, `true`, `"x"` -> `x`).
fn scalar(key: &str, v: serde_json::Value) -> anyhow::Result<String> {
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => bail!("{key}: expected a string, number or boolean"),
    })
}

fn load_file(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let v: serde_json::Value = serde_norway::from_str(&text).with_context(|| {
        format!(
            "{} is not YAML or JSON: fix the file (the settings are documented in docs/sidecar.md)",
            path.display()
        )
    })?;
    if v.is_null() {
        return Ok(FileConfig::default());
    }
    serde_json::from_value(v).with_context(|| {
        format!(
            "{}: bad configuration (the settings are documented in docs/sidecar.md)",
            path.display()
        )
    })
}

/// The time limits: flags, then the file, then the defaults.
fn timeouts(a: &CoordArgs, f: &FileTimeouts) -> anyhow::Result<Timeouts> {
    let d = Timeouts::default();
    let pick = |flag: Option<Duration>, file: &Option<String>, name: &str, default: Duration| match (
        flag, file,
    ) {
        (Some(v), _) => Ok(v),
        (None, Some(s)) => parse_duration(s).map_err(|e| anyhow::anyhow!("timeouts.{name}: {e}")),
        (None, None) => Ok(default),
    };
    Ok(Timeouts {
        heartbeat: pick(a.heartbeat, &f.heartbeat, "heartbeat", d.heartbeat)?,
        stale: pick(a.stale_after, &f.stale_after, "stale_after", d.stale)?,
        start: pick(a.start_timeout, &f.start, "start", d.start)?,
        ready: pick(a.ready_timeout, &f.ready, "ready", d.ready)?,
        run: pick(a.run_timeout, &f.run, "run", d.run)?,
        finish: pick(a.finish_timeout, &f.finish, "finish", d.finish)?,
    })
}

fn coordination_dir(a: &CoordArgs, file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match a.coordination.clone().or(file) {
        Some(d) => Ok(d),
        None => bail!(
            "no coordination folder: pass --coordination DIR (or set ${ENV_DIR}) naming a folder on the volume both containers share"
        ),
    }
}

/// `REPO@SELECTOR[:PATH][=LINK]`.
fn parse_input(s: &str) -> anyhow::Result<(InputSpec, Option<PathBuf>)> {
    let (spec, link) = match s.rsplit_once('=') {
        Some((spec, link)) if !link.is_empty() => (spec, Some(PathBuf::from(link))),
        Some(_) => bail!("--input {s:?}: the link after `=` is empty"),
        None => (s, None),
    };
    let spec: InputSpec = spec
        .parse()
        .with_context(|| format!("--input {s:?}: expected REPO@SELECTOR[:PATH][=LINK]"))?;
    Ok((spec, link))
}

/// SIGTERM and SIGINT: the first cancels `cancel`; the signal is kept.
fn watch_signals(
    cancel: CancellationToken,
) -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicI32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let got = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = int.recv() => 2,
                Some(()) = term.recv() => 15,
                else => return,
            };
            seen.store(sig, std::sync::atomic::Ordering::SeqCst);
            cancel.cancel();
        }
    });
    Ok(got)
}

async fn serve(a: ServeArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let file = match a.config.as_deref().map(load_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            // A wrapper waiting on the folder named by the flags learns why.
            if let Some(dir) = &a.coord.coordination {
                let told = Coordination::new(dir, Timeouts::default())
                    .and_then(|c| sidecar::report_failure(&c, &format!("{e:#}")));
                if let Err(w) = told {
                    tracing::warn!("cannot tell the application: {w}");
                }
            }
            return Err(e);
        }
    };
    let dir = coordination_dir(&a.coord, file.coordination.clone())?;
    let t = timeouts(&a.coord, &file.timeouts)?;
    let coord = Coordination::new(&dir, t)?;
    // From here on every failure is also told to the application through the folder.
    let tell = |e: anyhow::Error| -> anyhow::Error {
        if let Err(w) = sidecar::report_failure(&coord, &format!("{e:#}")) {
            tracing::warn!("cannot tell the application: {w}");
        }
        e
    };
    let spec = build_spec(a, file, &dir).map_err(tell)?;
    let mount = spec.1;
    let spec = spec.0;
    let dm = ctx.open().await.map_err(tell)?;
    let cancel = CancellationToken::new();
    let signal = watch_signals(cancel.clone())?;
    let bar = ctx.progress();
    let mounter = FuseInputs {
        cache_dir: ctx.home.cache_dir().join("chunks"),
    };
    let mounter: Option<&dyn datamon::InputMounter> = if mount { Some(&mounter) } else { None };
    let quiet = ctx.global.quiet || ctx.global.json;
    if !quiet {
        eprintln!("sidecar: coordinating through {}", dir.display());
    }
    let r = sidecar::run_sidecar(&dm, &coord, spec, mounter, &bar, &cancel).await;
    match r {
        Ok(report) => {
            let o = report.outcome;
            let run = o.run_id.map(|r| r.to_string()).unwrap_or_default();
            match o.status {
                OutcomeStatus::Succeeded => {
                    if !quiet {
                        for (repo, id) in &o.outputs {
                            eprintln!("output {repo}: bundle {id}");
                        }
                    }
                    crate::output::result(
                        ctx.global.json,
                        &serde_json::json!({
                            "run": run,
                            "status": "succeeded",
                            "outputs": o.outputs.iter().map(|(r, b)| serde_json::json!({"repo": r, "bundle": b})).collect::<Vec<_>>(),
                        }),
                        || format!("Recorded run id:{run}"),
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    let code = o.exit_code.unwrap_or(1);
                    eprintln!(
                        "sidecar: the command failed with exit status {code}; recorded failed run {run}, uploaded nothing"
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            let sig = signal.load(std::sync::atomic::Ordering::SeqCst);
            eprintln!("sidecar: stopped by signal {sig}; inputs unmounted, nothing uploaded");
            Ok(ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)))
        }
        Err(e) => Err(anyhow::Error::from(e).context("sidecar")),
    }
}

/// The run the sidecar serves, and whether to mount: the file, then the flags.
fn build_spec(
    a: ServeArgs,
    file: FileConfig,
    dir: &std::path::Path,
) -> anyhow::Result<(SidecarSpec, bool)> {
    let step = a.step.or(file.step).unwrap_or_default();
    if step.trim().is_empty() {
        bail!("no step: pass --step NAME (or `step:` in the configuration file)");
    }
    let mut inputs = Vec::new();
    let mut links = Vec::new();
    for i in &file.inputs {
        let spec: InputSpec = i
            .input
            .parse()
            .with_context(|| format!("inputs: {:?}: expected REPO@SELECTOR[:PATH]", i.input))?;
        inputs.push(spec);
        links.push(i.link.clone());
    }
    for s in &a.inputs {
        let (spec, link) = parse_input(s)?;
        inputs.push(spec);
        links.push(link);
    }
    let mut outputs = Vec::new();
    for o in file.outputs {
        outputs.push(OutputSpec {
            repo: o
                .repo
                .parse()
                .with_context(|| format!("outputs: repo {:?}", o.repo))?,
            dir: o.path,
            target: o.target,
        });
    }
    outputs.extend(a.outputs);
    let mut params = BTreeMap::new();
    for (k, v) in file.params {
        params.insert(k.clone(), scalar(&format!("params.{k}"), v)?);
    }
    params.extend(parse_kv("param", &a.params)?);
    let mut meta = BTreeMap::new();
    for (k, v) in file.meta {
        meta.insert(k.clone(), scalar(&format!("meta.{k}"), v)?);
    }
    meta.extend(parse_kv("meta", &a.meta)?);
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok();
    let run = RunSpec {
        step,
        inputs,
        outputs,
        params,
        meta,
        message: a.message.or(file.message),
        workdir: Some(
            a.workdir
                .or(file.workdir)
                .unwrap_or_else(|| dir.join("work")),
        ),
        metrics_file: Some(dir.join("metrics.json")),
        command: Vec::new(),
        code: capture_code_version(&cwd, std::env::var("DATAMON_IMAGE").ok()),
        host: capture_host(),
        user: capture_user(login),
    };
    Ok((
        SidecarSpec {
            run,
            links,
            ids_dir: a.ids_dir.or(file.ids_dir),
        },
        a.mount || file.mount.unwrap_or(false),
    ))
}

/// The application side: needs no store, only the coordination folder.
async fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    use rustix::process::{kill_process, Pid, Signal};
    let dir = coordination_dir(&a.coord, None)?;
    let t = timeouts(&a.coord, &FileTimeouts::default())?;
    let coord = Coordination::new(&dir, t)?;
    let hb = coord.heartbeat(Side::App, "", "waiting for the inputs")?;
    let cancel = CancellationToken::new();
    let signal = watch_signals(cancel.clone())?;
    let program = a.command[0].clone();
    let ready = match sidecar::wait_ready(&coord, &cancel).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            let sig = signal.load(std::sync::atomic::Ordering::SeqCst);
            eprintln!("datamon: stopped by signal {sig} before {program:?} ran");
            return Ok(ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)));
        }
        Err(e) => {
            return Err(anyhow::Error::from(e).context(format!(
                "{program:?} did not run: its inputs are not available"
            )))
        }
    };
    hb.set_session(&ready.session);
    hb.set_state("running");
    let argv = ready.substitute(&a.command);
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(ready.env.iter().cloned());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // The sidecar records the failure (127: not found, as a shell says).
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            sidecar::write_done(&coord, &ready, &a.command, code)?;
            return Err(anyhow::Error::from(spawn_error(&program, e))
                .context("the command did not start; the sidecar records a failed run"));
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let waiter = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    });
    tokio::pin!(waiter);
    let gone = sidecar::sidecar_gone(&coord, &ready);
    tokio::pin!(gone);
    let mut lost: Option<datamon::Error> = None;
    let mut termed = false;
    let status = loop {
        tokio::select! {
            r = &mut waiter => break r.map_err(std::io::Error::other)??,
            () = cancel.cancelled(), if !termed => {
                termed = true;
                if let Some(pid) = pid { let _ = kill_process(pid, Signal::TERM); }
            }
            e = &mut gone, if lost.is_none() => {
                // The sidecar is gone: nothing would upload the outputs; stop the command.
                lost = Some(e);
                termed = true;
                if let Some(pid) = pid { let _ = kill_process(pid, Signal::TERM); }
            }
        }
    };
    let code = exit_code_of(status);
    if let Some(e) = lost {
        let _ = sidecar::write_done(&coord, &ready, &a.command, code);
        return Err(anyhow::Error::from(e).context(format!(
            "{program:?} was stopped: the sidecar cannot upload its outputs"
        )));
    }
    let sig = signal.load(std::sync::atomic::Ordering::SeqCst);
    let code = if sig != 0 && code == 0 {
        128 + sig
    } else {
        code
    };
    sidecar::write_done(&coord, &ready, &a.command, code)?;
    if sig != 0 {
        eprintln!("datamon: stopped by signal {sig}; {program:?} exited with status {code}");
        return Ok(ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)));
    }
    hb.set_state("waiting for the upload");
    let outcome = sidecar::wait_result(&coord, &ready, &CancellationToken::new())
        .await
        .context("the command ended but its outputs may not be uploaded")?;
    drop(hb);
    match outcome.status {
        OutcomeStatus::Succeeded => {
            for (repo, id) in &outcome.outputs {
                eprintln!("datamon: output {repo}: bundle {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        OutcomeStatus::Failed => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1).max(1))),
        OutcomeStatus::Error => bail!(
            "the sidecar could not record the run: {}",
            outcome.reason.unwrap_or_default()
        ),
    }
}
