//! The CSI node service: mounts volumes at the kubelet's target paths.
//!
//! A read-only volume is the bundle served by `datamon_fuse::mount_read_only`; a versioned
//! volume is a work tree (`<state_dir>/node/scratch/<hash of the volume id>`) served by
//! `datamon_fuse::mount_work_tree`, committed every `autosave` interval and once more when it
//! is unpublished. All mounts share the chunk cache of [`crate::DriverOptions::cache_dir`].
//!
//! Each published target has a record in `<state_dir>/node/published/` (volume, spec, the
//! resolved bundle), written before `NodePublishVolume` returns and removed when
//! `NodeUnpublishVolume` has cleaned up. So a restarted driver knows what it had published: at
//! start ([`crate::Driver::recover`]) and on a repeated publish, a dead FUSE mount left by a
//! killed driver is unmounted and the volume mounted again; a live one is adopted.
//!
//! Work is never lost: a versioned volume whose final commit fails is unmounted, but its record
//! (marked `unpublished`) and scratch area stay; `NodeUnpublishVolume` reports `Unavailable`, so
//! the kubelet calls it again, and each call (and each start of the driver, and a retry every
//! minute) tries the commit again until it succeeds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use datamon::vfs::VfsOptions;
use datamon::worktree::{WorkTree, WorkTreeState};
use datamon::{BundleId, Datamon, NoProgress};
use datamon_fuse::metrics::{CommitResult, MountGauge, MountMetrics, MountMode};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::csi::{self, node_service_capability as ncap, volume_usage};
use crate::volume::{self, Mode, Selector, VolumeSpec};
use crate::Driver;

/// The node service.
#[derive(Debug, Clone)]
pub struct NodeService(pub Driver);

/// What is published at one target (on disk, to survive a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    volume_id: String,
    target: PathBuf,
    spec: VolumeSpec,
    /// The bundle shown (read-only) or started from (versioned), resolved at the first publish.
    bundle: Option<BundleId>,
    readonly: bool,
    /// Bundle metadata of the commits (pod name and namespace).
    #[serde(default)]
    meta: BTreeMap<String, String>,
    /// Unmounted, but the final commit of its scratch area has not succeeded yet.
    #[serde(default)]
    unpublished: bool,
}

/// A volume published by this process.
struct Published {
    record: Record,
    /// `None`: a live mount found after a restart (served by another process).
    session: Option<datamon_fuse::Mount>,
    /// Files and bytes of the bundle.
    sizes: (u64, u64),
    worktree: Option<WorkTree>,
    autosave: Option<tokio::task::JoinHandle<()>>,
    /// Counts it in `datamon_mounts` while it is published.
    _gauge: MountGauge,
}

/// The node's state: what is published, by target path.
pub(crate) struct NodeState {
    dir: PathBuf,
    mounts: tokio::sync::Mutex<HashMap<PathBuf, Published>>,
}

impl NodeState {
    pub(crate) fn new(state_dir: &Path) -> NodeState {
        NodeState {
            dir: state_dir.join("node"),
            mounts: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt as _;
        let h = datamon::Hash::of(target.as_os_str().as_bytes()).to_hex();
        self.dir
            .join("published")
            .join(format!("{}.json", &h[..32]))
    }

    fn scratch(&self, volume_id: &str) -> PathBuf {
        let h = datamon::Hash::of(volume_id.as_bytes()).to_hex();
        self.dir.join("scratch").join(&h[..32])
    }

    fn save(&self, r: &Record) -> Result<(), Status> {
        let p = self.record_path(&r.target);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| Status::internal(format!("creating {}: {e}", d.display())))?;
        }
        write_atomic(
            &p,
            &serde_json::to_vec_pretty(r).expect("a record always serializes"),
        )
    }

    fn load(&self, target: &Path) -> Option<Record> {
        let b = std::fs::read(self.record_path(target)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn remove(&self, target: &Path) -> Result<(), Status> {
        let p = self.record_path(target);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Status::internal(format!("removing {}: {e}", p.display())))
            }
            _ => Ok(()),
        }
    }

    fn all_records(&self) -> Vec<Record> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("published")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Status> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    r.map_err(|e| Status::internal(format!("writing {}: {e}", path.display())))
}

/// Runs the future `make` builds on a blocking thread, driven through the runtime's handle.
/// Some library futures (upload, download) are not provably `Send` (their closures borrow
/// across awaits), and the gRPC services must be; this lets them await those calls.
async fn off_worker<T, F>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(make()))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Commits what changed in `wt` (see [`off_worker`]), counting the result in `metrics`.
async fn commit(
    dm: &Datamon,
    wt: &WorkTree,
    metrics: &MountMetrics,
) -> Result<Option<datamon::Bundle>, datamon::Error> {
    let (dm, wt) = (dm.clone(), wt.clone());
    let r =
        off_worker(move || async move { dm.worktree_commit(&wt, None, false, &NoProgress).await })
            .await;
    metrics.commit(match &r {
        Ok(Some(_)) => CommitResult::Committed,
        Ok(None) => CommitResult::Unchanged,
        Err(_) => CommitResult::Failed,
    });
    r
}

/// Whether a mount at `target` answers (a dead FUSE mount says ENOTCONN).
fn alive(target: &Path) -> bool {
    std::fs::read_dir(target).is_ok()
}

/// Unmounts a dead (or unknown) mount at `target`, if any.
fn clean_mount(target: &Path) -> Result<(), Status> {
    if datamon_fuse::is_mounted(target) {
        tracing::info!("unmounting what is left at {}", target.display());
        datamon_fuse::unmount_path(target)
            .map_err(|e| Status::internal(format!("unmounting {}: {e}", target.display())))?;
    }
    Ok(())
}

fn remove_target(target: &Path) -> Result<(), Status> {
    match std::fs::remove_dir(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Status::internal(format!(
            "removing the target {}: {e}",
            target.display()
        ))),
        _ => Ok(()),
    }
}

fn what(r: &Record) -> String {
    match &r.bundle {
        Some(id) if !matches!(r.spec.selector, Selector::Bundle(_)) => format!(
            "volume {} (repo {}, {} = bundle {id})",
            r.volume_id, r.spec.repo, r.spec.selector
        ),
        _ => format!(
            "volume {} (repo {}, {})",
            r.volume_id, r.spec.repo, r.spec.selector
        ),
    }
}

impl Driver {
    fn vfs_options(&self) -> VfsOptions {
        let o = self.options();
        VfsOptions {
            cache_dir: Some(o.cache_dir.clone()),
            cache_size: o.cache_size,
            memory_cache: o.memory_cache,
            tree_cache: o.tree_cache,
            timeout: o.timeout,
            metrics: o.metrics.vfs(),
            ..VfsOptions::default()
        }
    }

    /// Mounts the volume of `r` at its target (which exists and has nothing mounted).
    async fn mount(&self, dm: &Datamon, r: &Record) -> Result<Published, Status> {
        let w = what(r);
        let err = |e: datamon::Error| crate::status::from_error(&w, &e);
        let config = datamon_fuse::MountConfig {
            allow_other: true,
            ..Default::default()
        };
        let target = r.target.clone();
        let mount_err = |e: std::io::Error| {
            Status::internal(format!("{w}: cannot mount on {}: {e}", r.target.display()))
        };
        match &r.spec.mode {
            Mode::ReadOnly => {
                let id = r.bundle.expect("a read-only volume has a bundle");
                let vfs = dm
                    .vfs(
                        &r.spec.repo,
                        &id,
                        self.vfs_options(),
                        tokio::runtime::Handle::current(),
                    )
                    .await
                    .map_err(err)?;
                let s = vfs.stats();
                let session = tokio::task::spawn_blocking(move || {
                    datamon_fuse::mount_read_only(vfs, &target, &config)
                })
                .await
                .map_err(|e| Status::internal(format!("{w}: {e}")))?
                .map_err(mount_err)?;
                Ok(Published {
                    record: r.clone(),
                    session: Some(session),
                    sizes: (s.files, s.bytes),
                    worktree: None,
                    autosave: None,
                    _gauge: self.metrics().track(MountMode::ReadOnly),
                })
            }
            Mode::Versioned {
                autosave,
                branch,
                label,
                message,
            } => {
                let scratch = self.inner.node.scratch(&r.volume_id);
                let (wt, fresh) = match WorkTree::open(&scratch) {
                    // Work of an earlier publish not committed yet: continue from it.
                    Ok(wt) => {
                        let mut s = wt.state().map_err(err)?;
                        s.meta.extend(r.meta.clone());
                        wt.save_state(&s).map_err(err)?;
                        (wt, false)
                    }
                    Err(_) => {
                        let _ = std::fs::remove_dir_all(&scratch);
                        let mut meta = r.meta.clone();
                        meta.insert("csi.volume".into(), r.volume_id.clone());
                        let state = WorkTreeState {
                            base: r.bundle,
                            branch: branch.clone(),
                            label: label.clone(),
                            mountpoint: Some(r.target.clone()),
                            meta,
                            ..WorkTreeState::new(r.spec.repo.clone(), message)
                        };
                        let (dm2, dir) = (dm.clone(), scratch.clone());
                        let wt = off_worker(move || async move {
                            dm2.worktree_create(&dir, state, &NoProgress).await
                        })
                        .await
                        .map_err(err)?;
                        (wt, true)
                    }
                };
                let (vfs, sizes) = match &r.bundle {
                    Some(id) => {
                        let v = dm
                            .vfs(
                                &r.spec.repo,
                                id,
                                self.vfs_options(),
                                tokio::runtime::Handle::current(),
                            )
                            .await
                            .map_err(err)?;
                        let s = v.stats();
                        (Some(v), (s.files, s.bytes))
                    }
                    None => (None, (0, 0)),
                };
                let files = wt.files();
                let mounted = tokio::task::spawn_blocking(move || {
                    datamon_fuse::mount_work_tree(&files, vfs, &target, &config)
                })
                .await
                .map_err(|e| Status::internal(format!("{w}: {e}")))?;
                let session = match mounted {
                    Ok(s) => s,
                    Err(e) => {
                        if fresh {
                            let _ = wt.clone().remove();
                        }
                        return Err(mount_err(e));
                    }
                };
                let autosave = autosave.map(|period| {
                    let (dm, wt, w) = (dm.clone(), wt.clone(), w.clone());
                    let metrics = self.metrics().clone();
                    tokio::spawn(async move {
                        let mut tick =
                            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        loop {
                            tick.tick().await;
                            match commit(&dm, &wt, &metrics).await {
                                Ok(Some(b)) => tracing::info!("{w}: autosaved bundle {}", b.id),
                                Ok(None) => {}
                                Err(e) => tracing::warn!("{w}: autosave failed (retried): {e}"),
                            }
                        }
                    })
                });
                Ok(Published {
                    record: r.clone(),
                    session: Some(session),
                    sizes,
                    worktree: Some(wt),
                    autosave,
                    _gauge: self.metrics().track(MountMode::Versioned),
                })
            }
        }
    }

    /// The final commit of a versioned volume's scratch area, then its removal.
    async fn final_commit(&self, r: &Record) -> Result<(), Status> {
        let scratch = self.inner.node.scratch(&r.volume_id);
        let Ok(wt) = WorkTree::open(&scratch) else {
            return Ok(());
        };
        let w = what(r);
        let failed = |e: Status| {
            Status::unavailable(format!(
                "{w}: the final commit failed; the written data is kept on the node in {} and the commit is retried: {}",
                scratch.display(),
                e.message()
            ))
        };
        let dm = self.datamon().await.map_err(|e| {
            self.metrics().commit(CommitResult::Failed);
            failed(e)
        })?;
        match commit(&dm, &wt, self.metrics()).await {
            Ok(b) => {
                if let Some(b) = b {
                    tracing::info!("{w}: committed bundle {}", b.id);
                }
                wt.remove().map_err(|e| crate::status::from_error(&w, &e))?;
                Ok(())
            }
            Err(e) => Err(failed(crate::status::from_error("commit", &e))),
        }
    }
}

/// [`Driver::recover`] for the node: mounts again what the records say is published, and
/// retries pending commits (now, and every minute from then on).
pub(crate) async fn recover(d: &Driver) {
    let records = d.inner.node.all_records();
    let mut mounts = d.inner.node.mounts.lock().await;
    for r in records {
        if r.unpublished || mounts.contains_key(&r.target) {
            continue;
        }
        let w = what(&r);
        if datamon_fuse::is_mounted(&r.target) && alive(&r.target) {
            tracing::info!("{w}: still mounted at {}; adopted", r.target.display());
            mounts.insert(r.target.clone(), adopted(d, r));
            continue;
        }
        let again = async {
            clean_mount(&r.target)?;
            std::fs::create_dir_all(&r.target)
                .map_err(|e| Status::internal(format!("{}: {e}", r.target.display())))?;
            let dm = d.datamon().await?;
            d.mount(&dm, &r).await
        };
        match again.await {
            Ok(p) => {
                tracing::info!("{w}: mounted again at {}", r.target.display());
                mounts.insert(r.target.clone(), p);
            }
            Err(e) => tracing::warn!("{w}: cannot mount it again (left for the next publish): {e}"),
        }
    }
    drop(mounts);
    retry_pending(d).await;
    let d2 = d.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            retry_pending(&d2).await;
        }
    });
}

fn adopted(d: &Driver, r: Record) -> Published {
    let mode = if r.spec.is_versioned() {
        MountMode::Versioned
    } else {
        MountMode::ReadOnly
    };
    Published {
        record: r,
        session: None,
        sizes: (0, 0),
        worktree: None,
        autosave: None,
        _gauge: d.metrics().track(mode),
    }
}

/// Retries the final commits of volumes unpublished while their commit failed.
async fn retry_pending(d: &Driver) {
    let _mounts = d.inner.node.mounts.lock().await;
    for r in d.inner.node.all_records() {
        if !r.unpublished {
            continue;
        }
        match d.final_commit(&r).await {
            Ok(()) => {
                let _ = d.inner.node.remove(&r.target);
            }
            Err(e) => tracing::warn!("{}", e.message()),
        }
    }
}

/// [`Driver::shutdown`] for the node.
pub(crate) async fn shutdown(d: &Driver) {
    let mounts = d.inner.node.mounts.lock().await;
    for p in mounts.values() {
        if let Some(wt) = &p.worktree {
            if let Some(a) = &p.autosave {
                a.abort();
            }
            let Ok(dm) = d.datamon().await else {
                continue;
            };
            if let Err(e) = commit(&dm, wt, d.metrics()).await {
                tracing::warn!("{}: commit at shutdown failed: {e}", what(&p.record));
            }
        }
    }
}

fn required<'a>(v: &'a str, what: &str, call: &str) -> Result<&'a str, Status> {
    if v.is_empty() {
        Err(Status::invalid_argument(format!(
            "{call}: the {what} is missing"
        )))
    } else {
        Ok(v)
    }
}

/// The spec of a volume being published: from its context, or from its id (a dynamically
/// provisioned volume whose context was lost). The id's bundle wins: it was resolved when the
/// volume was created.
fn spec_of(volume_id: &str, context: &HashMap<String, String>) -> Result<VolumeSpec, Status> {
    let parsed = volume::parse_volume_id(volume_id);
    let mut spec = if context.keys().any(|k| !k.starts_with(volume::K8S_PREFIX)) {
        VolumeSpec::from_attributes(context)?
    } else if let Some(p) = &parsed {
        VolumeSpec {
            repo: p.repo.clone(),
            selector: Selector::Empty,
            mode: if p.versioned {
                VolumeSpec::from_attributes(&HashMap::from([
                    (volume::REPO.to_owned(), p.repo.to_string()),
                    (volume::MODE.to_owned(), "versioned".to_owned()),
                ]))?
                .mode
            } else {
                Mode::ReadOnly
            },
        }
    } else {
        return Err(Status::invalid_argument(format!(
            "volume {volume_id}: no volume attributes; give at least `repo` and one of bundle, label or branch"
        )));
    };
    if let Some(p) = parsed {
        if let Some(id) = p.bundle {
            spec.selector = Selector::Bundle(id);
        }
    }
    Ok(spec)
}

#[tonic::async_trait]
impl csi::node_server::Node for NodeService {
    async fn node_stage_volume(
        &self,
        _request: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeStageVolume: the datamon driver has no STAGE_UNSTAGE_VOLUME capability",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeUnstageVolume: the datamon driver has no STAGE_UNSTAGE_VOLUME capability",
        ))
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        const CALL: &str = "NodePublishVolume";
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume id", CALL)?.to_owned();
        let target = PathBuf::from(required(&r.target_path, "target path", CALL)?);
        if !target.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "{CALL} {volume_id}: the target path {} is not absolute",
                target.display()
            )));
        }
        let cap = r.volume_capability.as_ref().ok_or_else(|| {
            Status::invalid_argument(format!(
                "{CALL} {volume_id}: the volume capability is missing"
            ))
        })?;
        let spec = spec_of(&volume_id, &r.volume_context)?;
        let sel = format!("repo {}, {}", spec.repo, spec.selector);
        if let Some(crate::csi::volume_capability::AccessType::Block(_)) = &cap.access_type {
            return Err(Status::invalid_argument(format!(
                "{CALL} {volume_id} ({sel}): block volumes are not supported: use a filesystem volume"
            )));
        }
        if cap.access_type.is_none() {
            return Err(Status::invalid_argument(format!(
                "{CALL} {volume_id} ({sel}): the volume capability has no access type"
            )));
        }
        let readonly = r.readonly || !spec.is_versioned();
        if spec.is_versioned() && r.readonly {
            return Err(Status::failed_precondition(format!(
                "{CALL} {volume_id} ({sel}): a versioned volume is mounted read-write; publish it without readOnly"
            )));
        }
        let node = &self.0.inner.node;
        let mut mounts = node.mounts.lock().await;
        if let Some(p) = mounts.get(&target) {
            if p.record.volume_id == volume_id && p.record.readonly == readonly {
                return Ok(Response::new(csi::NodePublishVolumeResponse {}));
            }
            return Err(Status::already_exists(format!(
                "{CALL} {volume_id} ({sel}): {} already has volume {} published{}",
                target.display(),
                p.record.volume_id,
                if p.record.volume_id == volume_id {
                    " with another read-only flag"
                } else {
                    ""
                }
            )));
        }
        let earlier = node.load(&target);
        if let Some(e) = &earlier {
            if e.volume_id != volume_id {
                return Err(Status::already_exists(format!(
                    "{CALL} {volume_id} ({sel}): {} is recorded for volume {}; unpublish it first",
                    target.display(),
                    e.volume_id
                )));
            }
        }
        if datamon_fuse::is_mounted(&target) {
            if alive(&target) {
                match earlier {
                    // Published by an earlier run of this driver and still served: adopt it.
                    Some(e) if !e.unpublished => {
                        mounts.insert(target.clone(), adopted(&self.0, e));
                        return Ok(Response::new(csi::NodePublishVolumeResponse {}));
                    }
                    _ => {
                        return Err(Status::failed_precondition(format!(
                            "{CALL} {volume_id} ({sel}): something else is mounted at {}",
                            target.display()
                        )))
                    }
                }
            }
            // Dead: left by a killed driver.
            clean_mount(&target)?;
        }
        std::fs::create_dir_all(&target).map_err(|e| {
            Status::internal(format!(
                "{CALL} {volume_id}: creating the target {}: {e}",
                target.display()
            ))
        })?;
        let dm = self.0.datamon().await?;
        let bundle = match (&earlier, spec.selector.to_library()) {
            (Some(e), _) if e.bundle.is_some() => e.bundle,
            (_, Some(s)) => Some(
                dm.resolve(&spec.repo, &s)
                    .await
                    .map_err(|e| crate::status::from_error(&sel, &e))?,
            ),
            (_, None) => {
                dm.get_repo(&spec.repo)
                    .await
                    .map_err(|e| crate::status::from_error(&sel, &e))?;
                None
            }
        };
        let record = Record {
            volume_id,
            target: target.clone(),
            spec,
            bundle,
            readonly,
            meta: volume::pod_meta(&r.volume_context),
            unpublished: false,
        };
        let published = self.0.mount(&dm, &record).await?;
        if let Err(e) = node.save(&record) {
            drop(published);
            return Err(e);
        }
        tracing::info!("{}: published at {}", what(&record), target.display());
        mounts.insert(target, published);
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        const CALL: &str = "NodeUnpublishVolume";
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume id", CALL)?;
        let target = PathBuf::from(required(&r.target_path, "target path", CALL)?);
        let node = &self.0.inner.node;
        let mut mounts = node.mounts.lock().await;
        let (record, session) = match mounts.remove(&target) {
            Some(p) => {
                if let Some(a) = &p.autosave {
                    a.abort();
                }
                (Some(p.record), p.session)
            }
            None => (node.load(&target), None),
        };
        if let Some(rec) = &record {
            if rec.volume_id != volume_id {
                tracing::warn!(
                    "{CALL} {volume_id}: {} holds volume {}; unmounting it anyway",
                    target.display(),
                    rec.volume_id
                );
            }
        }
        if let Some(s) = session {
            let t = target.clone();
            tokio::task::spawn_blocking(move || s.unmount())
                .await
                .map_err(|e| Status::internal(format!("{CALL} {volume_id}: {e}")))?
                .map_err(|e| {
                    Status::internal(format!(
                        "{CALL} {volume_id}: unmounting {}: {e}",
                        t.display()
                    ))
                })?;
        }
        clean_mount(&target)?;
        if let Some(mut rec) = record {
            if rec.spec.is_versioned() {
                if let Err(e) = self.0.final_commit(&rec).await {
                    rec.unpublished = true;
                    node.save(&rec)?;
                    remove_target(&target)?;
                    return Err(e);
                }
            }
        }
        remove_target(&target)?;
        node.remove(&target)?;
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        const CALL: &str = "NodeGetVolumeStats";
        let r = request.into_inner();
        let volume_id = required(&r.volume_id, "volume id", CALL)?;
        let path = PathBuf::from(required(&r.volume_path, "volume path", CALL)?);
        let mounts = self.0.inner.node.mounts.lock().await;
        let p = mounts
            .get(&path)
            .filter(|p| p.record.volume_id == volume_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "{CALL}: volume {volume_id} is not published at {}",
                    path.display()
                ))
            })?;
        let dead = p.session.as_ref().is_some_and(|s| s.is_finished()) || !alive(&path);
        let usage =
            |unit: volume_usage::Unit, total: u64, used: u64, available: u64| csi::VolumeUsage {
                available: available as i64,
                total: total as i64,
                used: used as i64,
                unit: unit as i32,
            };
        let usage = match &p.worktree {
            Some(wt) => {
                let st = rustix::fs::statvfs(wt.files())
                    .map_err(|e| Status::internal(format!("{CALL} {volume_id}: statvfs: {e}")))?;
                let (bs, total, free) = (st.f_frsize, st.f_blocks, st.f_bavail);
                vec![
                    usage(
                        volume_usage::Unit::Bytes,
                        total * bs,
                        (total - st.f_bfree) * bs,
                        free * bs,
                    ),
                    usage(
                        volume_usage::Unit::Inodes,
                        st.f_files,
                        st.f_files - st.f_ffree,
                        st.f_favail,
                    ),
                ]
            }
            None => {
                let (files, bytes) = p.sizes;
                vec![
                    usage(volume_usage::Unit::Bytes, bytes, bytes, 0),
                    usage(volume_usage::Unit::Inodes, files, files, 0),
                ]
            }
        };
        Ok(Response::new(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(csi::VolumeCondition {
                abnormal: dead,
                message: if dead {
                    format!("the mount at {} does not answer", path.display())
                } else {
                    "mounted".to_owned()
                },
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeExpandVolume: datamon volumes are not expanded",
        ))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        let cap = |t: ncap::rpc::Type| csi::NodeServiceCapability {
            r#type: Some(ncap::Type::Rpc(ncap::Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(ncap::rpc::Type::GetVolumeStats),
                cap(ncap::rpc::Type::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.0.options().node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
