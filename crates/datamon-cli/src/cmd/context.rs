use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::{ContextEntry, DEFAULT_CONTEXT};
use crate::output;
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Name a store (checks that it is reachable, writable and honours create-if-absent)
    Create(CreateArgs),
    /// List contexts: name , store (`*` marks the current one)
    List,
    /// Show a context (default: the current one); exit code 2 if it does not exist
    Get(GetArgs),
    /// Make a context the current one
    Use(UseArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Context name
    #[arg(long)]
    name: String,
    /// Store URL (file:///abs/path, s3://bucket/prefix, gs://..., az://...)
    #[arg(long = "store-url", alias = "url", value_name = "URL")]
    store_url: String,
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
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Context name (default: the current one)
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    /// Context name
    #[arg(long)]
    name: String,
}

#[derive(Serialize)]
struct ContextView<'a> {
    name: &'a str,
    store: &'a str,
    current: bool,
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<&'a str>,
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

impl ContextCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let mut config = ctx.home.load()?;
        let current = config
            .context
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTEXT.into());
        let json = ctx.global.json;
        let show = |name: &str,
                    store: &str,
                    description: Option<&str>,
                    replica: Option<&str>|
         -> anyhow::Result<()> {
            if json {
                output::json(&ContextView {
                    name,
                    store,
                    current: name == current,
                    description,
                    replica,
                })
            } else {
                let mark = if name == current { "*" } else { " " };
                match replica {
                    Some(r) => output::line(format!("{mark} {name} , {store} , replica {r}")),
                    None => output::line(format!("{mark} {name} , {store}")),
                }
            }
        };
        match self {
            ContextCmd::Create(a) => {
                valid_name(&a.name)?;
                if config.contexts.contains_key(&a.name) {
                    bail!(
                        "context {:?} already exists: see `datamon context get --name {}`",
                        a.name,
                        a.name
                    );
                }
                let probe = Ctx {
                    global: crate::GlobalOpts {
                        store: Some(a.store_url.clone()),
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
                datamon::Datamon::check_store(&a.store_url, &opts)
                    .await
                    .with_context(|| {
                        format!(
                            "the store of the new context cannot be used: {}",
                            a.store_url
                        )
                    })?;
                if let Some(replica) = &a.replica {
                    datamon::Datamon::check_store(replica, &opts)
                        .await
                        .with_context(|| {
                            format!("the replica of the new context cannot be used: {replica}")
                        })?;
                }
                let opened = match &a.replica {
                    Some(replica) => {
                        let o = datamon::OpenOptions {
                            store_options: opts.store_options.clone(),
                            ..Default::default()
                        };
                        datamon::Datamon::open_with_replica(&a.store_url, replica, o)
                            .await
                            .map(drop)
                            .map_err(anyhow::Error::from)
                    }
                    None => probe.open().await.map(drop),
                };
                opened.context("the store of the new context cannot be used")?;
                config.contexts.insert(
                    a.name.clone(),
                    ContextEntry {
                        store: a.store_url.clone(),
                        replica: a.replica.clone(),
                        description: a.description.clone(),
                    },
                );
                if a.make_current {
                    config.context = Some(a.name.clone());
                }
                ctx.home.save(&config)?;
                show(
                    &a.name,
                    &a.store_url,
                    a.description.as_deref(),
                    a.replica.as_deref(),
                )?;
            }
            ContextCmd::List => {
                if !config.contexts.contains_key(DEFAULT_CONTEXT) {
                    show(
                        DEFAULT_CONTEXT,
                        &ctx.home.embedded_store(),
                        Some("the embedded local store"),
                        None,
                    )?;
                }
                for (name, c) in &config.contexts {
                    show(
                        name,
                        &c.store,
                        c.description.as_deref(),
                        c.replica.as_deref(),
                    )?;
                }
            }
            ContextCmd::Get(a) => {
                let name = a.name.unwrap_or_else(|| current.clone());
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
                        show(&name, &store, d, r)?;
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
