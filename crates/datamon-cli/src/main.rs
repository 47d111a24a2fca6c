//! The `datamon` command line: parses, calls the `datamon` library, renders.
//!
//! stdout carries results (one line per item, or NDJSON with `--json`); stderr carries progress
//! bars and logs. Exit codes: 0 ok; 1 failure, or "they differ" for diffs; 2 "not found" (and
//! usage errors).

mod cmd;
mod config;
mod hints;
mod output;
mod progress;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{Home, DEFAULT_CONTEXT};

/// Exit code for "not found" (as the original datamon).
pub(crate) const EXIT_NOT_FOUND: u8 = 2;

/// datamon: Git for data. Versioned, deduplicated datasets in object storage, with no server.
#[derive(Debug, Parser)]
#[command(
    name = "datamon",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalOpts,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalOpts {
    /// Store URL: file:///abs/path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix
    /// (default: the current context's store, else the embedded store under $DATAMON_HOME)
    #[arg(long, global = true, env = "DATAMON_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,
    /// Context (named store) to use; see `datamon context list`
    #[arg(long, global = true, env = "DATAMON_CONTEXT", value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// Where datamon keeps its config, embedded store and caches
    #[arg(long, global = true, env = "DATAMON_HOME", value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Print machine-readable JSON (NDJSON for listings) on stdout
    #[arg(long, global = true, env = "DATAMON_JSON")]
    pub(crate) json: bool,
    /// No progress bars or summaries on stderr
    #[arg(long, short, global = true, env = "DATAMON_QUIET")]
    pub(crate) quiet: bool,
    /// More logs on stderr (-v info, -vv debug)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Files or objects transferred at once (default: 4 per CPU)
    #[arg(
        long,
        global = true,
        env = "DATAMON_CONCURRENCY",
        value_name = "N",
        alias = "concurrency-factor"
    )]
    pub(crate) concurrency: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create, list and inspect repos (datasets)
    #[command(subcommand)]
    Repo(cmd::repo::RepoCmd),
    /// Upload, list, download, diff and update bundles (versions of a repo)
    #[command(subcommand)]
    Bundle(Box<cmd::bundle::BundleCmd>),
    /// Name bundles with labels (latest, production...)
    #[command(subcommand)]
    Label(cmd::label::LabelCmd),
    /// Lines of bundles; uploads advance a branch (default: main)
    #[command(subcommand)]
    Branch(cmd::branch::BranchCmd),
    /// Many writers of one bundle: initialize, add splits from any number of jobs, commit once
    #[command(subcommand)]
    Diamond(cmd::diamond::DiamondCmd),
    /// Named stores to switch between (dev, prod...)
    #[command(subcommand)]
    Context(cmd::context::ContextCmd),
    /// Whole-store operations: copy a store into another (`store sync`)
    #[command(subcommand)]
    Store(cmd::store::StoreCmd),
    /// Encrypted stores: key files, and the passphrases and key files that open the store
    #[command(subcommand)]
    Key(cmd::key::KeyCmd),
    /// The ed25519 identity that signs this user's writes
    #[command(subcommand)]
    Identity(cmd::trust::IdentityCmd),
    /// Signed writes: the store's list of trusted writers, and what each may write
    #[command(subcommand)]
    Trust(cmd::trust::TrustCmd),
    /// Settings of this user (author name)
    #[command(subcommand)]
    Config(cmd::misc::ConfigCmd),
    /// Pipeline runs: execute and record steps, list, show and diff them ("what changed?")
    #[command(subcommand)]
    Run(Box<cmd::run::RunCmd>),
    /// In a pod: mount or download a step's inputs, then upload its outputs and record the run
    /// when the application container's command (run by `datamon sidecar exec`) ends
    Sidecar(Box<cmd::sidecar::SidecarCmd>),
    /// Init container: download and verify bundles into folders before a job starts (with retries)
    Localize(cmd::localize::LocalizeArgs),
    /// The history of a branch: bundles with messages, authors, stats and producing runs
    Log(cmd::lineage::LogArgs),
    /// Check the store: every referenced object exists; --read-data re-hashes every chunk
    Fsck(cmd::misc::FsckArgs),
    /// Reclaim the space of deleted bundles, with no lock: each run carries out the previous
    /// run's plan and plans the next (see docs/format/gc.md)
    Gc(cmd::gc::GcArgs),
    /// Browse repos, bundles, files, diffs, runs and lineage in a web browser (read-only)
    Web(cmd::web::WebArgs),
    /// Kubernetes CSI driver: bundles as volumes (see docs/kubernetes.md)
    Csi(cmd::csi::CsiArgs),
    /// Print the version
    Version,
    /// Print shell completions
    Completions(cmd::misc::CompletionsArgs),
    /// Write man pages into a directory
    #[command(hide = true)]
    Manpages(cmd::misc::ManpagesArgs),
}

/// What every command gets: options, the home directory, and how to open the store.
pub(crate) struct Ctx {
    pub(crate) global: GlobalOpts,
    pub(crate) home: Home,
}

impl Ctx {
    /// The store URL this invocation uses.
    pub(crate) fn store_url(&self) -> anyhow::Result<String> {
        if let Some(s) = &self.global.store {
            return Ok(s.clone());
        }
        let config = self.home.load()?;
        self.home
            .context_store(&config, &self.context_name(&config))
    }

    /// The replica of the context in use (none when `--store` names a store directly).
    pub(crate) fn replica_url(&self) -> anyhow::Result<Option<String>> {
        if self.global.store.is_some() {
            return Ok(None);
        }
        let config = self.home.load()?;
        Ok(self
            .home
            .context_replica(&config, &self.context_name(&config)))
    }

    /// The context in use: `--context`, else the config's current one, else `default`.
    fn context_name(&self, config: &config::Config) -> String {
        self.global
            .context
            .clone()
            .or(config.context.clone())
            .unwrap_or_else(|| DEFAULT_CONTEXT.into())
    }

    /// Backend settings for `object_store`, from the usual `AWS_*`, `GOOGLE_*` and `AZURE_*`
    /// environment variables and the selected AWS profile (see `datamon::cloud_env`).
    pub(crate) fn store_options() -> Vec<(String, String)> {
        datamon::cloud_env::store_options()
    }

    /// Who is acting: the configured author, else `$USER@host`.
    pub(crate) fn author(&self) -> String {
        if let Ok(Some(a)) = self.home.load().map(|c| c.author) {
            return a;
        }
        let login = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok();
        let user = datamon::exec::capture_user(login);
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        if host.is_empty() {
            user
        } else {
            format!("{user}@{host}")
        }
    }

    /// The context in use, unless `--store` names a store directly.
    fn context_entry(&self) -> anyhow::Result<Option<config::ContextEntry>> {
        if self.global.store.is_some() {
            return Ok(None);
        }
        let config = self.home.load()?;
        let name = self.context_name(&config);
        Ok(config.contexts.get(&name).cloned())
    }

    /// What opens an encrypted store: `DATAMON_PASSPHRASE`, `DATAMON_PASSPHRASE_FILE`,
    /// `DATAMON_KEY_FILE`, then the context's key file.
    /// Also the identity that signs writes (`DATAMON_SIGNING_KEY_FILE`, else the context's)
    /// and the context's pinned trust root.
    pub(crate) fn unlock(&self) -> anyhow::Result<datamon::Unlock> {
        let mut unlock = datamon::Unlock::from_env();
        let entry = self.context_entry()?;
        if let Some(f) = entry.as_ref().and_then(|c| c.key_file.clone()) {
            let secret = datamon::Secret::key_file(&f)
                .with_context(|| format!("cannot read the context's key file {}", f.display()))?;
            unlock.add(secret, f.display().to_string());
        }
        if std::env::var_os(datamon::ENV_SIGNING_KEY_FILE).is_none() {
            if let Some(f) = entry.as_ref().and_then(|c| c.signing_key.clone()) {
                let id = datamon::Identity::from_file(&f).with_context(|| {
                    format!("cannot read the context's signing key {}", f.display())
                })?;
                unlock.set_identity(id);
            }
        }
        if std::env::var_os(datamon::ENV_TRUST_ROOT).is_none() {
            if let Some(root) = entry.and_then(|c| c.trust_root) {
                unlock.pin_trust_root(root);
            }
        }
        Ok(unlock)
    }

    /// The identity file in use: `DATAMON_SIGNING_KEY_FILE`, else the context's.
    pub(crate) fn identity_file(&self) -> anyhow::Result<Option<PathBuf>> {
        if let Some(f) = std::env::var_os(datamon::ENV_SIGNING_KEY_FILE) {
            return Ok(Some(PathBuf::from(f)));
        }
        Ok(self.context_entry()?.and_then(|c| c.signing_key))
    }

    /// Pins `root` as the trust root of the context in use (when it is a named context with
    /// none yet).
    pub(crate) fn pin_trust_root(&self, root: &str) -> anyhow::Result<()> {
        if self.global.store.is_some() {
            return Ok(());
        }
        let mut config = self.home.load()?;
        let name = self.context_name(&config);
        if let Some(c) = config.contexts.get_mut(&name) {
            if c.trust_root.is_none() {
                c.trust_root = Some(root.to_owned());
                self.home.save(&config)?;
            }
        }
        Ok(())
    }

    /// Opens the store of a context being created (with its key file, if any, and no prompt);
    /// returns whether it is encrypted.
    pub(crate) async fn open_for_context(
        &self,
        key_file: Option<&Path>,
    ) -> anyhow::Result<(bool, Option<String>)> {
        let url = self.store_url()?;
        let mut unlock = datamon::Unlock::from_env();
        if let Some(f) = key_file {
            unlock.add(datamon::Secret::key_file(f)?, f.display().to_string());
        }
        let dm = self
            .open_with(&url, unlock)
            .await
            .with_context(|| format!("cannot open store {url}"))?;
        let s = dm.store();
        Ok((s.is_encrypted(), s.trust_root().map(str::to_owned)))
    }

    pub(crate) async fn open(&self) -> anyhow::Result<datamon::Datamon> {
        let url = self.store_url()?;
        let mut unlock = self.unlock()?;
        let dm = match self.open_with(&url, unlock.clone()).await {
            // Encrypted and nothing given: ask, in a terminal.
            Err(e)
                if unlock.is_empty()
                    && std::io::stdin().is_terminal()
                    && e.kind() == datamon::ErrorKind::PermissionDenied
                    && e.to_string().contains("is encrypted") =>
            {
                let p = cmd::key::prompt_passphrase(&format!("Passphrase for {url}: "), false)?;
                unlock.add(p, "the passphrase typed");
                self.open_with(&url, unlock).await
            }
            r => r,
        }
        .map_err(|e| {
            let what = match self.replica_url() {
                Ok(Some(r)) => format!("cannot open store {url} with replica {r}"),
                _ => format!("cannot open store {url}"),
            };
            anyhow::Error::from(e).context(what)
        })?;
        // A context created encrypted never talks to a plain store: whoever replaced the
        // store's config would otherwise receive this user's data in clear.
        if self.context_entry()?.is_some_and(|c| c.encrypted) && !dm.store().is_encrypted() {
            anyhow::bail!(
                "store {url} is not encrypted, but its context was created encrypted: its config \
                 was replaced (tampering?); nothing was read or written"
            );
        }
        Ok(dm)
    }

    async fn open_with(
        &self,
        url: &str,
        unlock: datamon::Unlock,
    ) -> datamon::Result<datamon::Datamon> {
        let opts = datamon::OpenOptions {
            author: Some(self.author()),
            cache_dir: Some(self.home.cache_dir()),
            store_options: Self::store_options(),
            concurrency: self.global.concurrency,
            unlock: Some(unlock),
        };
        match self.replica_url().ok().flatten() {
            Some(replica) => datamon::Datamon::open_with_replica(url, &replica, opts).await,
            None => datamon::Datamon::open(url, opts).await,
        }
    }

    pub(crate) fn progress(&self) -> progress::Bar {
        progress::Bar::new(!self.global.quiet && !self.global.json)
    }
}

/// jemalloc, with two arenas and unused pages given back within 5 s (the settings are compiled
/// in from `.cargo/config.toml`): with glibc's malloc, the arenas of the runtime's many threads
/// held about as much freed memory as a 100,000-file download's live heap (peak RSS 141 MiB for
/// a 69 MiB heap; 104-114 MiB with this allocator, `bench/memory.sh`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let home = match Home::new(cli.global.home.clone()) {
        Ok(h) => h,
        Err(e) => return report(&e),
    };
    let ctx = Ctx {
        global: cli.global,
        home,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(&anyhow::Error::from(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(cmd::run(cli.command, &ctx)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DATAMON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .init();
}

/// Prints an error and picks the exit code: 2 for "not found", 128 + the signal for an
/// interrupted `run exec`, 0 for a closed stdout pipe, else 1.
fn report(e: &anyhow::Error) -> ExitCode {
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
        }
    }
    // Exit 2 is for what was asked of the store (a repo, bundle, label, branch, run), as the
    // original datamon; a local file that is missing is a plain failure.
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<datamon::Error>().is_some_and(|d| {
            d.kind() == datamon::ErrorKind::NotFound
                && !matches!(d.root(), datamon::Error::Io { .. })
        })
    });
    // The library's messages already say what to do; show the outermost context and the cause.
    let mut msg = match e.chain().nth(1) {
        Some(_) => format!("{e:#}"),
        None => format!("{e}"),
    };
    // What to do next, in this CLI's terms (the library's messages name no commands or flags).
    if let Some(h) = hints::hint_for(e) {
        msg.push_str(&h);
    }
    eprintln!("error: {msg}");
    if let Some(i) = e
        .chain()
        .find_map(|c| c.downcast_ref::<cmd::run::Interrupted>())
    {
        return ExitCode::from(u8::try_from(128 + i.0).unwrap_or(1));
    }
    if not_found {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::FAILURE
    }
}
