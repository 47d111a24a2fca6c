use std::process::ExitCode;

use clap::{Args, Subcommand};
use datamon::RepoName;

use crate::output::{self, RepoView};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum RepoCmd {
    /// Create a repo
    Create(CreateArgs),
    /// List repos: name , description , creator , created
    List,
    /// Show one repo (exit code 2 if it does not exist)
    Get(GetArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Repo name: letters, digits, '-', '_', '.'
    #[arg(long)]
    repo: RepoName,
    /// What the repo holds
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long)]
    repo: RepoName,
}

impl RepoCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let dm = ctx.open().await?;
        match self {
            RepoCmd::Create(a) => {
                let r = dm.create_repo(&a.repo, &a.description).await?;
                output::result(ctx.global.json, &RepoView::from(&r), || {
                    format!("Created repo {}", r.name)
                })?;
            }
            RepoCmd::List => {
                for r in dm.list_repos().await? {
                    output::result(ctx.global.json, &RepoView::from(&r), || {
                        output::repo_line(&r)
                    })?;
                }
            }
            RepoCmd::Get(a) => {
                let r = dm.get_repo(&a.repo).await?;
                output::result(ctx.global.json, &RepoView::from(&r), || {
                    output::repo_line(&r)
                })?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
