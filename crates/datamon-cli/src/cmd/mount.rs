//! `datamon bundle mount`: serve a bundle as a read-only FUSE filesystem.
//!
//! The command mounts, prints `Mounted bundle ID at DIR` on stdout once the mount is usable, and
//! serves until SIGINT or SIGTERM (then unmounts and exits 0) or until someone else unmounts it
//! (`fusermount3 -u DIR`). With `--daemon` (or the original datamon's `--daemonize`) it starts
//! itself in the background, waits for that line, prints it and returns; the background process
//! logs to `$DATAMON_HOME/logs/mount-<pid>.log`.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytesize::ByteSize;
use clap::Args;
use datamon::vfs::VfsOptions;
use datamon::{BranchName, BundleId, BundleSelector, LabelName, RepoName};
use datamon_fuse::metrics::{MetricsServer, MountMetrics, MountMode};

use crate::output;
use crate::Ctx;

/// `datamon bundle mount`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MountArgs {
    #[command(subcommand)]
    sub: Option<MountSub>,
    #[arg(long, required = true)]
    repo: Option<RepoName>,
    /// Bundle id
    #[arg(long, conflicts_with_all = ["label", "branch"], required_unless_present_any = ["label", "branch"])]
    bundle: Option<BundleId>,
    /// The bundle a label names
    #[arg(long, conflicts_with = "branch")]
    label: Option<LabelName>,
    /// The head of a branch
    #[arg(long)]
    branch: Option<BranchName>,
    /// Empty directory to mount on
    #[arg(long, value_name = "DIR", required = true)]
    mount: Option<PathBuf>,
    /// Chunk cache directory, shared by mounts of the same store (default: $DATAMON_HOME/cache/chunks)
    #[arg(
        long,
        value_name = "DIR",
        env = "DATAMON_CACHE",
        visible_alias = "destination"
    )]
    cache: Option<PathBuf>,
    /// Bound of the on-disk chunk cache (e.g. 10GiB, 500MB)
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    cache_size: ByteSize,
    /// Return once the mount is ready, serving it from a background process
    #[arg(long, visible_alias = "daemonize")]
    daemon: bool,
    /// Seconds after which a store access counts as failed (readers get EIO)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// Let other users read the mount (FUSE allow_other)
    #[arg(long)]
    allow_other: bool,
    /// Past this many known files and directories, the kernel is asked to forget the oldest,
    /// so memory stays bounded when millions of files are listed (0: no bound)
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_inodes: usize,
    /// Serve Prometheus metrics (reads, cache hits and misses, fetch errors) at
    /// http://HOST:PORT/metrics; `:PORT` listens on every interface
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_metrics_addr)]
    metrics_addr: Option<SocketAddr>,
}

impl MountArgs {
    fn selector(&self) -> anyhow::Result<BundleSelector> {
        Ok(match (&self.bundle, &self.label, &self.branch) {
            (Some(id), _, _) => BundleSelector::Id(*id),
            (_, Some(l), _) => BundleSelector::Label(l.clone()),
            (_, _, Some(b)) => BundleSelector::Branch(b.clone()),
            _ => bail!("say which bundle: give --bundle ID, --label NAME or --branch NAME"),
        })
    }

    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self.sub {
            Some(MountSub::New(a)) => return crate::cmd::worktree::run_new(*a, ctx).await,
            Some(MountSub::Recover(a)) => return crate::cmd::worktree::run_recover(a, ctx).await,
            None => {}
        }
        let repo = self.repo.clone().expect("clap requires --repo");
        let mount = self.mount.clone().expect("clap requires --mount");
        let meta = mount_point(&mount)?;
        raise_fd_limit();
        let sel = self.selector()?;
        if self.daemon {
            return daemonize_mount(ctx, !matches!(sel, BundleSelector::Id(_)));
        }
        let metrics = MountMetrics::new();
        let _server = start_metrics(self.metrics_addr, &metrics, ctx).await?;
        let dm = ctx.open().await?;
        let id = dm.resolve(&repo, &sel).await?;
        output::using_bundle(ctx.global.quiet || ctx.global.json, &sel, &id);
        let opts = VfsOptions {
            cache_dir: Some(
                self.cache
                    .clone()
                    .unwrap_or_else(|| ctx.home.cache_dir().join("chunks")),
            ),
            cache_size: self.cache_size.as_u64(),
            timeout: Duration::from_secs(self.timeout.max(1)),
            metrics: metrics.vfs(),
            ..VfsOptions::default()
        };
        let vfs = dm
            .vfs(&repo, &id, opts, tokio::runtime::Handle::current())
            .await?;
        let config = datamon_fuse::MountConfig {
            allow_other: self.allow_other,
            max_inodes: self.max_inodes,
            uid: meta.uid(),
            gid: meta.gid(),
            ..Default::default()
        };
        let mountpoint = mount.clone();
        let session = tokio::task::spawn_blocking(move || {
            datamon_fuse::mount_read_only(vfs, &mountpoint, &config)
        })
        .await?
        .with_context(|| format!("cannot mount on {}", mount.display()))?;
        let _gauge = metrics.track(MountMode::ReadOnly);
        output::line(format!(
            "Mounted bundle {id} of repo {repo} at {}",
            mount.display()
        ))?;
        let why = wait_for_stop(&session).await?;
        tracing::info!("{why}: unmounting {}", mount.display());
        let r = tokio::task::spawn_blocking(move || session.unmount()).await?;
        if let Err(e) = r {
            tracing::warn!("unmounting {}: {e}", mount.display());
        }
        if !ctx.global.quiet {
            eprintln!("Unmounted {} ({why})", mount.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, clap::Subcommand)]
enum MountSub {
    /// Mount a new, versioned, writable work tree (empty or from a bundle); commits on unmount
    New(Box<crate::cmd::worktree::NewArgs>),
    /// Commit and clean up work trees left by mounts that died or failed to commit
    Recover(crate::cmd::worktree::RecoverArgs),
}

/// Parses `--metrics-addr`.
pub(crate) fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    datamon_fuse::metrics::parse_addr(s)
}

/// Starts the `--metrics-addr` endpoint, if asked for, and says where it is (unless quiet).
/// Called before mounting, so that an address in use fails the command before anything is
/// mounted.
pub(crate) async fn start_metrics(
    addr: Option<SocketAddr>,
    metrics: &std::sync::Arc<MountMetrics>,
    ctx: &Ctx,
) -> anyhow::Result<Option<MetricsServer>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let server = MetricsServer::start(addr, metrics.clone())
        .await
        .with_context(|| {
            format!("cannot serve metrics on {addr}: choose a free port with --metrics-addr")
        })?;
    if !ctx.global.quiet {
        eprintln!("Serving metrics at http://{}/metrics", server.addr());
    }
    Ok(Some(server))
}

/// Checks that `dir` is a directory to mount on.
pub(crate) fn mount_point(dir: &std::path::Path) -> anyhow::Result<std::fs::Metadata> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mount point {} does not exist: create an empty directory to mount on (mkdir -p)",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("mount point {}", dir.display())),
    };
    if !meta.is_dir() {
        bail!(
            "mount point {} is not a directory: create an empty directory to mount on",
            dir.display()
        );
    }
    if std::fs::canonicalize(dir).is_ok_and(|abs| datamon_fuse::is_mounted(&abs)) {
        bail!(
            "{} is already a mount point: unmount it first (fusermount3 -u {0}) or choose another directory",
            dir.display()
        );
    }
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("mount point {}", dir.display()))?;
    if entries.next().is_some() {
        bail!(
            "mount point {} is not empty: mounting would hide its files; choose an empty directory",
            dir.display()
        );
    }
    Ok(meta)
}

/// Raises this process's limit of open files to the hard limit: a mount keeps every segment of
/// the chunk cache open (160 for a full 10 GiB cache, more for larger ones or shared caches).
pub(crate) fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::debug!("cannot raise the open files limit: {e}");
        }
    }
}

/// Waits for SIGINT, SIGTERM, or the end of the session (unmounted from outside).
async fn wait_for_stop(session: &datamon_fuse::Mount) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = tick.tick() => {
                if session.is_finished() {
                    return Ok("unmounted");
                }
            }
        }
    }
}

/// Starts this same command without `--daemon` in its own process group, waits until it prints
/// its "Mounted" line, prints that line and returns.
pub(crate) fn daemonize(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    daemonize_mount(ctx, false)
}

/// [`daemonize`]; with `announce`, also says `Using bundle: <ID>` on stderr (unless quiet) for
/// the bundle the background process mounted (its "Mounted bundle <ID> ..." line names it).
fn daemonize_mount(ctx: &Ctx, announce: bool) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the datamon executable")?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--daemon" && a != "--daemonize")
        .collect();
    let logs = ctx.home.dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log_path = logs.join(format!(
        "mount-{}-{}.log",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    ));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the background mount process")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading from the background mount process")?;
        if line.starts_with("Mounted ") {
            if announce && !ctx.global.quiet && !ctx.global.json {
                if let Some(id) = line
                    .strip_prefix("Mounted bundle ")
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    eprintln!("Using bundle: {id}");
                }
            }
            output::line(&line)?;
            if !ctx.global.quiet {
                eprintln!(
                    "Serving from process {} (log: {}); stop it with `kill {}` or `fusermount3 -u DIR`",
                    child.id(),
                    log_path.display(),
                    child.id()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    let status = child
        .wait()
        .context("waiting for the background mount process")?;
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    bail!(
        "the background mount process exited ({status}) before the mount was ready:\n{}",
        log_text.trim_end()
    )
}
