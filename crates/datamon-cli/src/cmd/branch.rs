use std::process::ExitCode;

use clap::{Args, Subcommand};
use datamon::{BranchName, BundleId, RepoName};
use serde::Serialize;

use crate::output::{self, BranchView, FormatArg};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum BranchCmd {
    /// Create a branch, empty or at a bundle
    Create(CreateArgs),
    /// List a repo's branches: name , head , updates
    List(ListArgs),
    /// Show a branch's head (exit code 2 if it does not exist); --history for every move
    Get(GetArgs),
    /// Delete a branch (its bundles stay)
    Delete(crate::cmd::delete::BranchDeleteArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    branch: BranchName,
    /// Start at this bundle
    #[arg(long)]
    bundle: Option<BundleId>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    repo: RepoName,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    branch: BranchName,
    #[arg(long)]
    history: bool,
}

#[derive(Serialize)]
struct BranchMoveView {
    head: Option<String>,
    previous: Option<String>,
    author: String,
    time: String,
}

fn opt(id: Option<BundleId>) -> Option<String> {
    id.map(|i| i.to_string())
}

impl BranchCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let json = ctx.global.json;
        let show = |out: &output::Printer, b: &datamon::Branch| -> anyhow::Result<()> {
            let v = BranchView::from(b);
            out.item(&v, || output::branch_line(&v))
        };
        match self {
            BranchCmd::Create(a) => {
                let out = FormatArg::default().printer(json, &output::BRANCH_FIELDS)?;
                let dm = ctx.open().await?;
                show(&out, &dm.create_branch(&a.repo, &a.branch, a.bundle).await?)?;
            }
            BranchCmd::List(a) => {
                let out = a.format.printer(json, &output::BRANCH_FIELDS)?;
                let dm = ctx.open().await?;
                for b in dm.list_branches(&a.repo).await? {
                    show(&out, &b)?;
                }
            }
            BranchCmd::Delete(a) => return crate::cmd::delete::branch(a, ctx).await,
            BranchCmd::Get(a) => {
                let dm = ctx.open().await?;
                dm.get_repo(&a.repo).await?;
                let history = dm.branch_history(&a.repo, &a.branch).await?;
                let shown = if a.history {
                    &history[..]
                } else {
                    &history[history.len() - 1..]
                };
                for r in shown {
                    if json {
                        output::json(&BranchMoveView {
                            head: opt(r.head),
                            previous: opt(r.previous),
                            author: r.author.clone(),
                            time: output::time(&r.time),
                        })?;
                    } else {
                        output::line(format!(
                            "{} , {} , {} , {}",
                            a.branch,
                            opt(r.head).unwrap_or_else(|| "-".into()),
                            output::time(&r.time),
                            r.author
                        ))?;
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
