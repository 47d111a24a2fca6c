//! Mutable mounts: `datamon bundle mount new`, `datamon bundle commit`, `datamon bundle mount
//! recover`.
//!
//! A mutable mount is a work tree (see `datamon::worktree`) in
//! `$DATAMON_HOME/scratch/<mount path with / as _>-<hash of the path>/`, whose `files/` directory is served on the
//! mount point by a passthrough FUSE filesystem (`datamon_fuse::mount_work_tree`), so programs
//! get the full semantics of the local filesystem, while the files of the base bundle stay in
//! the store until they are written (copy-on-write placeholders). The serving process commits on `--autosave` ticks and once more on SIGINT/SIGTERM (after unmounting), if
//! anything changed; `datamon bundle commit --mount DIR` commits from another process. The
//! scratch area is removed only after a successful final commit; otherwise `datamon bundle mount
//! recover` finishes the work.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use datamon::vfs::VfsOptions;
use datamon::worktree::{WorkTree, WorkTreeState};
use datamon::{BranchName, BundleId, BundleSelector, LabelName, RepoName};
use datamon_fuse::metrics::{CommitResult, MountMetrics, MountMode};

use crate::output;
use crate::Ctx;

/// `datamon bundle mount new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    #[arg(long)]
    repo: RepoName,
    /// Empty directory to mount on
    #[arg(long, value_name = "DIR")]
    mount: PathBuf,
    /// Message of the bundles committed from this mount
    #[arg(long)]
    message: String,
    /// Start from this bundle (default: empty)
    #[arg(long, conflicts_with = "from_label")]
    from_bundle: Option<BundleId>,
    /// Start from the bundle this label names
    #[arg(long)]
    from_label: Option<LabelName>,
    /// Branch the commits advance (default: main)
    #[arg(long)]
    branch: Option<BranchName>,
    /// Label each commit sets
    #[arg(long)]
    label: Option<LabelName>,
    /// Commit every DURATION if something changed (e.g. 30s, 5m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = crate::cmd::parse::parse_duration)]
    autosave: Option<Duration>,
    /// Return once the mount is ready, serving it from a background process
    #[arg(long, visible_alias = "daemonize")]
    daemon: bool,
    /// Chunk cache for reading the base bundle's files (default: $DATAMON_HOME/cache/chunks)
    #[arg(long, value_name = "DIR", env = "DATAMON_CACHE")]
    cache: Option<PathBuf>,
    /// Let other users use the mount (FUSE allow_other; permissions are still checked)
    #[arg(long)]
    allow_other: bool,
    /// Serve Prometheus metrics (reads of the base bundle, commits) at
    /// http://HOST:PORT/metrics; `:PORT` listens on every interface
    #[arg(long, value_name = "HOST:PORT", value_parser = crate::cmd::mount::parse_metrics_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `datamon bundle commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The mutable mount's directory
    #[arg(long, value_name = "DIR")]
    mount: PathBuf,
    /// Message of this bundle (default: the mount's)
    #[arg(long)]
    message: Option<String>,
}

/// `datamon bundle mount recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Only the work tree of this mount point (default: every unfinished one)
    #[arg(long, value_name = "DIR")]
    mount: Option<PathBuf>,
}

/// The mount point as one path (symlinks resolved), so one directory has one scratch area.
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("mount point {}", p.display()))
}

/// The scratch directory of a mount point.
fn scratch_for(ctx: &Ctx, mount: &Path) -> PathBuf {
    scratch_dir(&ctx.home.dir.join("scratch"), mount)
}

/// The scratch directory of `mount` under `root`: the mount path made readable (`/` as `_`,
/// at most 200 bytes) and a hash of the exact path, so `/mnt/a_b` and `/mnt/a/b` never share
/// one. A scratch area of an older datamon (named without the hash) is still found when its
/// state says it belongs to this mount point.
fn scratch_dir(root: &Path, mount: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let readable: String = mount
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    let hash = datamon::Hash::of(mount.as_os_str().as_bytes()).to_hex();
    let mut short = readable.clone();
    while short.len() > 200 {
        short.pop();
    }
    let dir = root.join(format!("{short}-{}", &hash[..16]));
    let legacy = root.join(&readable);
    if !dir.exists()
        && readable.len() <= 255
        && WorkTree::open(&legacy)
            .ok()
            .and_then(|w| w.state().ok())
            .and_then(|s| s.mountpoint)
            .is_some_and(|m| m == mount)
    {
        return legacy;
    }
    dir
}

fn pid_alive(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("mount.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
}

pub async fn run_new(a: NewArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let meta = crate::cmd::mount::mount_point(&a.mount)?;
    crate::cmd::mount::raise_fd_limit();
    let mount = absolute(&a.mount)?;
    if std::fs::read_dir(&mount).is_ok_and(|mut d| d.next().is_some()) {
        bail!("mount point {} is not empty", mount.display());
    }
    if a.daemon {
        return crate::cmd::mount::daemonize(ctx);
    }
    let scratch = scratch_for(ctx, &mount);
    if scratch.exists() {
        bail!(
            "unfinished work of an earlier mount on {} is in {}: commit it with `datamon bundle mount recover --mount {}`",
            mount.display(),
            scratch.display(),
            mount.display()
        );
    }
    let metrics = MountMetrics::new();
    let _server = crate::cmd::mount::start_metrics(a.metrics_addr, &metrics, ctx).await?;
    let dm = ctx.open().await?;
    let base = match (&a.from_bundle, &a.from_label) {
        (Some(id), _) => Some(dm.resolve(&a.repo, &BundleSelector::Id(*id)).await?),
        (_, Some(l)) => {
            let sel = BundleSelector::Label(l.clone());
            let id = dm.resolve(&a.repo, &sel).await?;
            output::using_bundle(ctx.global.quiet || ctx.global.json, &sel, &id);
            Some(id)
        }
        _ => None,
    };
    let state = WorkTreeState {
        base,
        branch: a.branch,
        label: a.label,
        mountpoint: Some(mount.clone()),
        ..WorkTreeState::new(a.repo.clone(), &a.message)
    };
    let bar = ctx.progress();
    let wt = dm.worktree_create(&scratch, state, &bar).await?;
    crate::config::write_atomic(
        &scratch.join("mount.pid"),
        std::process::id().to_string().as_bytes(),
    )?;
    // Placeholders of the base bundle are read through a read-only view of it.
    let vfs = match &wt.state()?.base {
        Some(id) => {
            let opts = VfsOptions {
                cache_dir: Some(
                    a.cache
                        .clone()
                        .unwrap_or_else(|| ctx.home.cache_dir().join("chunks")),
                ),
                metrics: metrics.vfs(),
                ..VfsOptions::default()
            };
            Some(
                dm.vfs(&a.repo, id, opts, tokio::runtime::Handle::current())
                    .await?,
            )
        }
        None => None,
    };
    let config = datamon_fuse::MountConfig {
        allow_other: a.allow_other,
        uid: meta.uid(),
        gid: meta.gid(),
        ..Default::default()
    };
    let (files, mountpoint) = (wt.files(), mount.clone());
    let mounted = tokio::task::spawn_blocking(move || {
        datamon_fuse::mount_work_tree(&files, vfs, &mountpoint, &config)
    })
    .await?;
    let session = match mounted {
        Ok(s) => s,
        Err(e) => {
            // Nothing was changed yet: leave no unfinished work behind.
            let _ = wt.remove();
            return Err(e).with_context(|| format!("cannot mount on {}", mount.display()));
        }
    };
    let gauge = metrics.track(MountMode::Versioned);
    output::line(format!(
        "Mounted a work tree of repo {} at {} (scratch {})",
        a.repo,
        mount.display(),
        scratch.display()
    ))?;

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let period = a.autosave.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let mut autosave = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = check.tick() => {
                if session.is_finished() || !datamon_fuse::is_mounted(&mount) {
                    break "unmounted";
                }
            }
            _ = autosave.tick() => {
                match dm.worktree_commit(&wt, None, false, &datamon::NoProgress).await {
                    Ok(Some(b)) => {
                        metrics.commit(CommitResult::Committed);
                        output::line(format!("Uploaded bundle id:{}", b.id))?;
                    }
                    Ok(None) => metrics.commit(CommitResult::Unchanged),
                    Err(e) => {
                        metrics.commit(CommitResult::Failed);
                        tracing::error!("autosave failed (will retry): {e}");
                    }
                }
            }
        }
    };
    tracing::info!("{why}: unmounting {}", mount.display());
    tokio::task::spawn_blocking(move || session.unmount())
        .await?
        .with_context(|| format!("cannot unmount {}", mount.display()))?;
    drop(gauge);
    finish(&dm, wt, ctx).await
}

/// Commits what changed since the last commit and removes the scratch area.
async fn finish(dm: &datamon::Datamon, wt: WorkTree, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let bar = ctx.progress();
    match dm.worktree_commit(&wt, None, false, &bar).await {
        Ok(Some(b)) => output::line(format!("Uploaded bundle id:{}", b.id))?,
        Ok(None) => {
            if !ctx.global.quiet {
                eprintln!("No changes since the last commit");
            }
        }
        Err(e) => {
            eprintln!(
                "error: the final commit failed: {e}\nYour work is kept in {}; finish it with `datamon bundle mount recover`",
                wt.dir().display()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    let dir = wt.dir().to_owned();
    wt.remove()
        .with_context(|| format!("cannot remove the scratch area {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_commit(a: CommitArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mount = absolute(&a.mount)?;
    let scratch = scratch_for(ctx, &mount);
    let wt = WorkTree::open(&scratch).with_context(|| {
        format!(
            "{} is not a mutable mount of this datamon home (see `datamon bundle mount new`)",
            mount.display()
        )
    })?;
    let dm = ctx.open().await?;
    let bar = ctx.progress();
    let b = dm
        .worktree_commit(&wt, a.message.as_deref(), true, &bar)
        .await?
        .context("nothing was committed")?;
    output::line(format!("Uploaded bundle id:{}", b.id))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_recover(a: RecoverArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let root = ctx.home.dir.join("scratch");
    let dirs: Vec<PathBuf> = match &a.mount {
        Some(m) => vec![scratch_for(ctx, &absolute(m)?)],
        None => match std::fs::read_dir(&root) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        },
    };
    let dm = ctx.open().await?;
    let mut code = ExitCode::SUCCESS;
    let mut found = 0;
    for dir in dirs {
        let Ok(wt) = WorkTree::open(&dir) else {
            continue;
        };
        if pid_alive(&dir) {
            eprintln!(
                "skipping {}: its mount is still being served",
                dir.display()
            );
            continue;
        }
        found += 1;
        if let Some(m) = wt.state()?.mountpoint {
            if datamon_fuse::is_mounted(&m) {
                datamon_fuse::unmount_path(&m)
                    .with_context(|| format!("cannot unmount {}", m.display()))?;
            }
        }
        if finish(&dm, wt, ctx).await? != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    if found == 0 && !ctx.global.quiet {
        eprintln!("Nothing to recover");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_never_share_a_scratch_area() {
        let root = Path::new("/nonexistent-scratch");
        let a = scratch_dir(root, Path::new("/mnt/a_b"));
        let b = scratch_dir(root, Path::new("/mnt/a/b"));
        assert_ne!(a, b);
        assert_eq!(a, scratch_dir(root, Path::new("/mnt/a_b")), "stable");
        assert!(a.starts_with(root));
        // A long mount path still gives a valid file name.
        let long = format!("/{}", "x/".repeat(400));
        let name = scratch_dir(root, Path::new(&long));
        assert!(name.file_name().unwrap().len() <= 255);
    }
}
