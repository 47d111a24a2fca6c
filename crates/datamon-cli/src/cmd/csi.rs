//! `datamon csi`: the Kubernetes CSI driver (see `datamon_csi` and `docs/kubernetes.md`).
//!
//! Serves the identity service and the node and/or controller services on a unix socket until
//! SIGTERM or SIGINT; then commits the versioned volumes it serves and exits. The store is the
//! usual one (`--store`, `DATAMON_STORE`, or the context), with credentials from the cloud SDKs'
//! environment variables.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytesize::ByteSize;
use clap::Args;

use crate::Ctx;

/// `datamon csi`.
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// The gRPC endpoint the kubelet or the sidecars call
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        value_name = "unix:///PATH",
        default_value = "unix:///csi/csi.sock"
    )]
    endpoint: String,
    /// This node's name (NodeGetInfo); in a DaemonSet, the pod's spec.nodeName
    #[arg(long, env = "NODE_ID", value_name = "NAME")]
    node_id: String,
    /// Serve the controller service (dynamic provisioning)
    #[arg(long)]
    controller: bool,
    /// Serve the node service (mounts); with neither flag, both are served
    #[arg(long)]
    node: bool,
    /// Records of published and created volumes, and the scratch areas of versioned volumes;
    /// must survive a restart of the driver
    #[arg(
        long,
        env = "DATAMON_CSI_STATE",
        value_name = "DIR",
        default_value = "/var/lib/datamon-csi"
    )]
    state_dir: PathBuf,
    /// The chunk cache every volume of this node shares (default: STATE_DIR/cache)
    #[arg(long, env = "DATAMON_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Bound of that cache (e.g. 10GiB)
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    cache_size: ByteSize,
    /// Bound of each volume's in-memory chunk cache
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    memory_cache: ByteSize,
    /// Seconds after which a store access of a mount counts as failed (readers get EIO)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// Serve Prometheus metrics of the node (volumes mounted, bytes read, cache hits and
    /// misses, fetch errors, commit results) at http://HOST:PORT/metrics; `:PORT` listens on
    /// every interface
    #[arg(
        long,
        env = "DATAMON_METRICS_ADDR",
        value_name = "HOST:PORT",
        value_parser = crate::cmd::mount::parse_metrics_addr
    )]
    metrics_addr: Option<std::net::SocketAddr>,
}

impl CsiArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        crate::cmd::mount::raise_fd_limit();
        let both = !self.controller && !self.node;
        let mut opts =
            datamon_csi::DriverOptions::new(&ctx.store_url()?, &self.node_id, self.state_dir);
        opts.replica_url = ctx.replica_url()?;
        opts.open = datamon::OpenOptions {
            author: Some(ctx.author()),
            cache_dir: Some(ctx.home.cache_dir()),
            store_options: Ctx::store_options(),
            concurrency: ctx.global.concurrency,
            unlock: None,
        };
        opts.controller = self.controller || both;
        opts.node = self.node || both;
        if let Some(c) = self.cache {
            opts.cache_dir = c;
        }
        opts.cache_size = self.cache_size.as_u64();
        opts.memory_cache = self.memory_cache.as_u64();
        opts.timeout = Duration::from_secs(self.timeout.max(1));
        let driver = datamon_csi::Driver::new(opts);
        let _server =
            crate::cmd::mount::start_metrics(self.metrics_addr, driver.metrics(), ctx).await?;
        driver.recover().await;
        let listener = datamon_csi::bind(&self.endpoint)
            .with_context(|| format!("cannot listen on {}", self.endpoint))?;
        tracing::info!("serving CSI on {}", self.endpoint);
        datamon_csi::serve(driver.clone(), listener, stop())
            .await
            .with_context(|| format!("serving CSI on {}", self.endpoint))?;
        driver.shutdown().await;
        Ok(ExitCode::SUCCESS)
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
