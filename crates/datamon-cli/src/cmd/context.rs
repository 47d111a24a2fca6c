use std::process::ExitCode;

use crate::config::{ContextEntry, DEFAULT_CONTEXT};
use crate::output::{self, ContextView, FormatArg, Printer};
use crate::Ctx;
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Name a store (checks that it is reachable, writable and honours create-if-absent)
    Create(Box<CreateArgs>),
    /// List contexts: name , store (`*` marks the current one)
    List(ListArgs),
    /// Show a context (default: the current one); exit code 2 if it does not exist
    Get(GetArgs),
    /// Make a context the current one
    Use(UseArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Context name (as in the original datamon, `datamon context create --context NAME` works too)
    #[arg(long)]
    name: Option<String>,
    /// Store URL (file:///abs/path, s3://bucket/prefix, gs://..., az://...)
    #[arg(long = "store-url", alias = "url", value_name = "URL")]
    store_url: Option<String>,
    /// The original datamon's blob bucket: `--blob BUCKET` means `--store-url gs://BUCKET`
    #[arg(long, value_name = "BUCKET", conflicts_with = "store_url")]
    blob: Option<String>,
    /// The original datamon's metadata bucket: refused, the metadata lives in the store
    #[arg(long, value_name = "BUCKET", hide = true)]
    meta: Option<String>,
    /// The original datamon's versioned-metadata bucket: refused, as --meta
    #[arg(long, value_name = "BUCKET", hide = true)]
    vmeta: Option<String>,
    /// The original datamon's WAL bucket: refused, as --meta
    #[arg(long, value_name = "BUCKET", hide = true)]
    wal: Option<String>,
    /// The original datamon's read-log bucket: refused, as --meta
    #[arg(long, value_name = "BUCKET", hide = true)]
    read_log: Option<String>,
    /// A note about this context
    #[arg(long)]
    description: Option<String>,
    /// A replica store: every object is also written there, and reads fall back to it when
    /// the primary fails (checked like the store)
    #[arg(long, value_name = "URL")]
    replica: Option<String>,
    /// Also make it the current context
    #[arg(long = "use")]
    make_current: bool,
    /// Create the store encrypted (it must not exist yet): contents, names and messages are
    /// sealed, chunk ids keyed. Opened by a passphrase (DATAMON_PASSPHRASE, DATAMON_PASSPHRASE_FILE
    /// or a prompt) or by --key-file (see docs/security.md)
    #[arg(long)]
    encrypt: bool,
    /// The key file that opens the store, remembered by the context (with --encrypt: created
    /// when missing, and the store's first key)
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
    /// The identity file that signs this context's writes (`datamon identity generate`)
    #[arg(long, value_name = "PATH")]
    signing_key: Option<std::path::PathBuf>,
    /// With --encrypt: the name of the first key (default: the author)
    #[arg(long, value_name = "NAME", requires = "encrypt")]
    key_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Context name (default: the one --context or DATAMON_CONTEXT names, else the current one)
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// Context name
    #[arg(long)]
    name: String,
}

fn valid_name(n: &str) -> anyhow::Result<()> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("invalid context name {n:?}: use 1-64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// The store URL of `--blob BUCKET` (the original datamon's blob bucket, a bare GCS bucket
/// name): `gs://BUCKET`; a URL is kept as it is.
fn blob_url(blob: &str) -> String {
    if blob.contains("://") {
        blob.to_owned()
    } else {
        format!("gs://{}", blob.trim_matches('/'))
    }
}

impl CreateArgs {
    /// The name and store URL, from this command's options or the original datamon's.
    fn name_and_store(&self, ctx: &Ctx) -> anyhow::Result<(String, String)> {
        let store = self
            .store_url
            .clone()
            .or_else(|| self.blob.as_deref().map(blob_url));
        let legacy: Vec<&str> = [
            ("--meta", &self.meta),
            ("--vmeta", &self.vmeta),
            ("--wal", &self.wal),
            ("--read-log", &self.read_log),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(flag, _)| flag)
        .collect();
        if !legacy.is_empty() {
            let (flags, verb) = match legacy.split_last() {
                Some((last, [])) => ((*last).to_owned(), "is"),
                Some((last, rest)) => (format!("{} and {last}", rest.join(", ")), "are"),
                None => unreachable!("legacy is not empty"),
            };
            let hint = match &store {
                Some(s) => format!("--store-url {s}"),
                None => "--store-url gs://BUCKET/PREFIX".to_owned(),
            };
            bail!(
                "{flags} {verb} not used any more: datamon keeps metadata with the data, in one                  store, so there are no metadata, WAL or read-log buckets: drop {flags} and use                  {hint} (or --blob BUCKET alone, which means gs://BUCKET)"
            );
        }
        let Some(store) = store else {
            bail!("say where the context's store is: give --store-url URL (or --blob BUCKET for gs://BUCKET)");
        };
        let Some(name) = self.name.clone().or_else(|| ctx.global.context.clone()) else {
            bail!("give the context a name: --name NAME (or --context NAME)");
        };
        Ok((name, store))
    }
}

/// Whether `e` says a store is encrypted and no secret was given.
fn is_locked_without_secret(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<datamon::Error>().is_some_and(|d| {
            matches!(d.root(), datamon::Error::Store(datamon::StoreError::Locked { detail }) if detail.contains("is encrypted"))
        })
    })
}

impl ContextCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let mut config = ctx.home.load()?;
        let current = config
            .context
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTEXT.into());
        let json = ctx.global.json;
        let show = |out: &Printer,
                    name: &str,
                    store: &str,
                    description: Option<&str>,
                    replica: Option<&str>|
         -> anyhow::Result<()> {
            let v = ContextView {
                name,
                store,
                current: name == current,
                description,
                replica,
            };
            out.item(&v, || output::context_line(&v))
        };
        match self {
            ContextCmd::Create(a) => {
                let out = FormatArg::default().printer(json, &output::CONTEXT_FIELDS)?;
                let (name, store_url) = a.name_and_store(ctx)?;
                valid_name(&name)?;
                if config.contexts.contains_key(&name) {
                    bail!(
                        "context {name:?} already exists: see `datamon context get --name {name}`"
                    );
                }
                let probe = Ctx {
                    global: crate::GlobalOpts {
                        store: Some(store_url.clone()),
                        ..ctx.global.clone()
                    },
                    home: ctx.home.clone(),
                };
                // Reachable, writable, create-if-absent: the error names the check that failed.
                let store_options = Ctx::store_options();
                let opts = datamon::OpenOptions {
                    store_options,
                    ..Default::default()
                };
                datamon::Datamon::check_store(&store_url, &opts)
                    .await
                    .with_context(|| {
                        format!("the store of the new context cannot be used: {store_url}")
                    })?;
                if let Some(replica) = &a.replica {
                    datamon::Datamon::check_store(replica, &opts)
                        .await
                        .with_context(|| {
                            format!("the replica of the new context cannot be used: {replica}")
                        })?;
                }
                let signing_key = match &a.signing_key {
                    Some(f) => {
                        datamon::Identity::from_file(f)?;
                        Some(std::path::absolute(f)?)
                    }
                    None => None,
                };
                let key_file = match &a.key_file {
                    Some(f) if f.is_relative() => Some(std::env::current_dir()?.join(f)),
                    f => f.clone(),
                };
                if a.encrypt {
                    if a.replica.is_some() {
                        bail!("--encrypt with --replica: create the encrypted store first, then sync it into the replica with `datamon store sync`");
                    }
                    let secret = super::key::new_secret(
                        key_file.as_deref(),
                        &[super::key::ENV_NEW_PASSPHRASE, datamon::ENV_PASSPHRASE],
                        &[
                            super::key::ENV_NEW_PASSPHRASE_FILE,
                            datamon::ENV_PASSPHRASE_FILE,
                        ],
                        &format!("the new store {store_url}"),
                    )?;
                    let author = ctx.author();
                    let o = datamon::OpenOptions {
                        author: Some(author.clone()),
                        store_options: opts.store_options.clone(),
                        ..Default::default()
                    };
                    let key_name = a.key_name.clone().unwrap_or(author);
                    datamon::Datamon::create_encrypted(&store_url, &secret, &key_name, o)
                        .await
                        .context("cannot create the encrypted store")?;
                }
                let opened = match &a.replica {
                    Some(replica) => {
                        let o = datamon::OpenOptions {
                            store_options: opts.store_options.clone(),
                            ..Default::default()
                        };
                        datamon::Datamon::open_with_replica(&store_url, replica, o)
                            .await
                            .map(|d| {
                                let s = d.store();
                                (s.is_encrypted(), s.trust_root().map(str::to_owned))
                            })
                            .map_err(anyhow::Error::from)
                    }
                    None if a.encrypt => Ok((true, None)),
                    None => probe.open_for_context(key_file.as_deref()).await,
                };
                let (encrypted, trust_root) = match opened {
                    Ok(o) => o,
                    // Naming an encrypted store needs no key yet; every command will.
                    Err(e) if is_locked_without_secret(&e) => {
                        eprintln!(
                            "note: the store is encrypted: its commands need a passphrase \
                             (DATAMON_PASSPHRASE, DATAMON_PASSPHRASE_FILE, a prompt) or a key \
                             file (--key-file)"
                        );
                        (true, None)
                    }
                    Err(e) => return Err(e.context("the store of the new context cannot be used")),
                };
                config.contexts.insert(
                    name.clone(),
                    ContextEntry {
                        store: store_url.clone(),
                        replica: a.replica.clone(),
                        description: a.description.clone(),
                        encrypted,
                        key_file,
                        signing_key,
                        trust_root,
                    },
                );
                if a.make_current {
                    config.context = Some(name.clone());
                }
                ctx.home.save(&config)?;
                show(
                    &out,
                    &name,
                    &store_url,
                    a.description.as_deref(),
                    a.replica.as_deref(),
                )?;
            }
            ContextCmd::List(a) => {
                let out = a.format.printer(json, &output::CONTEXT_FIELDS)?;
                if !config.contexts.contains_key(DEFAULT_CONTEXT) {
                    show(
                        &out,
                        DEFAULT_CONTEXT,
                        &ctx.home.embedded_store(),
                        Some("the embedded local store"),
                        None,
                    )?;
                }
                for (name, c) in &config.contexts {
                    show(
                        &out,
                        name,
                        &c.store,
                        c.description.as_deref(),
                        c.replica.as_deref(),
                    )?;
                }
            }
            ContextCmd::Get(a) => {
                let out = a.format.printer(json, &output::CONTEXT_FIELDS)?;
                let name = a
                    .name
                    .or_else(|| ctx.global.context.clone())
                    .unwrap_or_else(|| current.clone());
                let store = ctx.home.context_store(&config, &name).map_err(|e| {
                    e.context(datamon::Error::InvalidInput(format!(
                        "context {name:?} not found"
                    )))
                });
                match store {
                    Ok(store) => {
                        let d = config
                            .contexts
                            .get(&name)
                            .and_then(|c| c.description.as_deref());
                        let r = config
                            .contexts
                            .get(&name)
                            .and_then(|c| c.replica.as_deref());
                        show(&out, &name, &store, d, r)?;
                    }
                    Err(e) => {
                        eprintln!("error: {}", e.root_cause());
                        return Ok(ExitCode::from(crate::EXIT_NOT_FOUND));
                    }
                }
            }
            ContextCmd::Use(a) => {
                ctx.home.context_store(&config, &a.name)?;
                config.context = Some(a.name.clone());
                ctx.home.save(&config)?;
                if !json {
                    output::line(format!("Using context {}", a.name))?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
