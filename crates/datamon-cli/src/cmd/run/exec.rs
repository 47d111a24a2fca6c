//! `run exec` and `run record`: the command-line front of `datamon::exec`.
//!
//! The library plans the run, materializes the inputs, uploads the outputs and records the run.
//! What stays here is what only a process owning a terminal does: read the environment (the
//! container image, `$USER`, `$DATAMON_METRICS`), map SIGINT and SIGTERM onto the library's
//! cancellation, pass them on to the command, and say what happened.

use std::process::ExitCode;

use anyhow::bail;
use bytesize::ByteSize;
use chrono::Utc;
use datamon::exec::{capture_code_version, capture_host, capture_user, exit_code_of, spawn_error};
use datamon::{CancellationToken, ErrorKind, Run, RunId, RunOutput, RunSpec, RunStatus};
use tokio::sync::watch;

use super::views::RunView;
use super::{ExecArgs, RecordArgs, StatusArg};
use crate::cmd::fuse_inputs::FuseInputs;
use crate::cmd::parse::{parse_kv, parse_time};
use crate::output;
use crate::Ctx;

/// Environment variable naming the container image (with its digest) a run executes in.
const ENV_IMAGE: &str = "DATAMON_IMAGE";

/// What a process knows about who and where it runs: the code version of the current
/// directory's git work tree, `$DATAMON_IMAGE`, the host and the user.
fn identity() -> (datamon::CodeVersion, String, String) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let code = capture_code_version(&cwd, std::env::var(ENV_IMAGE).ok());
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok();
    (code, capture_host(), capture_user(login))
}

/// The child's stdout goes to our stderr: stdout carries only datamon's result.
fn child_stdout() -> std::process::Stdio {
    use std::os::fd::AsFd as _;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::inherit(),
    }
}

/// Signal numbers (Linux).
mod signal {
    pub const INT: i32 = 2;
    pub const TERM: i32 = 15;
}

/// SIGINT and SIGTERM while `run exec` works: caught (so the work folder is cleaned up and the
/// outcome recorded) instead of killing datamon outright. The first one cancels the library's
/// work in progress.
struct Interrupts {
    rx: watch::Receiver<Option<i32>>,
    cancel: CancellationToken,
}

impl Interrupts {
    fn install() -> anyhow::Result<Interrupts> {
        use anyhow::Context as _;
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let (tx, rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        tokio::spawn(async move {
            loop {
                let sig = tokio::select! {
                    Some(()) = int.recv() => signal::INT,
                    Some(()) = term.recv() => signal::TERM,
                    else => return,
                };
                token.cancel();
                if tx.send(Some(sig)).is_err() {
                    return;
                }
            }
        });
        Ok(Interrupts { rx, cancel })
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

    /// The error of work stopped by a signal: exit code 128 + the signal, `what` said.
    fn stopped(&self, what: &str) -> anyhow::Error {
        let sig = self.received().unwrap_or(signal::INT);
        anyhow::Error::new(Interrupted(sig)).context(what.to_owned())
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
                if s == signal::TERM {
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

pub(super) async fn exec(a: ExecArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let params = parse_kv("param", &a.common.params)?;
    let meta = parse_kv("meta", &a.common.meta)?;
    if a.common.step.trim().is_empty() {
        bail!("--step must name the pipeline step");
    }
    let dm = ctx.open().await?;
    let (code, host, user) = identity();
    let spec = RunSpec {
        step: a.common.step.clone(),
        inputs: a.common.inputs.clone(),
        outputs: a.outputs.clone(),
        params,
        meta,
        message: a.message.clone(),
        workdir: a.workdir.clone(),
        metrics_file: std::env::var_os(datamon::exec::ENV_METRICS).map(Into::into),
        command: a.command.clone(),
        code,
        host,
        user,
    };
    // Everything is checked before anything runs: inputs resolve, output repos exist, output
    // folders are folders.
    let mut plan = dm.plan_run(spec).await?;
    let id = plan.id();
    let mut interrupts = Interrupts::install()?;
    let quiet = ctx.global.quiet || ctx.global.json;
    let bar = ctx.progress();

    let materialized = if a.mount_inputs {
        let mounter = FuseInputs {
            cache_dir: ctx.home.cache_dir().join("chunks"),
        };
        plan.materialize_with(&mounter, &bar, &interrupts.cancel)
            .await
            .map(|_| ())
    } else {
        plan.materialize(&bar, &interrupts.cancel).await.map(|_| ())
    };
    match materialized {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            return Err(
                interrupts.stopped("stopped while downloading the inputs; nothing was recorded")
            )
        }
        Err(e) => return Err(e.into()),
    }

    let program = a.command[0].clone();
    let mut cmd = plan.command(&a.command)?;
    if !quiet {
        let argv = plan.substitute(&a.command);
        eprintln!("run {id} ({}): {}", a.common.step, argv.join(" "));
    }
    if interrupts.received().is_some() {
        return Err(interrupts.stopped("stopped before running the command; nothing was recorded"));
    }
    let cannot_run = |e: std::io::Error| {
        let e = spawn_error(&program, e);
        match e {
            datamon::Error::CommandNotFound { .. } => {
                anyhow::anyhow!("{e}; nothing was recorded")
            }
            e => anyhow::Error::from(e)
                .context(format!("cannot run {program:?}; nothing was recorded")),
        }
    };
    let child = cmd.stdout(child_stdout()).spawn().map_err(cannot_run)?;
    let status = wait_child(child, &mut interrupts)
        .await
        .map_err(cannot_run)?;
    // Interrupted: the run failed, whatever the command's status (128 + the signal).
    let exit_code = match interrupts.received() {
        Some(s) if status.success() => 128 + s,
        _ => exit_code_of(status),
    };
    let interrupted = interrupts.received().is_some();

    if !status.success() || interrupted {
        let run = plan.fail(exit_code).await?;
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

    let mut say = |r: &datamon::UploadReport| {
        if !quiet {
            eprintln!(
                "output {}: bundle {} ({} files, {})",
                r.bundle.repo,
                r.bundle.id,
                r.bundle.stats.files,
                ByteSize(r.bundle.stats.bytes)
            );
        }
    };
    let result = match plan
        .succeed_reporting(&bar, &interrupts.cancel, &mut say)
        .await
    {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            return Err(
                interrupts.stopped("stopped while uploading the outputs; nothing was recorded")
            )
        }
        Err(e) => return Err(e.into()),
    };
    output::result(ctx.global.json, &RunView::from(&result.run), || {
        format!("Recorded run id:{id}")
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn record(a: RecordArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
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
        .map(datamon::exec::read_metrics)
        .transpose()?
        .unwrap_or_default();
    let (mut code, host, user) = identity();
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
    let inputs = dm.resolve_inputs(&a.common.inputs).await?;
    let outputs = dm
        .resolve_inputs(&a.outputs)
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
        host,
        user,
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
