//! `Store`: an opened datamon store, every library call as a method. Records are returned as
//! JSON text; the Python layer builds its objects from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use datamon::vfs::{Vfs, VfsOptions, ROOT_INODE};
use datamon::{
    BranchName, BundleId, BundleQuery, CancellationToken, Datamon, DownloadOptions, LabelName,
    LineageDirection, LineageOptions, NoProgress, OpenOptions, RepoName, RunId, RunQuery,
    UploadContext, UploadOptions,
};
use pyo3::prelude::*;
use serde::Serialize;

use crate::bridge::{block, detached, PyProgress};
use crate::errors::{invalid, to_py};
use crate::file::File;

/// How many bundles keep an open virtual filesystem (each holds the store's index).
const OPEN_BUNDLES: usize = 8;

/// An opened store.
#[pyclass(frozen, module = "datamon._native")]
pub(crate) struct Store {
    dm: Datamon,
    url: String,
    chunk_cache: PathBuf,
    /// Recently used bundles' filesystems, newest last.
    vfs: Mutex<Vec<((RepoName, BundleId), Vfs)>>,
}

/// Parses a name or id, raising `InvalidInput`.
pub(crate) fn parse<T>(py: Python<'_>, s: &str) -> PyResult<T>
where
    T: FromStr,
    T::Err: Into<datamon::Error>,
{
    s.parse::<T>().map_err(|e| to_py(py, &e.into()))
}

/// A record as JSON text.
fn json<T: Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot encode: {e}")))
}

/// A time given as RFC 3339 text.
fn time(py: Python<'_>, s: Option<&str>) -> PyResult<Option<chrono::DateTime<chrono::Utc>>> {
    s.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| invalid(py, format!("time {s:?}: {e}; expected RFC 3339")))
    })
    .transpose()
}

fn progress_of(cb: Option<Py<PyAny>>) -> Option<PyProgress> {
    cb.map(PyProgress::new)
}

impl Store {
    /// The virtual filesystem of a bundle, opened once and kept for the next reads.
    fn vfs(&self, py: Python<'_>, repo: &RepoName, id: &BundleId) -> PyResult<Vfs> {
        let key = (repo.clone(), *id);
        {
            let mut open = self
                .vfs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = open.iter().position(|(k, _)| *k == key) {
                let e = open.remove(i);
                let v = e.1.clone();
                open.push(e);
                return Ok(v);
            }
        }
        let handle = crate::bridge::runtime()?.handle().clone();
        let opts = VfsOptions {
            cache_dir: Some(self.chunk_cache.clone()),
            ..VfsOptions::default()
        };
        let v = block(py, None, None, || self.dm.vfs(repo, id, opts, handle))?;
        let mut open = self
            .vfs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.push((key, v.clone()));
        if open.len() > OPEN_BUNDLES {
            open.remove(0);
        }
        Ok(v)
    }
}

#[pymethods]
impl Store {
    /// Opens a store (see `datamon.open`).
    #[staticmethod]
    #[pyo3(signature = (url=None, context=None, home=None, author=None, options=None, concurrency=None))]
    fn open(
        py: Python<'_>,
        url: Option<&str>,
        context: Option<&str>,
        home: Option<&str>,
        author: Option<&str>,
        options: Option<Vec<(String, String)>>,
        concurrency: Option<usize>,
    ) -> PyResult<Store> {
        let t = crate::config::target(url, context, home, author, options.unwrap_or_default())
            .map_err(|m| invalid(py, m))?;
        let opts = OpenOptions {
            author: Some(t.author.clone()),
            cache_dir: Some(t.cache_dir.clone()),
            store_options: t.options.clone(),
            concurrency,
            unlock: None,
        };
        let dm = match &t.replica {
            Some(r) => block(py, None, None, || {
                Datamon::open_with_replica(&t.url, r, opts)
            })?,
            None => block(py, None, None, || Datamon::open(&t.url, opts))?,
        };
        Ok(Store {
            dm,
            url: t.url,
            chunk_cache: t.cache_dir.join("chunks"),
            vfs: Mutex::new(Vec::new()),
        })
    }

    /// The store's URL.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// Who is acting.
    #[getter]
    fn author(&self) -> String {
        self.dm.author().to_owned()
    }

    fn list_repos(&self, py: Python<'_>) -> PyResult<String> {
        json(&block(py, None, None, || self.dm.list_repos())?)
    }

    fn get_repo(&self, py: Python<'_>, repo: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        json(&block(py, None, None, || self.dm.get_repo(&repo))?)
    }

    fn create_repo(&self, py: Python<'_>, repo: &str, description: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        json(&block(py, None, None, || {
            self.dm.create_repo(&repo, description)
        })?)
    }

    #[pyo3(signature = (repo, path, message, label=None, branch=None, meta=None, files=None, skip_on_error=false, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn upload(
        &self,
        py: Python<'_>,
        repo: &str,
        path: PathBuf,
        message: String,
        label: Option<&str>,
        branch: Option<&str>,
        meta: Option<BTreeMap<String, String>>,
        files: Option<Vec<String>>,
        skip_on_error: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let ctx = UploadContext {
            repo: parse(py, repo)?,
            path,
            message,
        };
        let cancel = CancellationToken::new();
        let opts = UploadOptions {
            label: label.map(|l| parse::<LabelName>(py, l)).transpose()?,
            branch: branch.map(|b| parse::<BranchName>(py, b)).transpose()?,
            files,
            skip_on_error,
            meta: meta.unwrap_or_default(),
            cancel: cancel.clone(),
        };
        let progress = progress_of(progress);
        let dm = &self.dm;
        let p = progress.as_ref();
        let report = block(py, Some(&cancel), p, move || async move {
            match p {
                Some(p) => dm.upload(ctx, opts, p).await,
                None => dm.upload(ctx, opts, &NoProgress).await,
            }
        })?;
        #[derive(Serialize)]
        struct View<'a> {
            bundle: &'a datamon::Bundle,
            skipped: &'a [(String, String)],
            unchanged_files: u64,
        }
        json(&View {
            bundle: &report.bundle,
            skipped: &report.skipped,
            unchanged_files: report.unchanged_files,
        })
    }

    /// Bundles of a repo, oldest first, filtered by metadata and time.
    #[pyo3(signature = (repo, meta=None, since=None))]
    fn list_bundles(
        &self,
        py: Python<'_>,
        repo: &str,
        meta: Option<Vec<(String, String)>>,
        since: Option<&str>,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let query = BundleQuery {
            meta: meta.unwrap_or_default(),
            since: time(py, since)?,
        };
        let bundles = if query.meta.is_empty() && query.since.is_none() {
            block(py, None, None, || self.dm.list_bundles(&repo))?
        } else {
            block(py, None, None, || self.dm.find_bundles(&repo, &query))?
        };
        json(&bundles)
    }

    /// The bundle id a selector names (`None`: the latest bundle).
    #[pyo3(signature = (repo, selector=None))]
    fn resolve(&self, py: Python<'_>, repo: &str, selector: Option<&str>) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        Ok(block(py, None, None, || self.dm.resolve_text(&repo, selector))?.to_string())
    }

    fn get_bundle(&self, py: Python<'_>, repo: &str, id: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        json(&block(py, None, None, || self.dm.get_bundle(&repo, &id))?)
    }

    /// Files and symlinks of a bundle under `prefix`, sorted by path, as tuples
    /// `(path, kind, size, mode, mtime_ns, hash)`.
    #[pyo3(signature = (repo, id, prefix=None))]
    #[allow(clippy::type_complexity)]
    fn list_files(
        &self,
        py: Python<'_>,
        repo: &str,
        id: &str,
        prefix: Option<&str>,
    ) -> PyResult<Vec<(String, &'static str, u64, u32, i64, Option<String>)>> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        let files = block(py, None, None, || self.dm.list_files(&repo, &id))?;
        let prefix = prefix.unwrap_or("").trim_start_matches('/');
        Ok(files
            .into_iter()
            .filter(|f| f.path.starts_with(prefix))
            .map(|f| {
                let kind = match f.kind {
                    datamon::types::EntryKind::File => "file",
                    datamon::types::EntryKind::Symlink => "symlink",
                    _ => "directory",
                };
                (
                    f.path,
                    kind,
                    f.size,
                    f.mode,
                    f.mtime_ns,
                    f.hash.map(|h| h.to_string()),
                )
            })
            .collect())
    }

    /// Downloads a bundle (or, with `name_filter`, the files whose path matches that regex).
    #[pyo3(signature = (repo, id, dest, name_filter=None, force=false, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn download(
        &self,
        py: Python<'_>,
        repo: &str,
        id: &str,
        dest: PathBuf,
        name_filter: Option<&str>,
        force: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(u64, u64)> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        let name_filter = name_filter
            .map(|f| {
                regex::Regex::new(f).map_err(|e| invalid(py, format!("name filter {f:?}: {e}")))
            })
            .transpose()?;
        let opts = DownloadOptions { name_filter, force };
        let progress = progress_of(progress);
        let p = progress.as_ref();
        let dm = &self.dm;
        let r = block(py, None, p, || async {
            match p {
                Some(p) => dm.download(&repo, &id, &dest, &opts, p).await,
                None => dm.download(&repo, &id, &dest, &opts, &NoProgress).await,
            }
        })?;
        Ok((r.files, r.bytes))
    }

    /// Downloads one file or directory of a bundle to `dest/<path>`.
    #[pyo3(signature = (repo, id, path, dest, force=false))]
    fn download_file(
        &self,
        py: Python<'_>,
        repo: &str,
        id: &str,
        path: &str,
        dest: PathBuf,
        force: bool,
    ) -> PyResult<(u64, u64)> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        let r = block(py, None, None, || {
            self.dm
                .download_file(&repo, &id, path, &dest, force, &NoProgress)
        })?;
        Ok((r.files, r.bytes))
    }

    /// Changes from bundle `a` to bundle `b`, as `(kind, path)` with kind `A`, `D` or `M`.
    fn diff_bundles(
        &self,
        py: Python<'_>,
        repo: &str,
        a: &str,
        b: &str,
    ) -> PyResult<Vec<(String, String)>> {
        let repo: RepoName = parse(py, repo)?;
        let a: BundleId = parse(py, a)?;
        let b: BundleId = parse(py, b)?;
        let changes = block(py, None, None, || self.dm.diff_bundles(&repo, &a, &b))?;
        Ok(changes.into_iter().map(change).collect())
    }

    /// Changes from bundle `id` to the local folder `dir`.
    fn diff_dir(
        &self,
        py: Python<'_>,
        repo: &str,
        id: &str,
        dir: PathBuf,
    ) -> PyResult<Vec<(String, String)>> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        let changes = block(py, None, None, || self.dm.diff_dir(&repo, &id, &dir))?;
        Ok(changes.into_iter().map(change).collect())
    }

    /// Opens a file of a bundle for reading through the virtual filesystem.
    fn open_file(&self, py: Python<'_>, repo: &str, id: &str, path: &str) -> PyResult<File> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        let vfs = self.vfs(py, &repo, &id)?;
        let clean: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let repo_name = repo.to_string();
        let not_found = move || datamon::Error::PathNotInBundle {
            repo: repo_name,
            id,
            path: path.to_owned(),
        };
        let v = vfs.clone();
        let (fh, size) = detached(py, move || {
            let mut looked = Vec::new();
            let mut at = ROOT_INODE;
            let mut found = None;
            for c in &clean {
                match v.lookup_blocking(at, c) {
                    Ok(Some(a)) => {
                        looked.push(a.ino);
                        at = a.ino;
                        found = Some(a);
                    }
                    Ok(None) => {
                        found = None;
                        break;
                    }
                    Err(datamon::Error::Vfs { .. }) => {
                        found = None;
                        break;
                    }
                    Err(e) => {
                        forget_all(&v, &looked);
                        return Err(e);
                    }
                }
            }
            let r = match found {
                Some(a) if a.kind == datamon::types::EntryKind::File => {
                    v.open_blocking(a.ino).map(|fh| (fh, a.size))
                }
                Some(_) => Err(datamon::Error::InvalidInput(format!(
                    "{path:?} in bundle {id} of repo {:?} is not a file",
                    repo.as_str()
                ))),
                None if clean.is_empty() => Err(datamon::Error::InvalidInput(format!(
                    "no path given in bundle {id} of repo {:?}",
                    repo.as_str()
                ))),
                None => Err(not_found()),
            };
            forget_all(&v, &looked);
            r
        })?;
        Ok(File::new(vfs, fh, size, path.to_owned()))
    }

    fn get_label(&self, py: Python<'_>, repo: &str, label: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let label: LabelName = parse(py, label)?;
        json(&block(py, None, None, || self.dm.get_label(&repo, &label))?)
    }

    /// Points a label at a bundle; with `guard`, only if it points at `expect` now (`None`:
    /// only if it does not exist).
    #[pyo3(signature = (repo, label, bundle, guard=false, expect=None))]
    fn set_label(
        &self,
        py: Python<'_>,
        repo: &str,
        label: &str,
        bundle: &str,
        guard: bool,
        expect: Option<&str>,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let label: LabelName = parse(py, label)?;
        let bundle: BundleId = parse(py, bundle)?;
        let expect = expectation(py, guard, expect)?;
        json(&block(py, None, None, || {
            self.dm.set_label(&repo, &label, &bundle, expect)
        })?)
    }

    fn label_history(&self, py: Python<'_>, repo: &str, label: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let label: LabelName = parse(py, label)?;
        json(&block(py, None, None, || {
            self.dm.label_history(&repo, &label)
        })?)
    }

    fn list_labels(&self, py: Python<'_>, repo: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let labels = block(py, None, None, || self.dm.list_labels(&repo))?;
        let named: BTreeMap<String, datamon::LabelRecord> = labels
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect();
        json(&named)
    }

    /// The head of a branch (`None` when it has none or does not exist).
    fn branch_head(&self, py: Python<'_>, repo: &str, branch: &str) -> PyResult<Option<String>> {
        let repo: RepoName = parse(py, repo)?;
        let branch: BranchName = parse(py, branch)?;
        block(py, None, None, || async {
            self.dm.get_repo(&repo).await?;
            self.dm.branch_head(&repo, &branch).await
        })
        .map(|h| h.map(|h| h.to_string()))
    }

    #[pyo3(signature = (repo, branch, start=None))]
    fn create_branch(
        &self,
        py: Python<'_>,
        repo: &str,
        branch: &str,
        start: Option<&str>,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let branch: BranchName = parse(py, branch)?;
        let start: Option<BundleId> = start.map(|s| parse(py, s)).transpose()?;
        json(&block(py, None, None, || {
            self.dm.create_branch(&repo, &branch, start)
        })?)
    }

    #[pyo3(signature = (repo, branch, bundle, guard=false, expect=None))]
    fn set_branch(
        &self,
        py: Python<'_>,
        repo: &str,
        branch: &str,
        bundle: &str,
        guard: bool,
        expect: Option<&str>,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let branch: BranchName = parse(py, branch)?;
        let bundle: BundleId = parse(py, bundle)?;
        let expect = expectation(py, guard, expect)?;
        json(&block(py, None, None, || {
            self.dm.set_branch(&repo, &branch, &bundle, expect)
        })?)
    }

    fn branch_history(&self, py: Python<'_>, repo: &str, branch: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let branch: BranchName = parse(py, branch)?;
        json(&block(py, None, None, || {
            self.dm.branch_history(&repo, &branch)
        })?)
    }

    fn list_branches(&self, py: Python<'_>, repo: &str) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        json(&block(py, None, None, || self.dm.list_branches(&repo))?)
    }

    /// The history of a branch, newest first, as JSON `[{bundle, run}]`.
    #[pyo3(signature = (repo, branch=None, limit=None))]
    fn log(
        &self,
        py: Python<'_>,
        repo: &str,
        branch: Option<&str>,
        limit: Option<usize>,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let branch: Option<BranchName> = branch.map(|b| parse(py, b)).transpose()?;
        json(&block(py, None, None, || {
            self.dm.log(&repo, branch.as_ref(), limit)
        })?)
    }

    fn get_run(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id: RunId = parse(py, id)?;
        json(&block(py, None, None, || self.dm.get_run(&id))?)
    }

    #[pyo3(signature = (step=None, since=None, meta=None))]
    fn list_runs(
        &self,
        py: Python<'_>,
        step: Option<String>,
        since: Option<&str>,
        meta: Option<Vec<(String, String)>>,
    ) -> PyResult<String> {
        let query = RunQuery {
            step,
            since: time(py, since)?,
            meta: meta.unwrap_or_default(),
        };
        json(&block(py, None, None, || self.dm.list_runs(&query))?)
    }

    fn diff_runs(&self, py: Python<'_>, a: &str, b: &str) -> PyResult<String> {
        let a: RunId = parse(py, a)?;
        let b: RunId = parse(py, b)?;
        let d = block(py, None, None, || self.dm.diff_runs(&a, &b))?;
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(flatten)]
            diff: &'a datamon::RunDiff,
            causes_changed: bool,
        }
        json(&View {
            diff: &d,
            causes_changed: d.causes_changed(),
        })
    }

    /// Lineage of a bundle; `direction` is `up`, `down` or `both`.
    #[pyo3(signature = (repo, id, direction="both", depth=None))]
    fn lineage(
        &self,
        py: Python<'_>,
        repo: &str,
        id: &str,
        direction: &str,
        depth: Option<usize>,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let id: BundleId = parse(py, id)?;
        let direction = match direction {
            "up" | "upstream" => LineageDirection::Upstream,
            "down" | "downstream" => LineageDirection::Downstream,
            "both" => LineageDirection::Both,
            other => {
                return Err(invalid(
                    py,
                    format!("lineage direction {other:?}: expected up, down or both"),
                ))
            }
        };
        let opts = LineageOptions { direction, depth };
        json(&block(py, None, None, || {
            self.dm.lineage(&repo, &id, opts)
        })?)
    }

    /// Plans a run (see `datamon.Datamon.run`).
    #[pyo3(signature = (step, inputs, outputs, params=None, meta=None, message=None, workdir=None, command=None))]
    #[allow(clippy::too_many_arguments)]
    fn plan_run(
        &self,
        py: Python<'_>,
        step: String,
        inputs: Vec<String>,
        outputs: Vec<(String, PathBuf, Option<String>)>,
        params: Option<BTreeMap<String, String>>,
        meta: Option<BTreeMap<String, String>>,
        message: Option<String>,
        workdir: Option<PathBuf>,
        command: Option<Vec<String>>,
    ) -> PyResult<crate::plan::Plan> {
        crate::plan::plan(
            py,
            &self.dm,
            step,
            inputs,
            outputs,
            crate::plan::Extra {
                params: params.unwrap_or_default(),
                meta: meta.unwrap_or_default(),
                message,
                workdir,
                command: command.unwrap_or_default(),
            },
        )
    }

    /// Commits a staged folder as a new bundle on `branch` containing the branch head's files
    /// with the files under `files` written over them (the fsspec transaction): `files` maps
    /// bundle paths to local files. Returns the bundle as JSON.
    fn commit_files(
        &self,
        py: Python<'_>,
        repo: &str,
        branch: &str,
        files: Vec<(String, PathBuf)>,
        message: String,
    ) -> PyResult<String> {
        let repo: RepoName = parse(py, repo)?;
        let branch: BranchName = parse(py, branch)?;
        let cancel = CancellationToken::new();
        let dm = &self.dm;
        let bundle = block(py, Some(&cancel), None, || async {
            let base = dm.branch_head(&repo, &branch).await?;
            let scratch = tempfile::Builder::new()
                .prefix("datamon-commit-")
                .tempdir()
                .map_err(|source| datamon::Error::Io {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let wt_dir = scratch.path().join("wt");
            let mut state = datamon::worktree::WorkTreeState::new(repo.clone(), &message);
            state.branch = Some(branch.clone());
            state.base = base;
            let wt = dm.worktree_create(&wt_dir, state, &NoProgress).await;
            let r = async {
                let wt = wt?;
                for (path, local) in &files {
                    let rel: PathBuf = path
                        .split('/')
                        .filter(|c| !c.is_empty() && *c != ".")
                        .collect();
                    if rel
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                    {
                        return Err(datamon::Error::InvalidInput(format!(
                            "path {path:?} leaves the bundle"
                        )));
                    }
                    let target = wt.files().join(&rel);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|source| datamon::Error::Io {
                            path: parent.to_owned(),
                            source,
                        })?;
                    }
                    // A placeholder of the base is replaced, not written through.
                    let _ = std::fs::remove_file(&target);
                    if std::fs::rename(local, &target).is_err() {
                        std::fs::copy(local, &target).map_err(|source| datamon::Error::Io {
                            path: target.clone(),
                            source,
                        })?;
                    }
                }
                let b = dm
                    .worktree_commit(&wt, Some(&message), true, &NoProgress)
                    .await?;
                b.ok_or_else(|| datamon::Error::InvalidInput("nothing to commit".into()))
            }
            .await;
            drop(scratch);
            r
        })?;
        json(&bundle)
    }
}

fn forget_all(v: &Vfs, inodes: &[u64]) {
    for &ino in inodes {
        v.forget(ino, 1);
    }
}

fn change(c: datamon::Change) -> (String, String) {
    let k = match c.kind {
        datamon::ChangeKind::Added => "A",
        datamon::ChangeKind::Deleted => "D",
        _ => "M",
    };
    (k.to_owned(), c.path)
}

/// The guard of a ref update: `None` without a guard; `Some(None)` to require absence.
fn expectation(
    py: Python<'_>,
    guard: bool,
    expect: Option<&str>,
) -> PyResult<Option<Option<BundleId>>> {
    if !guard {
        return Ok(None);
    }
    match expect {
        None | Some("none") => Ok(Some(None)),
        Some(e) => Ok(Some(Some(parse(py, e)?))),
    }
}
