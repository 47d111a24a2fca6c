use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory, Subcommand};
use serde::Serialize;

use crate::output;
use crate::{Cli, Ctx};

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Set the author recorded in bundles and refs
    Set(ConfigSetArgs),
    /// Show the settings
    Get,
}

#[derive(Debug, Args)]
pub struct ConfigSetArgs {
    /// e.g. "Ada Lovelace <ada@example.com>"
    #[arg(long, alias = "name")]
    author: String,
}

impl ConfigCmd {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let mut config = ctx.home.load()?;
        match self {
            ConfigCmd::Set(a) => {
                config.author = Some(a.author);
                ctx.home.save(&config)?;
            }
            ConfigCmd::Get => {
                #[derive(Serialize)]
                struct View {
                    home: String,
                    author: String,
                    context: String,
                    store: String,
                }
                let v = View {
                    home: ctx.home.dir.display().to_string(),
                    author: ctx.author(),
                    context: config
                        .context
                        .clone()
                        .unwrap_or_else(|| crate::config::DEFAULT_CONTEXT.into()),
                    store: ctx.store_url()?,
                };
                if ctx.global.json {
                    output::json(&v)?;
                } else {
                    output::line(format!(
                        "home: {}\nauthor: {}\ncontext: {}\nstore: {}",
                        v.home, v.author, v.context, v.store
                    ))?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Also read every pack and re-hash every chunk
    #[arg(long)]
    read_data: bool,
}

impl FsckArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let dm = ctx.open().await?;
        let bar = ctx.progress();
        let r = dm.fsck(self.read_data, &bar).await?;
        if ctx.global.json {
            output::json(&r)?;
        } else {
            for p in &r.problems {
                output::line(format!("problem: {p}"))?;
            }
            output::line(format!(
                "checked {} repos, {} bundles, {} trees, {} chunks in {} packs{}; {} unindexed packs (reusable); {}",
                r.repos,
                r.bundles,
                r.trees,
                r.chunks,
                r.packs,
                if self.read_data { format!(", {} blobs re-hashed", r.blobs_verified) } else { String::new() },
                r.unindexed_packs,
                if r.is_ok() { "no problems".to_owned() } else { format!("{} PROBLEMS", r.problems.len()) }
            ))?;
        }
        Ok(if r.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

pub fn version(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if ctx.global.json {
        output::json(&serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "format": datamon::types::FORMAT_VERSION,
        }))?;
    } else {
        output::line(format!(
            "datamon {} (store format {})",
            env!("CARGO_PKG_VERSION"),
            datamon::types::FORMAT_VERSION
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        clap_complete::generate(
            self.shell,
            &mut Cli::command(),
            "datamon",
            &mut std::io::stdout(),
        );
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Directory to write datamon*.1 into
    dir: PathBuf,
}

impl ManpagesArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        clap_mangen::generate_to(Cli::command(), &self.dir).context("cannot write man pages")?;
        Ok(ExitCode::SUCCESS)
    }
}
