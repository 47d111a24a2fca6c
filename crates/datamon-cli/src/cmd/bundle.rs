use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bytesize::ByteSize;
use clap::{Args, Subcommand};
use datamon::{
    BranchName, BundleId, BundleSelector, Datamon, DownloadOptions, LabelName, RepoName,
};
use serde::Serialize;

use crate::output::{self, BundleView, FileView, FormatArg};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Upload a folder as a new bundle; the last line printed is `Uploaded bundle id:<ID>`
    Upload(UploadArgs),
    /// List a repo's bundles, oldest first: id , time , message (`list files`: a bundle's files)
    List(ListArgs),
    /// Show one bundle (default: the latest); exit code 2 if it does not exist
    Get(GetArgs),
    /// Download a bundle into a folder (`download file`: one file)
    Download(DownloadArgs),
    /// Compare two bundles, or a bundle (default: the latest) and a folder: `A path`, `D path`,
    /// `M path`; exit 1 if they differ
    Diff(DiffArgs),
    /// Bring a folder to exactly a bundle's content, rewriting only what differs
    Update(UpdateArgs),
    /// Which runs produced a bundle and from which inputs (upstream), which runs read it (downstream)
    Lineage(crate::cmd::lineage::LineageArgs),
    /// Mount a bundle as a read-only filesystem (FUSE) until SIGINT/SIGTERM or unmount
    Mount(Box<crate::cmd::mount::MountArgs>),
    /// Commit a mutable mount's current state as a new bundle, without unmounting
    Commit(crate::cmd::worktree::CommitArgs),
    /// Delete a bundle (recorded; its data goes at the next gc); labels and branches naming it
    /// block it unless --remove-refs
    Delete(crate::cmd::delete::BundleDeleteArgs),
}

/// Which bundle: one of --bundle, --label, --branch.
#[derive(Debug, Args)]
pub struct Selector {
    /// Bundle id
    #[arg(long, conflicts_with_all = ["label", "branch"])]
    bundle: Option<BundleId>,
    /// The bundle a label names
    #[arg(long, conflicts_with = "branch")]
    label: Option<LabelName>,
    /// The head of a branch
    #[arg(long)]
    branch: Option<BranchName>,
}

impl Selector {
    fn get(&self, default_latest: bool) -> anyhow::Result<BundleSelector> {
        Ok(match (&self.bundle, &self.label, &self.branch) {
            (Some(id), _, _) => BundleSelector::Id(*id),
            (_, Some(l), _) => BundleSelector::Label(l.clone()),
            (_, _, Some(b)) => BundleSelector::Branch(b.clone()),
            _ if default_latest => BundleSelector::Latest,
            _ => bail!("say which bundle: give --bundle ID, --label NAME or --branch NAME"),
        })
    }

    /// The bundle id; says `Using bundle: <ID>` on stderr when a name (latest, label, branch)
    /// was resolved, unless `quiet`.
    async fn resolve(
        &self,
        dm: &Datamon,
        repo: &RepoName,
        default_latest: bool,
        quiet: bool,
    ) -> anyhow::Result<BundleId> {
        let sel = self.get(default_latest)?;
        let id = dm.resolve(repo, &sel).await?;
        output::using_bundle(quiet, &sel, &id);
        Ok(id)
    }
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The folder whose content becomes the bundle
    #[arg(long)]
    path: PathBuf,
    /// What this version is
    #[arg(long)]
    message: String,
    #[arg(long)]
    repo: RepoName,
    /// Point this label at the new bundle
    #[arg(long)]
    label: Option<LabelName>,
    /// Advance this branch (default: main); its head becomes the bundle's parent
    #[arg(long)]
    branch: Option<BranchName>,
    /// Upload only the paths listed in this file (one per line, relative to --path; `-` for stdin)
    #[arg(long, value_name = "LIST")]
    files: Option<PathBuf>,
    /// Leave out unreadable files (listed on stderr) instead of failing
    #[arg(long)]
    skip_on_error: bool,
    /// Metadata to record, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ListArgs {
    #[command(subcommand)]
    sub: Option<ListSub>,
    #[arg(long, required = true)]
    repo: Option<RepoName>,
    /// Only bundles whose metadata matches, `meta.KEY=VALUE` (repeatable)
    #[arg(long = "where", value_name = "meta.KEY=VALUE")]
    filters: Vec<String>,
    /// Only bundles committed at or after this time (RFC 3339, YYYY-MM-DD, or 30m/12h/7d ago)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Subcommand)]
enum ListSub {
    /// List a bundle's files, sorted: path , size , hash
    Files(ListFilesArgs),
}

#[derive(Debug, Args)]
struct ListFilesArgs {
    #[arg(long)]
    repo: RepoName,
    #[command(flatten)]
    sel: Selector,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long)]
    repo: RepoName,
    #[command(flatten)]
    sel: Selector,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DownloadArgs {
    #[command(subcommand)]
    sub: Option<DownloadSub>,
    #[arg(long, required = true)]
    repo: Option<RepoName>,
    /// Folder to download into (created if missing; must be empty unless --force)
    #[arg(long, required = true)]
    destination: Option<PathBuf>,
    #[command(flatten)]
    sel: Selector,
    /// Only files whose path matches this regular expression
    #[arg(long, value_name = "REGEX")]
    name_filter: Option<String>,
    /// Download into a non-empty folder, replacing files that are in the bundle
    #[arg(long, visible_alias = "force-dest")]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum DownloadSub {
    /// Download one file (or directory) of a bundle to DESTINATION/FILE
    File(DownloadFileArgs),
}

#[derive(Debug, Args)]
struct DownloadFileArgs {
    /// Path of the file inside the bundle
    #[arg(long)]
    file: String,
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    destination: PathBuf,
    #[command(flatten)]
    sel: Selector,
    /// Overwrite DESTINATION/FILE if it exists
    #[arg(long, visible_alias = "force-dest")]
    force: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[arg(long)]
    repo: RepoName,
    /// The bundle to compare (the old side): --bundle, --label or --branch; default: the latest
    #[command(flatten)]
    sel: Selector,
    /// The other bundle (the new side)
    #[arg(
        long,
        conflicts_with = "destination",
        required_unless_present = "destination"
    )]
    with_bundle: Option<BundleId>,
    /// A local folder to compare with, by content (the new side)
    #[arg(long)]
    destination: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(long)]
    repo: RepoName,
    #[command(flatten)]
    sel: Selector,
    /// The folder to bring up to date
    #[arg(long)]
    destination: PathBuf,
}

#[derive(Serialize)]
struct DownloadView {
    bundle: String,
    destination: String,
    files: u64,
    bytes: u64,
    symlinks: u64,
    dirs: u64,
    /// Range reads of packs made from the store.
    range_reads: u64,
}

fn parse_meta(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--meta {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn read_list(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the file list from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the file list {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

impl BundleCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let json = ctx.global.json;
        let quiet = ctx.global.quiet || json;
        match self {
            BundleCmd::Mount(a) => return a.run(ctx).await,
            BundleCmd::Commit(a) => return crate::cmd::worktree::run_commit(a, ctx).await,
            BundleCmd::Delete(a) => return crate::cmd::delete::bundle(a, ctx).await,
            BundleCmd::Upload(a) => {
                let files = a.files.as_ref().map(read_list).transpose()?;
                let meta = parse_meta(&a.meta)?;
                let dm = ctx.open().await?;
                let bar = ctx.progress();
                let up = datamon::UploadContext {
                    repo: a.repo,
                    path: a.path,
                    message: a.message,
                };
                let opts = datamon::UploadOptions {
                    label: a.label,
                    branch: a.branch,
                    files,
                    skip_on_error: a.skip_on_error,
                    meta,
                    ..Default::default()
                };
                let r = dm.upload(up, opts, &bar).await?;
                for (path, why) in &r.skipped {
                    eprintln!("skipped {path}: {why}");
                }
                let s = &r.bundle.stats;
                if !quiet {
                    eprintln!(
                        "{} files, {} ({} unchanged files not read); new data {} stored as {}",
                        s.files,
                        ByteSize(s.bytes),
                        r.unchanged_files,
                        ByteSize(s.new_bytes),
                        ByteSize(s.stored_bytes)
                    );
                }
                output::result(json, &BundleView::from(&r.bundle), || {
                    format!("Uploaded bundle id:{}", r.bundle.id)
                })?;
            }
            BundleCmd::List(a) => match a.sub {
                Some(ListSub::Files(f)) => {
                    let out = f.format.printer(json, &output::FILE_FIELDS)?;
                    let dm = ctx.open().await?;
                    let id = f.sel.resolve(&dm, &f.repo, true, quiet).await?;
                    for file in dm.list_files(&f.repo, &id).await? {
                        let v = FileView::from(&file);
                        out.item(&v, || output::file_line(&v))?;
                    }
                }
                None => {
                    let out = a.format.printer(json, &output::BUNDLE_FIELDS)?;
                    let repo = a.repo.expect("clap requires --repo");
                    let query = datamon::BundleQuery {
                        meta: crate::cmd::parse::parse_where(&a.filters)?,
                        since: a
                            .since
                            .as_deref()
                            .map(crate::cmd::parse::parse_time)
                            .transpose()?,
                    };
                    let dm = ctx.open().await?;
                    let bundles = if query.meta.is_empty() && query.since.is_none() {
                        dm.list_bundles(&repo).await?
                    } else {
                        dm.find_bundles(&repo, &query).await?
                    };
                    for b in bundles {
                        out.item(&BundleView::from(&b), || output::bundle_line(&b))?;
                    }
                }
            },
            BundleCmd::Get(a) => {
                let out = a.format.printer(json, &output::BUNDLE_FIELDS)?;
                let dm = ctx.open().await?;
                let id = a.sel.resolve(&dm, &a.repo, true, quiet).await?;
                let b = dm.get_bundle(&a.repo, &id).await?;
                out.item(&BundleView::from(&b), || output::bundle_line(&b))?;
            }
            BundleCmd::Download(a) => {
                let dm = ctx.open().await?;
                let bar = ctx.progress();
                let (id, dest, report) = match a.sub {
                    Some(DownloadSub::File(f)) => {
                        let id = f.sel.resolve(&dm, &f.repo, false, quiet).await?;
                        let r = dm
                            .download_file(&f.repo, &id, &f.file, &f.destination, f.force, &bar)
                            .await?;
                        (id, f.destination, r)
                    }
                    None => {
                        let repo = a.repo.expect("clap requires --repo");
                        let dest = a.destination.expect("clap requires --destination");
                        let name_filter = a
                            .name_filter
                            .as_deref()
                            .map(regex::Regex::new)
                            .transpose()
                            .context("--name-filter is not a valid regular expression")?;
                        let id = a.sel.resolve(&dm, &repo, false, quiet).await?;
                        let opts = DownloadOptions {
                            name_filter,
                            force: a.force,
                        };
                        let r = dm.download(&repo, &id, &dest, &opts, &bar).await?;
                        (id, dest, r)
                    }
                };
                if json {
                    output::json(&DownloadView {
                        bundle: id.to_string(),
                        destination: dest.display().to_string(),
                        files: report.files,
                        bytes: report.bytes,
                        symlinks: report.symlinks,
                        dirs: report.dirs,
                        range_reads: report.range_reads,
                    })?;
                } else if !quiet {
                    eprintln!(
                        "Downloaded bundle {id} to {}: {} files, {}",
                        dest.display(),
                        report.files,
                        ByteSize(report.bytes)
                    );
                }
            }
            BundleCmd::Diff(a) => {
                let dm = ctx.open().await?;
                let id = a.sel.resolve(&dm, &a.repo, true, quiet).await?;
                let changes = match (&a.with_bundle, &a.destination) {
                    (Some(b), _) => dm.diff_bundles(&a.repo, &id, b).await?,
                    (None, Some(d)) => dm.diff_dir(&a.repo, &id, d).await?,
                    (None, None) => bail!("give --with-bundle ID or --destination DIR"),
                };
                for c in &changes {
                    if json {
                        output::json(c)?;
                    } else {
                        output::line(c)?;
                    }
                }
                return Ok(if changes.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            BundleCmd::Lineage(a) => return crate::cmd::lineage::lineage(a, ctx).await,
            BundleCmd::Update(a) => {
                let dm = ctx.open().await?;
                let id = a.sel.resolve(&dm, &a.repo, true, quiet).await?;
                let bar = ctx.progress();
                let changes = dm.update_dir(&a.repo, &id, &a.destination, &bar).await?;
                for c in &changes {
                    if json {
                        output::json(c)?;
                    } else {
                        output::line(c)?;
                    }
                }
                if !quiet {
                    eprintln!(
                        "Updated {} to bundle {id}: {} paths changed",
                        a.destination.display(),
                        changes.len()
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
