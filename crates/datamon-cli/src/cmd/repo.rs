use std::process::ExitCode;

use bytesize::ByteSize;
use clap::{Args, Subcommand};
use datamon::{Datamon, Repo, RepoName};

use crate::output::{self, FormatArg, Printer, RepoSizeView, RepoView, RepoWithSizeView};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum RepoCmd {
    /// Create a repo
    Create(CreateArgs),
    /// List repos: name , description , creator , created
    List(ListArgs),
    /// Show one repo (exit code 2 if it does not exist)
    Get(GetArgs),
    /// Delete a repo and all its bundles (recorded; data goes at the next gc); needs --yes
    Delete(crate::cmd::delete::RepoDeleteArgs),
    /// Rename a repo (its records are copied; data is shared)
    Rename(crate::cmd::delete::RepoRenameArgs),
    /// Retention: keep the bundles the rules name (and branch heads), delete the rest
    Squash(crate::cmd::delete::SquashArgs),
    /// Remove paths from every bundle of a repo (personal data, a leaked secret): the bundles
    /// that hold them are rewritten without them, their refs move, the old ones are deleted;
    /// `datamon gc` then removes the bytes. Needs --yes
    RemovePath(crate::cmd::delete::RemovePathArgs),
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
pub struct ListArgs {
    /// Also show each repo's size (see `repo get --with-size`)
    #[arg(long)]
    with_size: bool,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long)]
    repo: RepoName,
    /// Also show the repo's size: each bundle's logical bytes and their total, the files and
    /// bytes of the latest bundle, and the bytes all its uploads stored
    #[arg(long)]
    with_size: bool,
    #[command(flatten)]
    format: FormatArg,
}

impl RepoCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let json = ctx.global.json;
        match self {
            RepoCmd::Create(a) => {
                let dm = ctx.open().await?;
                let r = dm.create_repo(&a.repo, &a.description).await?;
                output::result(json, &RepoView::from(&r), || {
                    format!("Created repo {}", r.name)
                })?;
            }
            RepoCmd::List(a) => {
                let out = a.format.printer(json, fields(a.with_size))?;
                let dm = ctx.open().await?;
                for r in dm.list_repos().await? {
                    show(
                        &dm,
                        &out,
                        &r,
                        a.with_size,
                        a.format.format.is_some() || json,
                    )
                    .await?;
                }
            }
            RepoCmd::Delete(a) => return crate::cmd::delete::repo(a, ctx).await,
            RepoCmd::Rename(a) => return crate::cmd::delete::rename(a, ctx).await,
            RepoCmd::Squash(a) => return crate::cmd::delete::squash(a, ctx).await,
            RepoCmd::RemovePath(a) => return crate::cmd::delete::remove_path(a, ctx).await,
            RepoCmd::Get(a) => {
                let out = a.format.printer(json, fields(a.with_size))?;
                let dm = ctx.open().await?;
                let r = dm.get_repo(&a.repo).await?;
                show(
                    &dm,
                    &out,
                    &r,
                    a.with_size,
                    a.format.format.is_some() || json,
                )
                .await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn fields(with_size: bool) -> &'static output::Fields {
    if with_size {
        &output::REPO_SIZE_FIELDS
    } else {
        &output::REPO_FIELDS
    }
}

/// Prints one repo; with `with_size`, its size too: in the JSON view (and so `--format`) as
/// `size`, as text the way the original datamon did (each bundle's size, then the grand total)
/// followed by the latest bundle's size and the stored bytes. `one_line`: JSON or `--format`.
async fn show(
    dm: &Datamon,
    out: &Printer,
    r: &Repo,
    with_size: bool,
    one_line: bool,
) -> anyhow::Result<()> {
    if !with_size {
        return out.item(&RepoView::from(r), || output::repo_line(r));
    }
    let bundles = dm.list_bundles(&r.name).await?;
    let size = RepoSizeView::of(&bundles);
    if one_line {
        return out.item(
            &RepoWithSizeView {
                repo: RepoView::from(r),
                size,
            },
            String::new,
        );
    }
    output::line(output::repo_line(r))?;
    output::line("All bundles with their total size:")?;
    for b in &bundles {
        output::line(format!(
            "{} , {}, {}, {} ({})",
            b.id,
            b.message,
            output::time(&b.created_at),
            b.stats.bytes,
            ByteSize(b.stats.bytes)
        ))?;
    }
    output::line(format!(
        "Grand total for repo {:?}: {} ({})",
        r.name.as_str(),
        size.total_bytes,
        ByteSize(size.total_bytes)
    ))?;
    match &size.latest_bundle {
        Some(id) => output::line(format!(
            "Latest bundle {id}: {} files, {} ({}); stored for {} bundles: {} ({})",
            size.files,
            size.bytes,
            ByteSize(size.bytes),
            size.bundles,
            size.stored_bytes,
            ByteSize(size.stored_bytes)
        )),
        None => output::line("No bundles yet"),
    }
}
