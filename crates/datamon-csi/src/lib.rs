//! A Kubernetes CSI driver for datamon: bundles as read-only volumes, and versioned read-write
//! volumes whose work is committed as new bundles.
//!
//! The crate is an adapter: it parses CSI requests ([`volume`] turns volume attributes into a
//! [`volume::VolumeSpec`]), calls the library (`Datamon::resolve`, `Datamon::vfs`,
//! `Datamon::worktree_create`, `Datamon::worktree_commit`) and `datamon-fuse` (the mounts), and
//! maps library errors to gRPC codes by kind ([`status`]). The services are the generated ones
//! of [`bpfman_csi`] (CSI v1.9):
//!
//! - Identity ([`identity`]): plugin info, capabilities, a probe that fails while the store is
//!   unreachable.
//! - Node ([`node`]): publish/unpublish (idempotent; mounts left by a killed driver are found
//!   through the records in the state directory, cleaned and mounted again), info,
//!   capabilities, volume stats. Every mount of the node shares one on-disk chunk cache with
//!   one size bound.
//! - Controller ([`controller`]): create (a label or branch is resolved to a bundle id, which
//!   the volume id records), delete, validate, capabilities.
//!
//! A front end (the `datamon csi` command) builds [`DriverOptions`], binds the endpoint with
//! [`bind`] and calls [`serve`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use datamon_csi::{bind, serve, Driver, DriverOptions};
//! let opts = DriverOptions::new("file:///var/lib/datamon-store", "node-1", "/var/lib/datamon-csi".into());
//! let driver = Driver::new(opts);
//! driver.recover().await;
//! let listener = bind("unix:///csi/csi.sock")?;
//! serve(driver, listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

// The generated services return `tonic::Status` (176 bytes); the helpers that build their answers
// return it too, rather than boxing it only to unbox it at every call.
#![allow(clippy::result_large_err)]

pub mod controller;
pub mod identity;
pub mod node;
pub mod status;
pub mod volume;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use bpfman_csi::v1 as csi;
use datamon::{Datamon, OpenOptions};
use datamon_fuse::metrics::MountMetrics;
use tokio::net::UnixListener;
use tonic::Status;

/// The driver's name, as the CSIDriver object and the StorageClass `provisioner` name it.
pub const DRIVER_NAME: &str = "csi.datamon.io";

/// How to run the driver.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The store URL.
    pub store_url: String,
    /// A replica of the store, if any.
    pub replica_url: Option<String>,
    /// How to open the store (author, backend settings).
    pub open: OpenOptions,
    /// This node's id (`NodeGetInfo`).
    pub node_id: String,
    /// Serve the controller service.
    pub controller: bool,
    /// Serve the node service.
    pub node: bool,
    /// Where the driver keeps its records (published volumes, created volumes) and the scratch
    /// areas of versioned volumes; must survive a restart of the driver (a hostPath).
    pub state_dir: PathBuf,
    /// The chunk cache every mount of this node shares (default `<state_dir>/cache`).
    pub cache_dir: PathBuf,
    /// Bound of that cache in bytes (default 10 GiB).
    pub cache_size: u64,
    /// Bound of each volume's in-memory chunk cache in bytes (default 16 MiB).
    pub memory_cache: u64,
    /// Directory entries each volume keeps parsed (default 50,000: about 10 MiB).
    pub tree_cache: usize,
    /// Time limit of each store access of a mount (default 60 s).
    pub timeout: Duration,
    /// Time limit of the probe's store check (default 10 s).
    pub probe_timeout: Duration,
    /// Where the node counts its mounts, reads and commits (the `--metrics-addr` endpoint
    /// serves them; see `datamon_fuse::metrics`).
    pub metrics: Arc<MountMetrics>,
}

impl DriverOptions {
    /// Options with the defaults for everything but the store, the node id and the state
    /// directory; both services on.
    pub fn new(store_url: &str, node_id: &str, state_dir: PathBuf) -> DriverOptions {
        DriverOptions {
            store_url: store_url.to_owned(),
            replica_url: None,
            open: OpenOptions::default(),
            node_id: node_id.to_owned(),
            controller: true,
            node: true,
            cache_dir: state_dir.join("cache"),
            state_dir,
            cache_size: 10 << 30,
            memory_cache: 16 << 20,
            tree_cache: 50_000,
            timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(10),
            metrics: MountMetrics::new(),
        }
    }
}

/// The driver: the state its services share. Cheap to clone.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

struct Inner {
    opts: DriverOptions,
    dm: tokio::sync::Mutex<Option<Datamon>>,
    node: node::NodeState,
    /// Serializes controller calls (creates of one name must not race).
    controller: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver; the store is opened on first use (so the driver starts, and its probe
    /// reports, while the store is unreachable).
    pub fn new(opts: DriverOptions) -> Driver {
        Driver {
            inner: Arc::new(Inner {
                node: node::NodeState::new(&opts.state_dir),
                opts,
                dm: tokio::sync::Mutex::new(None),
                controller: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Its options.
    pub fn options(&self) -> &DriverOptions {
        &self.inner.opts
    }

    /// Its metrics (serve them with `datamon_fuse::metrics::MetricsServer`).
    pub fn metrics(&self) -> &Arc<MountMetrics> {
        &self.inner.opts.metrics
    }

    /// The opened store, opening it if needed.
    ///
    /// # Errors
    /// `Unavailable` (or the code of the failure's kind) when the store cannot be opened.
    pub async fn datamon(&self) -> Result<Datamon, Status> {
        let mut dm = self.inner.dm.lock().await;
        if let Some(d) = &*dm {
            return Ok(d.clone());
        }
        let o = &self.inner.opts;
        let opened = match &o.replica_url {
            Some(r) => Datamon::open_with_replica(&o.store_url, r, o.open.clone()).await,
            None => Datamon::open(&o.store_url, o.open.clone()).await,
        };
        match opened {
            Ok(d) => {
                *dm = Some(d.clone());
                Ok(d)
            }
            // Whatever the cause, a store that cannot be opened is one the CO should retry.
            Err(e) => Err(Status::unavailable(format!(
                "cannot open store {}: {e}",
                o.store_url
            ))),
        }
    }

    /// On start: mounts again the volumes this node had published (a killed driver leaves
    /// their FUSE mounts dead), and retries the commits of versioned volumes that failed.
    /// Failures are logged and left for the next publish or unpublish.
    pub async fn recover(&self) {
        if self.inner.opts.node {
            node::recover(self).await;
        }
    }

    /// Commits every published versioned volume (before the process exits). Failures are
    /// logged; the scratch data stays for the next start.
    pub async fn shutdown(&self) {
        if self.inner.opts.node {
            node::shutdown(self).await;
        }
    }
}

/// Binds a `unix://` endpoint (or a plain path), replacing a socket file left by an earlier
/// run and creating its directory.
///
/// # Errors
/// Not a unix endpoint; the directory cannot be created; the bind fails.
pub fn bind(endpoint: &str) -> std::io::Result<UnixListener> {
    let path = endpoint_path(endpoint)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    UnixListener::bind(&path)
}

/// The socket path of `unix:///path` (or `/path`).
///
/// # Errors
/// Any other scheme.
pub fn endpoint_path(endpoint: &str) -> std::io::Result<PathBuf> {
    let p = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !Path::new(p).is_absolute() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("endpoint {endpoint:?} is not unix:///ABSOLUTE/PATH"),
        ));
    }
    Ok(PathBuf::from(p))
}

/// Serves the identity service and the services `driver`'s options turn on, on `listener`,
/// until `shutdown` completes.
///
/// # Errors
/// The transport fails.
pub async fn serve(
    driver: Driver,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use csi::controller_server::ControllerServer;
    use csi::identity_server::IdentityServer;
    use csi::node_server::NodeServer;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let opts = &driver.inner.opts;
    let controller = opts
        .controller
        .then(|| ControllerServer::new(controller::ControllerService(driver.clone())));
    let node = opts
        .node
        .then(|| NodeServer::new(node::NodeService(driver.clone())));
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity::IdentityService(
            driver.clone(),
        )))
        .add_optional_service(controller)
        .add_optional_service(node)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
