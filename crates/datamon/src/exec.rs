//! Executing a pipeline step as a recorded run, for every front end (`datamon run exec`, the
//! pod sidecar, a Python context manager).
//!
//! The life of a step:
//! 1. [`Datamon::plan_run`] checks everything before anything runs: every input selector
//!    resolves, every output repo exists, every output folder is (or can be) a folder. Nothing
//!    is written.
//! 2. [`RunPlan::materialize`] creates the work folder and the output folders and downloads the
//!    inputs (or [`RunPlan::materialize_with`] mounts them through a front end's
//!    [`InputMounter`]).
//! 3. The caller runs its code: in its own process (reading [`RunPlan::inputs_ready`]), or as a
//!    child process with [`RunPlan::run_command`], which passes the `DATAMON_*` environment and
//!    substitutes `{input:R}`, `{output:R}` and `{param:K}` in the arguments.
//! 4. [`RunPlan::succeed`] uploads every output folder as a bundle, then writes the run record
//!    last; [`RunPlan::fail`] records a failed run and uploads nothing.
//!
//! Every long step takes a [`CancellationToken`]: a cancelled materialize or succeed records
//! nothing and returns [`Error::Cancelled`] (a cancelled upload stops within a chunk of each
//! reader and commits nothing). Dropping a plan removes its temporary work folder and unmounts
//! what it mounted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use datamon_types::{
    BranchName, BundleId, CodeVersion, LabelName, RepoName, Run, RunId, RunInput, RunOutput,
    RunStatus,
};
use futures::future::BoxFuture;

use crate::{
    CancellationToken, Datamon, DownloadOptions, Error, InputSpec, OutputSpec, Progress, Result,
    UploadContext, UploadOptions, UploadReport, META_RUN, META_STEP,
};

/// How long a stopped child process has to exit after SIGTERM before it is killed.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The environment variable naming the JSON file a step writes its metrics to.
pub const ENV_METRICS: &str = "DATAMON_METRICS";

/// What a front end asks for when it runs a step.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// The pipeline step (prepare, train...); must not be blank.
    pub step: String,
    /// The input bundles, in order.
    pub inputs: Vec<InputSpec>,
    /// The folders that become output bundles when the step succeeds.
    pub outputs: Vec<OutputSpec>,
    /// Parameters, recorded and passed to the step.
    pub params: BTreeMap<String, String>,
    /// Metadata recorded on the run and on its output bundles.
    pub meta: BTreeMap<String, String>,
    /// Message of the output bundles (default: `STEP: run ID`).
    pub message: Option<String>,
    /// Where inputs are materialized (default: a temporary folder, removed with the plan).
    pub workdir: Option<PathBuf>,
    /// Where the step writes its metrics (default: `metrics.json` in the work folder).
    pub metrics_file: Option<PathBuf>,
    /// The command line that runs, for the record.
    pub command: Vec<String>,
    /// The code version (see [`CodeVersion`] and [`capture_code_version`]).
    pub code: CodeVersion,
    /// The host the step runs on (see [`capture_host`]).
    pub host: String,
    /// Who runs it (see [`capture_user`]).
    pub user: String,
}

/// An output folder of a planned run and where its bundle goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOutput {
    /// The repo.
    pub repo: RepoName,
    /// The folder (absolute).
    pub dir: PathBuf,
    /// The branch the bundle advances (`None`: the default branch).
    pub branch: Option<BranchName>,
    /// The label set on the bundle.
    pub label: Option<LabelName>,
}

/// An input once materialized: where the step finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializedInput {
    /// The repo.
    pub repo: RepoName,
    /// The bundle.
    pub bundle: BundleId,
    /// Its key in argument templates: the repo, then `REPO#2`, `REPO#3`... for the next inputs
    /// of the same repo (`{input:REPO#2}`).
    pub key: String,
    /// Its environment variable: `DATAMON_INPUT_<REPO>`, then `DATAMON_INPUT_<REPO>_2`...
    pub var: String,
    /// The folder (or, for a `:PATH` input, the file or folder) holding it.
    pub path: PathBuf,
}

/// Mounts input bundles for [`RunPlan::materialize_with`]: implemented by front ends that can
/// mount (FUSE), so the library needs no FUSE itself.
pub trait InputMounter: Send + Sync {
    /// Mounts `bundle` of `repo` read-only on the empty folder `at`; the returned guard
    /// unmounts when dropped.
    fn mount<'a>(
        &'a self,
        dm: &'a Datamon,
        repo: &'a RepoName,
        bundle: &'a BundleId,
        at: &'a Path,
    ) -> BoxFuture<'a, Result<Box<dyn Send + Sync>>>;
}

/// The work folder of a run: a temporary one is removed when the plan is dropped.
#[derive(Debug)]
enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

/// A run checked and ready to execute (see the [module](self) documentation).
pub struct RunPlan {
    dm: Datamon,
    id: RunId,
    spec: RunSpec,
    inputs: Vec<RunInput>,
    outputs: Vec<PlannedOutput>,
    started_at: DateTime<Utc>,
    work: Option<WorkDir>,
    metrics_file: Option<PathBuf>,
    materialized: Vec<MaterializedInput>,
    /// Guards of mounted inputs, dropped (unmounted) with the plan, before the work folder.
    mounts: Vec<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for RunPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunPlan")
            .field("id", &self.id)
            .field("step", &self.spec.step)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("materialized", &self.materialized)
            .field("mounts", &self.mounts.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RunPlan {
    fn drop(&mut self) {
        // Unmount before the temporary work folder (which holds the mount points) goes.
        self.mounts.clear();
        self.work.take();
    }
}

/// What a succeeded run left: the record and the upload of each output.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The run as recorded.
    pub run: Run,
    /// Each output's upload, in the order of the outputs.
    pub uploads: Vec<UploadReport>,
}

impl Datamon {
    /// Plans a run: checks the step, resolves every input, checks every output repo and folder.
    /// Nothing is written.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a blank step or an output path that is not a folder; the
    /// `*NotFound` error of an input or output repo; a store error.
    pub async fn plan_run(&self, spec: RunSpec) -> Result<RunPlan> {
        if spec.step.trim().is_empty() {
            return Err(Error::InvalidInput(
                "a run needs a step: name the pipeline step (prepare, train...)".into(),
            ));
        }
        let inputs = self.resolve_inputs(&spec.inputs).await?;
        let mut outputs = Vec::with_capacity(spec.outputs.len());
        for o in &spec.outputs {
            self.get_repo(&o.repo)
                .await
                .map_err(|e| e.context(format!("output repo {}", o.repo)))?;
            let (branch, label) = self.output_target(&o.repo, o.target.as_deref()).await?;
            let dir = absolute(&o.dir)?;
            if let Ok(m) = std::fs::metadata(&dir) {
                if !m.is_dir() {
                    return Err(Error::InvalidInput(format!(
                        "output {}: {} is not a directory; an output names the folder the command writes",
                        o.repo,
                        dir.display()
                    )));
                }
            }
            outputs.push(PlannedOutput {
                repo: o.repo.clone(),
                dir,
                branch,
                label,
            });
        }
        let metrics_file = spec.metrics_file.as_deref().map(absolute).transpose()?;
        let mut spec = spec;
        if spec.user.is_empty() {
            spec.user = capture_user(None);
        }
        if spec.host.is_empty() {
            spec.host = capture_host();
        }
        Ok(RunPlan {
            dm: self.clone(),
            id: RunId::generate(),
            spec,
            inputs,
            outputs,
            started_at: Utc::now(),
            work: None,
            metrics_file,
            materialized: Vec::new(),
            mounts: Vec::new(),
        })
    }

    /// Resolves input specs to bundles, in order.
    ///
    /// # Errors
    /// The `*NotFound` error of an input (its message names the repo and selector); a store
    /// error.
    pub async fn resolve_inputs(&self, specs: &[InputSpec]) -> Result<Vec<RunInput>> {
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            let bundle = self
                .resolve_text(&s.repo, s.selector.as_deref())
                .await
                .map_err(|e| e.context(format!("input {s}")))?;
            out.push(RunInput {
                repo: s.repo.clone(),
                bundle,
                selector: s.selector.clone(),
                path: s.path.clone(),
            });
        }
        Ok(out)
    }
}

impl RunPlan {
    /// The run's id (also `DATAMON_RUN_ID`).
    pub fn id(&self) -> RunId {
        self.id
    }

    /// The step.
    pub fn step(&self) -> &str {
        &self.spec.step
    }

    /// The resolved inputs.
    pub fn inputs(&self) -> &[RunInput] {
        &self.inputs
    }

    /// The outputs and where their bundles go.
    pub fn outputs(&self) -> &[PlannedOutput] {
        &self.outputs
    }

    /// The inputs as materialized (empty before [`RunPlan::materialize`]).
    pub fn inputs_ready(&self) -> &[MaterializedInput] {
        &self.materialized
    }

    /// The work folder (`None` before [`RunPlan::materialize`]).
    pub fn work_dir(&self) -> Option<&Path> {
        self.work.as_ref().map(WorkDir::path)
    }

    /// Where the step writes its metrics, a JSON object (`None` before
    /// [`RunPlan::materialize`] unless the spec named a file).
    pub fn metrics_file(&self) -> Option<PathBuf> {
        self.metrics_file
            .clone()
            .or_else(|| self.work_dir().map(|w| w.join("metrics.json")))
    }

    /// Creates the work folder and the output folders, then downloads every input into
    /// `<work>/inputs/<repo>` (the next inputs of one repo: `<repo>-2`...).
    ///
    /// # Errors
    /// [`Error::Cancelled`] when `cancel` fires (what was downloaded stays in a kept work
    /// folder; a temporary one is removed with the plan); a download or local I/O error.
    pub async fn materialize(
        &mut self,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<&[MaterializedInput]> {
        self.materialize_inner(None, progress, cancel).await
    }

    /// As [`RunPlan::materialize`], but mounts every whole-bundle input read-only through
    /// `mounter` instead of downloading it (inputs of one path inside a bundle are mounted too,
    /// and point inside the mount).
    ///
    /// # Errors
    /// As [`RunPlan::materialize`], and the mounter's errors.
    pub async fn materialize_with(
        &mut self,
        mounter: &dyn InputMounter,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<&[MaterializedInput]> {
        self.materialize_inner(Some(mounter), progress, cancel)
            .await
    }

    async fn materialize_inner(
        &mut self,
        mounter: Option<&dyn InputMounter>,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<&[MaterializedInput]> {
        if !self.materialized.is_empty() {
            return Ok(&self.materialized);
        }
        for o in &self.outputs {
            std::fs::create_dir_all(&o.dir).map_err(Error::io(&o.dir))?;
        }
        let work = match &self.spec.workdir {
            Some(w) => {
                let w = absolute(w)?;
                std::fs::create_dir_all(&w).map_err(Error::io(&w))?;
                WorkDir::Kept(w)
            }
            None => WorkDir::Temp(
                tempfile::Builder::new()
                    .prefix(&format!("datamon-run-{}-", self.id))
                    .tempdir()
                    .map_err(Error::io(std::env::temp_dir()))?,
            ),
        };
        let root = work.path().join("inputs");
        self.work = Some(work);
        let mut used: BTreeMap<String, usize> = BTreeMap::new();
        let mut ready = Vec::with_capacity(self.inputs.len());
        for i in &self.inputs {
            let n = used.entry(i.repo.to_string()).or_default();
            *n += 1;
            let (name, key, var) = if *n == 1 {
                (
                    i.repo.to_string(),
                    i.repo.to_string(),
                    format!("DATAMON_INPUT_{}", env_name(i.repo.as_str())),
                )
            } else {
                (
                    format!("{}-{n}", i.repo),
                    format!("{}#{n}", i.repo),
                    format!("DATAMON_INPUT_{}_{n}", env_name(i.repo.as_str())),
                )
            };
            let dest = root.join(&name);
            let dm = &self.dm;
            let path = match mounter {
                Some(m) => {
                    std::fs::create_dir_all(&dest).map_err(Error::io(&dest))?;
                    // Not raced against the token: a mount dropped half-way could stay
                    // mounted. The token is checked once it is in place (and held).
                    let guard = m.mount(dm, &i.repo, &i.bundle, &dest).await?;
                    self.mounts.push(guard);
                    if cancel.is_cancelled() {
                        return Err(Error::cancelled("mounting the inputs"));
                    }
                    match &i.path {
                        Some(p) => dest.join(p),
                        None => dest,
                    }
                }
                None => match &i.path {
                    Some(p) => {
                        let fut = dm.download_file(&i.repo, &i.bundle, p, &dest, true, progress);
                        cancellable(cancel, "downloading the inputs", fut)
                            .await
                            .map_err(|e| {
                                not_cancelled(e, || format!("cannot download input {}:{p}", i.repo))
                            })?;
                        dest.join(p)
                    }
                    None => {
                        let opts = DownloadOptions {
                            name_filter: None,
                            force: true,
                        };
                        let fut = dm.download(&i.repo, &i.bundle, &dest, &opts, progress);
                        cancellable(cancel, "downloading the inputs", fut)
                            .await
                            .map_err(|e| {
                                not_cancelled(e, || format!("cannot download input {}", i.repo))
                            })?;
                        dest
                    }
                },
            };
            ready.push(MaterializedInput {
                repo: i.repo.clone(),
                bundle: i.bundle,
                key,
                var,
                path,
            });
        }
        self.materialized = ready;
        Ok(&self.materialized)
    }

    /// The environment of the step: `DATAMON_INPUT_<REPO>`, `DATAMON_OUTPUT_<REPO>`,
    /// `DATAMON_PARAM_<KEY>`, `DATAMON_METRICS`, `DATAMON_RUN_ID`, `DATAMON_STEP`.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = self
            .materialized
            .iter()
            .map(|i| (i.var.clone(), i.path.display().to_string()))
            .collect();
        for o in &self.outputs {
            vars.push((
                format!("DATAMON_OUTPUT_{}", env_name(o.repo.as_str())),
                o.dir.display().to_string(),
            ));
        }
        for (k, v) in &self.spec.params {
            vars.push((format!("DATAMON_PARAM_{}", env_name(k)), v.clone()));
        }
        if let Some(m) = self.metrics_file() {
            vars.push((ENV_METRICS.into(), m.display().to_string()));
        }
        vars.push(("DATAMON_RUN_ID".into(), self.id.to_string()));
        vars.push(("DATAMON_STEP".into(), self.spec.step.clone()));
        vars
    }

    /// `args` with `{input:REPO}` (`{input:REPO#2}`...), `{output:REPO}` and `{param:KEY}`
    /// replaced by the input path, output folder and parameter value.
    pub fn substitute(&self, args: &[String]) -> Vec<String> {
        let mut subst: Vec<(String, String)> = self
            .materialized
            .iter()
            .map(|i| (format!("{{input:{}}}", i.key), i.path.display().to_string()))
            .collect();
        for o in &self.outputs {
            subst.push((
                format!("{{output:{}}}", o.repo),
                o.dir.display().to_string(),
            ));
        }
        for (k, v) in &self.spec.params {
            subst.push((format!("{{param:{k}}}"), v.clone()));
        }
        args.iter()
            .map(|arg| {
                subst
                    .iter()
                    .fold(arg.clone(), |s, (from, to)| s.replace(from, to))
            })
            .collect()
    }

    /// Sets the command line the run records, for callers that learn it only after planning
    /// (the pod sidecar hears it from the wrapper that ran it).
    pub fn set_command(&mut self, argv: Vec<String>) {
        self.spec.command = argv;
    }

    /// A child process for `argv` (substituted, see [`RunPlan::substitute`]) with the step's
    /// [environment](RunPlan::environment), for callers that wait for it their own way (the
    /// CLI passes its signals on).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `argv` is empty.
    pub fn command(&self, argv: &[String]) -> Result<std::process::Command> {
        let argv = self.substitute(argv);
        let Some(program) = argv.first() else {
            return Err(Error::InvalidInput("the step has no command".into()));
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(&argv[1..]).envs(self.environment());
        Ok(cmd)
    }

    /// Runs `argv` as a child process (see [`RunPlan::command`]) with `stdout`, and waits for
    /// it; returns its exit code (128 + the signal when a signal ended it). When `stop` fires,
    /// the child gets SIGTERM, and SIGKILL if it is still running [`STOP_GRACE`] later; when the
    /// returned future is dropped, the child is killed.
    ///
    /// # Errors
    /// [`Error::CommandNotFound`] when the program does not exist; [`Error::Io`] when it cannot
    /// be started or waited for.
    pub async fn run_command(
        &self,
        argv: &[String],
        stdout: std::process::Stdio,
        stop: &CancellationToken,
    ) -> Result<i32> {
        let mut cmd = self.command(argv)?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdout(stdout);
        // Killed if this future is dropped: no child outlives the call that started it.
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(&program, e))?;
        let status = tokio::select! {
            r = child.wait() => r.map_err(Error::io(&program))?,
            () = stop.cancelled() => {
                // SIGTERM while the child is surely running (not yet reaped), then SIGKILL if
                // it has not exited after a grace period.
                if let Some(pid) = child
                    .id()
                    .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?))
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(r) => r.map_err(Error::io(&program))?,
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await.map_err(Error::io(&program))?
                    }
                }
            }
        };
        Ok(exit_code_of(status))
    }

    /// Finishes a run whose step succeeded: checks that every output folder is still a folder,
    /// uploads each as a bundle (with `datamon.run` and `datamon.step` in its metadata), then
    /// records the run as succeeded, with the metrics the step wrote.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when an output folder is gone; [`Error::Cancelled`] when
    /// `cancel` fires before the record is written (bundles uploaded before stay, nothing is
    /// recorded); an upload or store error (nothing is recorded).
    pub async fn succeed(
        self,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<RunResult> {
        self.succeed_reporting(progress, cancel, &mut |_| {}).await
    }

    /// As [`RunPlan::succeed`], calling `uploaded` with each output's upload as soon as it is
    /// committed (a front end says so before the next output).
    ///
    /// # Errors
    /// As [`RunPlan::succeed`].
    pub async fn succeed_reporting(
        self,
        progress: &dyn Progress,
        cancel: &CancellationToken,
        uploaded: &mut (dyn FnMut(&UploadReport) + Send),
    ) -> Result<RunResult> {
        for o in &self.outputs {
            if !o.dir.is_dir() {
                return Err(Error::InvalidInput(format!(
                    "output {}: {} is not a directory after the command; nothing was uploaded or recorded",
                    o.repo,
                    o.dir.display()
                )));
            }
        }
        let message = self
            .spec
            .message
            .clone()
            .unwrap_or_else(|| format!("{}: run {}", self.spec.step, self.id));
        let mut run = self.record_base(RunStatus::Succeeded, Some(0));
        let mut uploads = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            let mut meta = self.spec.meta.clone();
            meta.insert(META_RUN.into(), self.id.to_string());
            meta.insert(META_STEP.into(), self.spec.step.clone());
            let report = self
                .dm
                .upload(
                    UploadContext {
                        repo: o.repo.clone(),
                        path: o.dir.clone(),
                        message: message.clone(),
                    },
                    UploadOptions {
                        label: o.label.clone(),
                        branch: o.branch.clone(),
                        meta,
                        cancel: cancel.clone(),
                        ..Default::default()
                    },
                    progress,
                )
                .await
                .map_err(|e| {
                    not_cancelled(e, || {
                        format!("cannot upload output {} from {}", o.repo, o.dir.display())
                    })
                })?;
            run.outputs.push(RunOutput {
                repo: o.repo.clone(),
                bundle: report.bundle.id,
            });
            uploaded(&report);
            uploads.push(report);
        }
        // Every output is committed: the run is recorded whatever happens now (one write), so
        // no bundle names a run that does not exist.
        run.finished_at = Utc::now();
        self.dm.record_run(&run).await?;
        Ok(RunResult { run, uploads })
    }

    /// Finishes a run whose step failed (or was stopped): records it as failed with
    /// `exit_code` and the metrics the step wrote; uploads nothing.
    ///
    /// # Errors
    /// A store error.
    pub async fn fail(self, exit_code: i32) -> Result<Run> {
        let run = self.record_base(RunStatus::Failed, Some(exit_code));
        self.dm.record_run(&run).await?;
        Ok(run)
    }

    /// The run record before its outputs: what the plan knows, the metrics file, now.
    fn record_base(&self, status: RunStatus, exit_code: Option<i32>) -> Run {
        let metrics = match self.metrics_file() {
            Some(f) if f.exists() => match read_metrics(&f) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("{e}; the run is recorded without metrics");
                    BTreeMap::new()
                }
            },
            _ => BTreeMap::new(),
        };
        Run {
            id: self.id,
            step: self.spec.step.clone(),
            status,
            exit_code,
            command: self.spec.command.clone(),
            code: self.spec.code.clone(),
            host: self.spec.host.clone(),
            user: self.spec.user.clone(),
            started_at: self.started_at,
            finished_at: Utc::now(),
            params: self.spec.params.clone(),
            inputs: self.inputs.clone(),
            outputs: Vec::new(),
            metrics,
            meta: self.spec.meta.clone(),
        }
    }
}

/// The error of a child process that could not start.
pub fn spawn_error(program: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::CommandNotFound {
            program: program.to_owned(),
        },
        _ => Error::io(program)(e),
    }
}

/// `e` with the context `what`, unless it is a cancellation (which says what stopped itself).
fn not_cancelled(e: Error, what: impl FnOnce() -> String) -> Error {
    if e.kind() == crate::ErrorKind::Cancelled {
        e
    } else {
        e.context(what())
    }
}

/// Runs `fut` unless `cancel` fires first (then `fut` is dropped: only for futures that are
/// safe to drop at any await).
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if cancel.is_cancelled() {
        return Err(Error::cancelled(what));
    }
    tokio::select! {
        r = fut => r,
        () = cancel.cancelled() => Err(Error::cancelled(what)),
    }
}

/// How a child process ended, as an exit code: its status, or 128 + the signal that ended it.
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// The environment variable suffix for a name: upper case, other characters as `_`.
pub fn env_name(name: &str) -> String {
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

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(Error::io(p))
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

/// Reads a metrics file: a JSON object, nested objects flattened to dotted keys
/// (`{"eval": {"acc": 0.9}}` is `eval.acc`).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::InvalidInput`] when it is not a JSON
/// object.
pub fn read_metrics(path: &Path) -> Result<BTreeMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidInput(format!(
            "the metrics file {} is not JSON: {e}",
            path.display()
        ))
    })?;
    if !v.is_object() {
        return Err(Error::InvalidInput(format!(
            "the metrics file {} must hold a JSON object",
            path.display()
        )));
    }
    let mut out = BTreeMap::new();
    flatten("", v, &mut out);
    Ok(out)
}

/// The code version of the git work tree at `dir` (its commit and whether tracked files have
/// uncommitted changes; `None`s outside a work tree or without git), with `image` (the container
/// image the step runs in, which only the front end knows).
pub fn capture_code_version(dir: &Path, image: Option<String>) -> CodeVersion {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let git_commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
    let git_dirty = git_commit.as_ref().and_then(|_| {
        git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty())
    });
    CodeVersion {
        git_commit,
        git_dirty,
        image: image.filter(|s| !s.is_empty()),
    }
}

/// This machine's host name (the kernel's node name).
pub fn capture_host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who runs a step: `login` (what the front end read from `$USER` or `$LOGNAME`) when it is
/// set, else the account name of this process's uid, else the numeric uid. As root in a
/// container `$USER` is usually unset; the uid's name is then `root`.
pub fn capture_user(login: Option<String>) -> String {
    if let Some(l) = login.filter(|l| !l.trim().is_empty()) {
        return l;
    }
    let uid = rustix::process::getuid();
    account_name(uid.as_raw()).unwrap_or_else(|| uid.as_raw().to_string())
}

/// The account name of `uid` from the system's user database (`/etc/passwd`).
fn account_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write fixtures directly
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(capture_user(Some("ada".into())), "ada");
        let uid = rustix::process::getuid().as_raw();
        let expected = account_name(uid).unwrap_or_else(|| uid.to_string());
        assert_eq!(capture_user(None), expected);
        assert_eq!(capture_user(Some(" ".into())), expected);
        assert_ne!(capture_user(None), "unknown");
        if uid == 0 {
            assert_eq!(capture_user(None), "root");
        }
        // A uid with no account: the number.
        assert_eq!(account_name(4_000_000_000), None);
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("raw-data.v2"), "RAW_DATA_V2");
    }

    #[test]
    fn metrics_are_flattened() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("m.json");
        std::fs::write(&f, r#"{"loss": 0.5, "eval": {"acc": 0.9}}"#).expect("write");
        let m = read_metrics(&f).expect("metrics");
        assert_eq!(m["loss"], serde_json::json!(0.5));
        assert_eq!(m["eval.acc"], serde_json::json!(0.9));
        std::fs::write(&f, "[1]").expect("write");
        assert_eq!(
            read_metrics(&f).expect_err("not an object").kind(),
            crate::ErrorKind::InvalidInput
        );
    }
}
