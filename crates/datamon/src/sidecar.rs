//! The in-pod sidecar: a step's inputs and outputs handled by a second container, coordinated
//! with the application container through files in a shared folder (a Kubernetes `emptyDir`).
//!
//! The protocol (written down for operators in `docs/sidecar.md`):
//! - Every file is written whole under a temporary name and renamed into place, so a reader sees
//!   either nothing or the complete file. Every file carries the sidecar's `session`, so files of
//!   an earlier attempt are never taken for this one.
//! - Both sides rewrite a heartbeat file ([`HEARTBEAT_SIDECAR`], [`HEARTBEAT_APP`]) every
//!   [`Timeouts::heartbeat`], with a counter that changes at every beat. A side whose counter has
//!   not changed for [`Timeouts::stale`] (measured on the observer's monotonic clock, so clocks
//!   need not agree) is gone; a side whose heartbeat never appears within [`Timeouts::start`] never
//!   started.
//! - The sidecar ([`run_sidecar`]) plans the run, mounts or downloads the inputs and writes
//!   [`READY`] (the step's environment and argument substitutions), or [`FAILED`] with its reason.
//! - The wrapper ([`wait_ready`], then [`write_done`]) runs the command and writes [`DONE`] with
//!   its exit status.
//! - The sidecar then uploads the outputs and records the run (or records a failed run and
//!   uploads nothing), writes the output ids, unmounts, and writes [`RESULT`]; the wrapper
//!   ([`wait_result`]) exits with the outcome, so the pod's main container fails when the upload
//!   does.
//!
//! Every wait is bounded: by the other side's heartbeat and by its own deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datamon_types::{BundleId, RepoName, RunId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::exec::{InputMounter, RunSpec};
use crate::{CancellationToken, Datamon, Error, ErrorKind, Progress, Result};

/// The sidecar's heartbeat file.
pub const HEARTBEAT_SIDECAR: &str = "sidecar.alive";
/// The application wrapper's heartbeat file.
pub const HEARTBEAT_APP: &str = "app.alive";
/// Written by the sidecar when the inputs are in place ([`Ready`]).
pub const READY: &str = "ready.json";
/// Written by the sidecar when it cannot go on ([`Failed`]).
pub const FAILED: &str = "failed.json";
/// Written by the wrapper when the command has ended ([`Done`]).
pub const DONE: &str = "done.json";
/// Written by the sidecar last, once the run is recorded ([`Outcome`]).
pub const RESULT: &str = "result.json";
/// The output bundle ids the sidecar writes, as a JSON object `{"REPO": "ID"}`, in the ids folder.
pub const OUTPUTS_JSON: &str = "outputs.json";
/// The run id the sidecar writes in the ids folder.
pub const RUN_ID_FILE: &str = "run-id";

/// Which side of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sidecar container (`datamon sidecar`).
    Sidecar,
    /// The application container's wrapper.
    App,
}

impl Side {
    /// Its heartbeat file.
    pub fn heartbeat_file(self) -> &'static str {
        match self {
            Side::Sidecar => HEARTBEAT_SIDECAR,
            Side::App => HEARTBEAT_APP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Sidecar => "the sidecar",
            Side::App => "the application",
        }
    }
}

/// The time limits of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How often each side rewrites its heartbeat (default 1 s).
    pub heartbeat: Duration,
    /// A side whose heartbeat has not changed for this long is gone (default 10 s).
    pub stale: Duration,
    /// How long to wait for the other side's first heartbeat (default 600 s: image pulls).
    pub start: Duration,
    /// How long the wrapper waits for the inputs (default 6 h).
    pub ready: Duration,
    /// How long the sidecar waits for the command to end (default 7 days).
    pub run: Duration,
    /// How long the wrapper waits for the upload and the record (default 6 h).
    pub finish: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat: Duration::from_secs(1),
            stale: Duration::from_secs(10),
            start: Duration::from_secs(600),
            ready: Duration::from_secs(6 * 3600),
            run: Duration::from_secs(7 * 24 * 3600),
            finish: Duration::from_secs(6 * 3600),
        }
    }
}

/// A heartbeat record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sidecar's session (empty in the wrapper's heartbeat before it has read [`Ready`]).
    pub session: String,
    /// The writer's process id (in its own container's namespace).
    pub pid: u32,
    /// Incremented at every beat.
    pub beat: u64,
    /// What the writer is doing (`starting`, `materializing`, `ready`, `uploading`, `running`...).
    pub state: String,
}

/// An input as the command finds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadyInput {
    /// The repo.
    pub repo: RepoName,
    /// The bundle.
    pub bundle: BundleId,
    /// Where it is (the link named in the configuration, else the materialized folder).
    pub path: PathBuf,
}

/// The sidecar's "ready": what the command needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    /// The sidecar's session.
    pub session: String,
    /// The run.
    pub run_id: RunId,
    /// The step's environment (`DATAMON_INPUT_*`, `DATAMON_OUTPUT_*`, `DATAMON_PARAM_*`...).
    pub env: Vec<(String, String)>,
    /// Argument substitutions: `{input:R}`, `{output:R}`, `{param:K}` and their values.
    pub substitutions: Vec<(String, String)>,
    /// The inputs.
    pub inputs: Vec<ReadyInput>,
}

impl Ready {
    /// `args` with every substitution applied.
    pub fn substitute(&self, args: &[String]) -> Vec<String> {
        args.iter()
            .map(|a| {
                self.substitutions
                    .iter()
                    .fold(a.clone(), |s, (from, to)| s.replace(from, to))
            })
            .collect()
    }
}

/// The sidecar's "failed": why it stopped before the command could run (or while it ran).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failed {
    /// The sidecar's session.
    pub session: String,
    /// What went wrong, as the sidecar reported it.
    pub reason: String,
}

/// The wrapper's "done".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Done {
    /// The session of the [`Ready`] the command ran with.
    pub session: String,
    /// The command's exit status (128 + the signal when a signal ended it).
    pub exit_code: i32,
    /// The command line that ran, for the run record (absent from older wrappers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// How a sidecar's run ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    /// The command succeeded; the outputs are uploaded and the run recorded.
    Succeeded,
    /// The command failed (or vanished): a failed run is recorded, nothing uploaded.
    Failed,
    /// The sidecar could not finish (an upload failed, it was stopped): see the reason.
    Error,
}

/// The sidecar's "result", written last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    /// The sidecar's session.
    pub session: String,
    /// How it ended.
    pub status: OutcomeStatus,
    /// The run (`None` when it was never planned).
    pub run_id: Option<RunId>,
    /// The command's exit status, when it ran.
    pub exit_code: Option<i32>,
    /// The output bundles, in the order of the outputs (empty unless succeeded).
    pub outputs: Vec<(RepoName, BundleId)>,
    /// What went wrong (status `error`, or a vanished command).
    pub reason: Option<String>,
}

/// The shared coordination folder.
#[derive(Debug, Clone)]
pub struct Coordination {
    dir: PathBuf,
    timeouts: Timeouts,
}

impl Coordination {
    /// The protocol in `dir` (created if missing) with these time limits.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder cannot be created.
    pub fn new(dir: impl Into<PathBuf>, timeouts: Timeouts) -> Result<Coordination> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Coordination { dir, timeouts })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The time limits.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Writes `name` atomically (a temporary file in the folder, renamed into place).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Task(e.to_string()))?;
        write_atomic(&self.dir.join(name), &bytes)
    }

    /// Reads `name`; `None` when it does not exist (or does not parse: a file of another
    /// version of the protocol is not this attempt's).
    ///
    /// # Errors
    /// [`Error::Io`] other than "not found".
    pub fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    /// Removes the files of an earlier attempt (the sidecar does this first).
    ///
    /// # Errors
    /// [`Error::Io`] when one exists and cannot be removed.
    pub fn clear(&self) -> Result<()> {
        for name in [READY, FAILED, DONE, RESULT, HEARTBEAT_SIDECAR] {
            let p = self.dir.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(p)(e)),
            }
        }
        Ok(())
    }

    /// Starts `side`'s heartbeat (the first beat is written before this returns); it stops
    /// when the returned guard is dropped. The guard sets the state and the session written.
    ///
    /// # Errors
    /// [`Error::Io`] when the first beat cannot be written.
    pub fn heartbeat(&self, side: Side, session: &str, state: &str) -> Result<HeartbeatGuard> {
        let shared = Arc::new(Mutex::new((session.to_owned(), state.to_owned())));
        let beat = Arc::new(AtomicU64::new(0));
        let write = {
            let (this, shared, beat) = (self.clone(), shared.clone(), beat.clone());
            move || {
                let (session, state) = shared.lock().expect("not poisoned").clone();
                let hb = Heartbeat {
                    session,
                    pid: std::process::id(),
                    beat: beat.fetch_add(1, Ordering::Relaxed) + 1,
                    state,
                };
                this.write(side.heartbeat_file(), &hb)
            }
        };
        write()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let every = self.timeouts.heartbeat;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                if let Err(e) = write() {
                    tracing::warn!("cannot write the heartbeat: {e}");
                }
            }
        });
        Ok(HeartbeatGuard { shared, stop })
    }

    /// Watches `side`'s heartbeat.
    pub fn watch(&self, side: Side) -> PeerWatch {
        PeerWatch {
            coord: self.clone(),
            side,
            started: Instant::now(),
            last: None,
        }
    }

    /// Waits until `check` returns something, polling every 100 ms (at most the heartbeat
    /// interval), while `peer` stays alive, for at most `limit`.
    async fn wait_for<T>(
        &self,
        peer: &mut PeerWatch,
        what: &str,
        limit: Duration,
        cancel: &CancellationToken,
        mut check: impl FnMut(&Coordination) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        let poll = self.timeouts.heartbeat.min(Duration::from_millis(100));
        loop {
            if let Some(v) = check(self)? {
                return Ok(v);
            }
            if cancel.is_cancelled() {
                return Err(Error::Cancelled {
                    what: format!("waiting for {what}"),
                });
            }
            peer.check()?;
            if Instant::now() >= deadline {
                return Err(Error::WaitTimeout {
                    what: what.to_owned(),
                    seconds: limit.as_secs(),
                });
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = cancel.cancelled() => {}
            }
        }
    }
}

/// Stops a heartbeat when dropped; sets what it says meanwhile.
#[derive(Debug)]
pub struct HeartbeatGuard {
    shared: Arc<Mutex<(String, String)>>,
    stop: CancellationToken,
}

impl HeartbeatGuard {
    /// Sets the state written at the next beats.
    pub fn set_state(&self, state: &str) {
        state.clone_into(&mut self.shared.lock().expect("not poisoned").1);
    }

    /// Sets the session written at the next beats.
    pub fn set_session(&self, session: &str) {
        session.clone_into(&mut self.shared.lock().expect("not poisoned").0);
    }
}

impl Drop for HeartbeatGuard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The liveness of the other side, judged by its heartbeat's counter on this side's clock.
#[derive(Debug)]
pub struct PeerWatch {
    coord: Coordination,
    side: Side,
    started: Instant,
    /// The last heartbeat seen and when it changed.
    last: Option<(Heartbeat, Instant)>,
}

impl PeerWatch {
    /// The last heartbeat seen.
    pub fn last(&self) -> Option<&Heartbeat> {
        self.last.as_ref().map(|(h, _)| h)
    }

    /// Reads the heartbeat; an error when the side is gone (or never started).
    ///
    /// # Errors
    /// [`Error::PeerLost`]; [`Error::Io`].
    pub fn check(&mut self) -> Result<()> {
        let t = self.coord.timeouts;
        let now = Instant::now();
        if let Some(hb) = self.coord.read::<Heartbeat>(self.side.heartbeat_file())? {
            let changed = self.last.as_ref().is_none_or(|(h, _)| *h != hb);
            if changed {
                self.last = Some((hb, now));
            }
        }
        match &self.last {
            None if now.duration_since(self.started) > t.start => Err(Error::PeerLost {
                peer: self.side.name().to_owned(),
                detail: format!(
                    "its heartbeat did not appear within {} s",
                    t.start.as_secs()
                ),
            }),
            Some((hb, at)) if now.duration_since(*at) > t.stale => Err(Error::PeerLost {
                peer: self.side.name().to_owned(),
                detail: format!(
                    "its heartbeat stopped {} s ago (last state: {})",
                    now.duration_since(*at).as_secs(),
                    hb.state
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Resolves when the side is gone (checking every heartbeat interval); for watching the
    /// other side while something else runs.
    pub async fn gone(&mut self) -> Error {
        loop {
            if let Err(e) = self.check() {
                return e;
            }
            tokio::time::sleep(self.coord.timeouts.heartbeat).await;
        }
    }
}

/// What the sidecar is asked to do.
#[derive(Debug, Clone, Default)]
pub struct SidecarSpec {
    /// The run (its `workdir` should be on the shared volume, so the application sees it).
    pub run: RunSpec,
    /// For each input of `run.inputs`, in order: a path where a symlink to it is made.
    pub links: Vec<Option<PathBuf>>,
    /// Where the output ids go: `<dir>/<repo>` (the id alone, for Argo output parameters),
    /// `<dir>/run-id`, `<dir>/outputs.json`.
    pub ids_dir: Option<PathBuf>,
}

/// How a sidecar's work ended, as [`run_sidecar`] returns it.
#[derive(Debug, Clone)]
pub struct SidecarReport {
    /// What was written to [`RESULT`].
    pub outcome: Outcome,
}

/// Runs the sidecar side of the protocol (see the [module](self) documentation): plans the run,
/// materializes the inputs (mounted through `mounter` when given, else downloaded), signals
/// ready, waits for the command, then uploads and records (or records the failure), writes the
/// ids, unmounts, and writes [`RESULT`].
///
/// Returns the outcome when the command ran and its end was recorded (succeeded or failed).
///
/// # Errors
/// The planning, materializing, upload or store error (after [`FAILED`] or [`RESULT`] says
/// so); [`Error::PeerLost`] or [`Error::WaitTimeout`] when the application vanished or never
/// came (a failed run is recorded); [`Error::Cancelled`] when `cancel` fires (a failed run is
/// recorded if the run was planned, and [`FAILED`] tells the wrapper).
pub async fn run_sidecar(
    dm: &Datamon,
    coord: &Coordination,
    spec: SidecarSpec,
    mounter: Option<&dyn InputMounter>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<SidecarReport> {
    coord.clear()?;
    let session = RunId::generate().to_string();
    let hb = coord.heartbeat(Side::Sidecar, &session, "starting")?;
    let fail_early = |e: Error| -> Error {
        let reason = chain(&e);
        if let Err(w) = coord.write(
            FAILED,
            &Failed {
                session: session.clone(),
                reason,
            },
        ) {
            tracing::warn!("cannot tell the application: {w}");
        }
        e
    };
    let params = spec.run.params.clone();
    let mut plan = match dm.plan_run(spec.run).await {
        Ok(p) => p,
        Err(e) => return Err(fail_early(e)),
    };
    let run_id = plan.id();
    hb.set_state("materializing");
    let materialized = match mounter {
        Some(m) => plan.materialize_with(m, progress, cancel).await.map(|_| ()),
        None => plan.materialize(progress, cancel).await.map(|_| ()),
    };
    let links = match materialized.and_then(|()| make_links(&plan, &spec.links)) {
        Ok(l) => l,
        Err(e) => {
            let e = fail_early(e);
            record_failure(plan, 1).await;
            return Err(e);
        }
    };
    let mut substitutions: Vec<(String, String)> = plan
        .inputs_ready()
        .iter()
        .zip(&links)
        .map(|(i, l)| {
            let p = l.as_ref().unwrap_or(&i.path);
            (format!("{{input:{}}}", i.key), p.display().to_string())
        })
        .collect();
    for o in plan.outputs() {
        substitutions.push((
            format!("{{output:{}}}", o.repo),
            o.dir.display().to_string(),
        ));
    }
    for (k, v) in &params {
        substitutions.push((format!("{{param:{k}}}"), v.clone()));
    }
    let inputs = plan
        .inputs_ready()
        .iter()
        .zip(&links)
        .map(|(i, l)| ReadyInput {
            repo: i.repo.clone(),
            bundle: i.bundle,
            path: l.clone().unwrap_or_else(|| i.path.clone()),
        })
        .collect();
    let ready = Ready {
        session: session.clone(),
        run_id,
        env: plan.environment(),
        substitutions,
        inputs,
    };
    if let Err(e) = coord.write(READY, &ready) {
        let e = fail_early(e);
        record_failure(plan, 1).await;
        return Err(e);
    }
    hb.set_state("ready");

    let mut app = coord.watch(Side::App);
    let done = coord
        .wait_for(
            &mut app,
            "the application's exit status",
            coord.timeouts.run,
            cancel,
            |c| Ok(c.read::<Done>(DONE)?.filter(|d| d.session == session)),
        )
        .await;
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            // Vanished, never came, too slow, or we are stopped: a failed run, nothing uploaded.
            let code = if e.kind() == ErrorKind::Cancelled {
                143
            } else {
                137
            };
            let reason = chain(&e);
            fail_early(Error::InvalidInput(reason.clone()));
            record_failure(plan, code).await;
            let outcome = Outcome {
                session: session.clone(),
                status: OutcomeStatus::Failed,
                run_id: Some(run_id),
                exit_code: None,
                outputs: Vec::new(),
                reason: Some(reason),
            };
            let _ = coord.write(RESULT, &outcome);
            return Err(e);
        }
    };

    // The wrapper knows the command line; the sidecar's spec does not.
    if !done.command.is_empty() {
        plan.set_command(done.command.clone());
    }
    if done.exit_code != 0 {
        hb.set_state("recording");
        let r = plan.fail(done.exit_code).await;
        let outcome = Outcome {
            session: session.clone(),
            status: if r.is_ok() {
                OutcomeStatus::Failed
            } else {
                OutcomeStatus::Error
            },
            run_id: Some(run_id),
            exit_code: Some(done.exit_code),
            outputs: Vec::new(),
            reason: r.as_ref().err().map(chain),
        };
        coord.write(RESULT, &outcome)?;
        r?;
        return Ok(SidecarReport { outcome });
    }

    hb.set_state("uploading");
    // `succeed` consumes the plan: inputs are unmounted when it returns.
    match plan.succeed(progress, cancel).await {
        Ok(result) => {
            let outputs: Vec<(RepoName, BundleId)> = result
                .run
                .outputs
                .iter()
                .map(|o| (o.repo.clone(), o.bundle))
                .collect();
            if let Some(dir) = &spec.ids_dir {
                if let Err(e) = write_ids(dir, run_id, &outputs) {
                    let outcome = Outcome {
                        session: session.clone(),
                        status: OutcomeStatus::Error,
                        run_id: Some(run_id),
                        exit_code: Some(0),
                        outputs,
                        reason: Some(chain(&e)),
                    };
                    coord.write(RESULT, &outcome)?;
                    return Err(e);
                }
            }
            let outcome = Outcome {
                session: session.clone(),
                status: OutcomeStatus::Succeeded,
                run_id: Some(run_id),
                exit_code: Some(0),
                outputs,
                reason: None,
            };
            coord.write(RESULT, &outcome)?;
            Ok(SidecarReport { outcome })
        }
        Err(e) => {
            let outcome = Outcome {
                session: session.clone(),
                status: OutcomeStatus::Error,
                run_id: Some(run_id),
                exit_code: Some(0),
                outputs: Vec::new(),
                reason: Some(chain(&e)),
            };
            coord.write(RESULT, &outcome)?;
            Err(e)
        }
    }
}

/// Tells a waiting wrapper that the sidecar cannot start at all (the store cannot be opened,
/// the configuration is wrong): clears the folder, writes one heartbeat of a new session and
/// [`FAILED`] with `reason`, so [`wait_ready`] returns the reason at once.
///
/// # Errors
/// [`Error::Io`].
pub fn report_failure(coord: &Coordination, reason: &str) -> Result<()> {
    coord.clear()?;
    let session = RunId::generate().to_string();
    coord.write(
        FAILED,
        &Failed {
            session: session.clone(),
            reason: reason.to_owned(),
        },
    )?;
    coord.write(
        HEARTBEAT_SIDECAR,
        &Heartbeat {
            session,
            pid: std::process::id(),
            beat: 1,
            state: "failed".into(),
        },
    )
}

/// Records a failed run, logging (not returning) a store error: the caller reports its own.
async fn record_failure(plan: crate::RunPlan, code: i32) {
    if let Err(e) = plan.fail(code).await {
        tracing::warn!("cannot record the failed run: {e}");
    }
}

/// Makes the configured symlinks to the materialized inputs; returns where each input is.
fn make_links(plan: &crate::RunPlan, links: &[Option<PathBuf>]) -> Result<Vec<Option<PathBuf>>> {
    let mut out = Vec::new();
    for (i, input) in plan.inputs_ready().iter().enumerate() {
        let Some(link) = links.get(i).cloned().flatten() else {
            out.push(None);
            continue;
        };
        let link = std::path::absolute(&link).map_err(Error::io(&link))?;
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::remove_file(&link).map_err(Error::io(&link))?;
            }
            Ok(_) => {
                return Err(Error::InvalidInput(format!(
                    "input {}: {} exists already; name a path that does not exist, where a link to the input is made",
                    input.repo,
                    link.display()
                )))
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&input.path, &link).map_err(Error::io(&link))?;
        out.push(Some(link));
    }
    Ok(out)
}

/// Writes `<dir>/<repo>` (each output's id), `<dir>/run-id` and `<dir>/outputs.json`.
fn write_ids(dir: &Path, run: RunId, outputs: &[(RepoName, BundleId)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let mut all = BTreeMap::new();
    for (repo, id) in outputs {
        write_atomic(&dir.join(repo.as_str()), id.to_string().as_bytes())?;
        all.insert(repo.to_string(), id.to_string());
    }
    write_atomic(&dir.join(RUN_ID_FILE), run.to_string().as_bytes())?;
    let json = serde_json::to_vec(&all).map_err(|e| Error::Task(e.to_string()))?;
    write_atomic(&dir.join(OUTPUTS_JSON), &json)
}

/// The wrapper's first step: waits for the sidecar's [`READY`] (returned) or [`FAILED`] (an
/// [`Error::SidecarFailed`] with its reason), while the sidecar's heartbeat stays alive, for
/// at most [`Timeouts::ready`].
///
/// # Errors
/// [`Error::SidecarFailed`], [`Error::PeerLost`], [`Error::WaitTimeout`],
/// [`Error::Cancelled`].
pub async fn wait_ready(coord: &Coordination, cancel: &CancellationToken) -> Result<Ready> {
    let mut sidecar = coord.watch(Side::Sidecar);
    coord
        .wait_for(
            &mut sidecar,
            "the sidecar's inputs",
            coord.timeouts.ready,
            cancel,
            |c| {
                let Some(hb) = c.read::<Heartbeat>(HEARTBEAT_SIDECAR)? else {
                    return Ok(None);
                };
                if let Some(f) = c
                    .read::<Failed>(FAILED)?
                    .filter(|f| f.session == hb.session)
                {
                    return Err(Error::SidecarFailed { reason: f.reason });
                }
                Ok(c.read::<Ready>(READY)?.filter(|r| r.session == hb.session))
            },
        )
        .await
}

/// The wrapper's "done": tells the sidecar how the command `argv` ended.
///
/// # Errors
/// [`Error::Io`].
pub fn write_done(
    coord: &Coordination,
    ready: &Ready,
    argv: &[String],
    exit_code: i32,
) -> Result<()> {
    coord.write(
        DONE,
        &Done {
            session: ready.session.clone(),
            exit_code,
            command: argv.to_vec(),
        },
    )
}

/// The wrapper's last step: waits for the sidecar's [`RESULT`], while its heartbeat stays
/// alive, for at most [`Timeouts::finish`].
///
/// # Errors
/// [`Error::PeerLost`], [`Error::WaitTimeout`], [`Error::Cancelled`].
pub async fn wait_result(
    coord: &Coordination,
    ready: &Ready,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let mut sidecar = coord.watch(Side::Sidecar);
    coord
        .wait_for(
            &mut sidecar,
            "the sidecar's upload",
            coord.timeouts.finish,
            cancel,
            |c| {
                Ok(c.read::<Outcome>(RESULT)?
                    .filter(|o| o.session == ready.session))
            },
        )
        .await
}

/// Watches the sidecar while the command runs: resolves with an error when it is gone or says
/// it failed (it was stopped).
pub async fn sidecar_gone(coord: &Coordination, ready: &Ready) -> Error {
    let mut sidecar = coord.watch(Side::Sidecar);
    loop {
        match coord.read::<Failed>(FAILED) {
            Ok(Some(f)) if f.session == ready.session => {
                return Error::SidecarFailed { reason: f.reason }
            }
            Err(e) => return e,
            _ => {}
        }
        if let Err(e) = sidecar.check() {
            return e;
        }
        tokio::time::sleep(coord.timeouts.heartbeat).await;
    }
}

/// How [`localize`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalizeOptions {
    /// Attempts per input beyond the first (default 3).
    pub retries: u32,
    /// The wait before the first retry, doubled at each retry (default 1 s).
    pub backoff: Duration,
}

impl Default for LocalizeOptions {
    fn default() -> Self {
        LocalizeOptions {
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

/// One localized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localized {
    /// The repo.
    pub repo: RepoName,
    /// The bundle.
    pub bundle: BundleId,
    /// The folder it went to.
    pub dir: PathBuf,
    /// Files written.
    pub files: u64,
    /// Attempts it took.
    pub attempts: u32,
}

/// The init-container step: downloads each input (a whole bundle, or one `:PATH` of it) into
/// its folder, which must be empty or absent. Every selector is resolved before anything is
/// downloaded; every chunk is verified as it is read; a failed attempt (a transient store error,
/// data that does not verify) is cleaned up and retried with backoff. When an input cannot be
/// localized, every folder this call filled is emptied again, so a job never starts on partial
/// data.
///
/// # Errors
/// The `*NotFound` error of a selector; [`Error::DestinationNotEmpty`]; the last attempt's error
/// ([`Error::Corrupt`], a store error) with the input named; [`Error::Cancelled`].
pub async fn localize(
    dm: &Datamon,
    items: &[(crate::InputSpec, PathBuf)],
    opts: LocalizeOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Vec<Localized>> {
    let specs: Vec<crate::InputSpec> = items.iter().map(|(s, _)| s.clone()).collect();
    let resolved = dm.resolve_inputs(&specs).await?;
    for (_, dir) in items {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::DestinationNotEmpty { path: dir.clone() });
        }
    }
    let mut done: Vec<Localized> = Vec::new();
    for (input, (spec, dir)) in resolved.iter().zip(items) {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            if cancel.is_cancelled() {
                break Err(Error::cancelled("localizing the inputs"));
            }
            let fut = async {
                match &input.path {
                    Some(p) => {
                        dm.download_file(&input.repo, &input.bundle, p, dir, true, progress)
                            .await
                    }
                    None => {
                        let o = crate::DownloadOptions {
                            name_filter: None,
                            force: true,
                        };
                        dm.download(&input.repo, &input.bundle, dir, &o, progress)
                            .await
                    }
                }
            };
            let r = tokio::select! {
                r = fut => r,
                () = cancel.cancelled() => Err(Error::cancelled("localizing the inputs")),
            };
            match r {
                Ok(report) => break Ok(report),
                Err(e) => {
                    empty_dir(dir);
                    let retry = matches!(
                        e.kind(),
                        ErrorKind::Transient | ErrorKind::Corrupt | ErrorKind::Io
                    );
                    if !retry || attempt > opts.retries {
                        break Err(e);
                    }
                    let wait = opts.backoff * 2u32.saturating_pow(attempt - 1);
                    tracing::warn!(
                        "input {spec}: attempt {attempt} failed ({e}); retrying in {wait:?}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            }
        };
        match result {
            Ok(report) => done.push(Localized {
                repo: input.repo.clone(),
                bundle: input.bundle,
                dir: dir.clone(),
                files: report.files,
                attempts: attempt,
            }),
            Err(e) => {
                for d in &done {
                    empty_dir(&d.dir);
                }
                empty_dir(dir);
                return Err(if e.kind() == ErrorKind::Cancelled {
                    e
                } else {
                    e.context(format!(
                        "cannot localize input {spec} into {} after {attempt} attempt(s); the folder was left empty",
                        dir.display()
                    ))
                });
            }
        }
    }
    Ok(done)
}

/// Removes everything inside `dir` (which [`localize`] found empty), logging failures.
fn empty_dir(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(err) = r {
            tracing::warn!("cannot remove {}: {err}", p.display());
        }
    }
}

/// An error and its causes, `: `-separated.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Writes `path` whole: a temporary file beside it, then a rename.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".datamon-")
        .tempfile_in(dir)
        .map_err(Error::io(dir))?;
    tmp.write_all(bytes).map_err(Error::io(tmp.path()))?;
    // Readable by the other container, which may run as another user.
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(Error::io(tmp.path()))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Timeouts {
        Timeouts {
            heartbeat: Duration::from_millis(50),
            stale: Duration::from_millis(400),
            start: Duration::from_millis(600),
            ready: Duration::from_secs(5),
            run: Duration::from_secs(5),
            finish: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_peer_that_never_starts_or_stops_beating_is_lost() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Coordination::new(dir.path(), quick()).expect("coord");
        let t0 = Instant::now();
        let e = wait_ready(&c, &CancellationToken::new())
            .await
            .expect_err("no sidecar");
        assert!(matches!(e, Error::PeerLost { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));

        let hb = c.heartbeat(Side::Sidecar, "s1", "starting").expect("beat");
        let mut w = c.watch(Side::Sidecar);
        tokio::time::sleep(Duration::from_millis(600)).await;
        w.check().expect("alive while beating");
        drop(hb);
        let t0 = Instant::now();
        let e = w.gone().await;
        assert!(matches!(e, Error::PeerLost { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn ready_and_failed_of_another_session_are_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Coordination::new(dir.path(), quick()).expect("coord");
        c.write(
            FAILED,
            &Failed {
                session: "old".into(),
                reason: "old failure".into(),
            },
        )
        .expect("write");
        let _hb = c.heartbeat(Side::Sidecar, "new", "ready").expect("beat");
        let c2 = c.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.write(
                FAILED,
                &Failed {
                    session: "new".into(),
                    reason: "bad repo".into(),
                },
            )
            .expect("write");
        });
        let e = wait_ready(&c, &CancellationToken::new())
            .await
            .expect_err("failed");
        writer.await.expect("writer");
        assert!(e.to_string().contains("bad repo"), "{e}");
    }
}
