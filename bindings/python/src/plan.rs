//! `Plan`: a run of a pipeline step in this process, over `datamon::exec` (plan, materialize,
//! then succeed or fail). The Python context manager `Datamon.run` drives it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use datamon::{CancellationToken, Datamon, InputSpec, NoProgress, OutputSpec, RunPlan, RunSpec};
use pyo3::prelude::*;
use serde::Serialize;

use crate::bridge::block;
use crate::errors::invalid;
use crate::store::parse;

/// The optional parts of a run.
pub(crate) struct Extra {
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) message: Option<String>,
    pub(crate) workdir: Option<PathBuf>,
    pub(crate) command: Vec<String>,
}

/// A planned run; finished once (succeed or fail).
#[pyclass(frozen, module = "datamon._native")]
pub(crate) struct Plan {
    id: String,
    plan: Mutex<Option<RunPlan>>,
}

/// Plans a run: every input resolved, every output checked; nothing written.
pub(crate) fn plan(
    py: Python<'_>,
    dm: &Datamon,
    step: String,
    inputs: Vec<String>,
    outputs: Vec<(String, PathBuf, Option<String>)>,
    extra: Extra,
) -> PyResult<Plan> {
    let inputs: Vec<InputSpec> = inputs
        .iter()
        .map(|s| parse(py, s))
        .collect::<PyResult<_>>()?;
    let outputs: Vec<OutputSpec> = outputs
        .into_iter()
        .map(|(repo, dir, target)| {
            Ok(OutputSpec {
                repo: parse(py, &repo)?,
                dir,
                target,
            })
        })
        .collect::<PyResult<_>>()?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let image = std::env::var("DATAMON_IMAGE")
        .ok()
        .filter(|s| !s.is_empty());
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok();
    let spec = RunSpec {
        step,
        inputs,
        outputs,
        params: extra.params,
        meta: extra.meta,
        message: extra.message,
        workdir: extra.workdir,
        metrics_file: None,
        command: extra.command,
        code: datamon::exec::capture_code_version(&cwd, image),
        host: datamon::exec::capture_host(),
        user: datamon::exec::capture_user(login),
    };
    let plan = block(py, None, None, || dm.plan_run(spec))?;
    Ok(Plan {
        id: plan.id().to_string(),
        plan: Mutex::new(Some(plan)),
    })
}

impl Plan {
    fn take(&self, py: Python<'_>) -> PyResult<RunPlan> {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| invalid(py, format!("run {} is finished already", self.id)))
    }

    fn put(&self, plan: RunPlan) {
        *self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(plan);
    }
}

fn json<T: Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot encode: {e}")))
}

#[pymethods]
impl Plan {
    /// The run id.
    #[getter]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// Downloads the inputs into the work folder; returns `(repo, bundle, key, path)` per input.
    /// Interrupted, it records nothing and the plan is gone.
    fn materialize(&self, py: Python<'_>) -> PyResult<Vec<(String, String, String, PathBuf)>> {
        let mut plan = self.take(py)?;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let (plan, ready) = block(py, Some(&cancel), None, move || async move {
            let r = plan
                .materialize(&NoProgress, &token)
                .await
                .map(<[_]>::to_vec);
            Ok((plan, r))
        })?;
        let ready = match ready {
            Ok(r) => r,
            Err(e) => return Err(crate::errors::to_py(py, &e)),
        };
        self.put(plan);
        Ok(ready
            .into_iter()
            .map(|m| (m.repo.to_string(), m.bundle.to_string(), m.key, m.path))
            .collect())
    }

    /// The work folder (after materialize).
    #[getter]
    fn work_dir(&self) -> Option<PathBuf> {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|p| p.work_dir().map(PathBuf::from))
    }

    /// Where the metrics (a JSON object) are read from when the run ends.
    #[getter]
    fn metrics_file(&self) -> Option<PathBuf> {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(RunPlan::metrics_file)
    }

    /// Uploads every output and records the run as succeeded; returns the run as JSON.
    fn succeed(&self, py: Python<'_>) -> PyResult<String> {
        let plan = self.take(py)?;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let result = block(py, Some(&cancel), None, move || async move {
            plan.succeed(&NoProgress, &token).await
        })?;
        json(&result.run)
    }

    /// Records the run as failed with `exit_code`; uploads nothing. Returns the run as JSON.
    fn fail(&self, py: Python<'_>, exit_code: i32) -> PyResult<String> {
        let plan = self.take(py)?;
        let run = block(py, None, None, || plan.fail(exit_code))?;
        json(&run)
    }

    /// Drops the plan without recording anything (its temporary work folder is removed).
    fn abandon(&self) {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}
