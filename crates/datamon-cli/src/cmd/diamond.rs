//! `datamon diamond`: many writers of one bundle (see docs/diamond.md).

use std::path::PathBuf;
use std::process::ExitCode;

use bytesize::ByteSize;
use clap::{Args, Subcommand, ValueEnum};
use datamon::{
    BranchName, ConflictPolicy, DiamondCommitOptions, DiamondId, DiamondInfo, DiamondState,
    LabelName, RepoName, Split, SplitOptions,
};
use serde::Serialize;

use crate::output::{self, BundleView};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum DiamondCmd {
    /// Start a diamond in a repo; prints its id, for the splits and the commit
    Initialize(InitArgs),
    /// Splits: parts of the diamond's bundle, uploaded by any number of jobs at once
    #[command(subcommand)]
    Split(SplitCmd),
    /// Merge every completed split into one bundle (once: a second commit is told the bundle)
    Commit(CommitArgs),
    /// List a repo's diamonds: id , state , splits , bundle
    List(ListArgs),
    /// Show a diamond and its splits (exit code 2 if it does not exist)
    Get(GetArgs),
    /// Cancel a diamond: it accepts no more splits and makes no bundle
    Cancel(DiamondArgs),
}

#[derive(Debug, Subcommand)]
pub enum SplitCmd {
    /// Upload a folder as one split of the diamond (safe to run from many jobs at once)
    Add(SplitAddArgs),
    /// List the diamond's completed splits
    List(DiamondArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long)]
    repo: RepoName,
}

#[derive(Debug, Args)]
pub struct DiamondArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    diamond: DiamondId,
}

#[derive(Debug, Args)]
pub struct SplitAddArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    diamond: DiamondId,
    /// The folder whose content becomes this split's part of the bundle
    #[arg(long)]
    path: PathBuf,
    /// Leave out unreadable files instead of failing
    #[arg(long)]
    skip_on_error: bool,
}

/// What to do with a path that more than one split wrote (with different content).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Policy {
    /// Commit nothing and list the conflicts
    Fail,
    /// Keep the version of the split that completed last
    Latest,
    /// Keep the latest at the path, and every version under .conflicts/<split id>/<path>
    KeepAll,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    diamond: DiamondId,
    #[arg(long, short)]
    message: String,
    /// Label to point at the bundle
    #[arg(long)]
    label: Option<LabelName>,
    /// Branch to advance (default: main)
    #[arg(long)]
    branch: Option<BranchName>,
    /// Paths written by more than one split
    #[arg(long, value_enum, default_value = "fail")]
    conflicts: Policy,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    repo: RepoName,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    diamond: DiamondId,
}

#[derive(Serialize)]
struct DiamondView {
    id: String,
    repo: String,
    state: &'static str,
    bundle: Option<String>,
    author: String,
    created_at: String,
    splits: Vec<SplitView>,
    /// Splits recorded after the commit listed them (not in the bundle).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    left_out: Vec<String>,
}

#[derive(Serialize)]
struct SplitView {
    id: String,
    author: String,
    created_at: String,
    source: String,
    root: String,
    files: u64,
    bytes: u64,
}

impl From<&Split> for SplitView {
    fn from(s: &Split) -> Self {
        SplitView {
            id: s.id.to_string(),
            author: s.author.clone(),
            created_at: output::time(&s.created_at),
            source: s.source.clone(),
            root: s.root.to_string(),
            files: s.stats.files,
            bytes: s.stats.bytes,
        }
    }
}

impl From<&DiamondInfo> for DiamondView {
    fn from(d: &DiamondInfo) -> Self {
        let (state, bundle) = match &d.state {
            DiamondState::Committed(b) => ("committed", Some(b.to_string())),
            DiamondState::Cancelled => ("cancelled", None),
            _ => ("open", None),
        };
        let left_out = match &d.commit {
            Some(c) => d
                .splits
                .iter()
                .filter(|s| !c.splits.contains(&s.id))
                .map(|s| s.id.to_string())
                .collect(),
            None => Vec::new(),
        };
        let splits = d
            .splits
            .iter()
            .filter(|s| d.commit.as_ref().is_none_or(|c| c.splits.contains(&s.id)))
            .map(SplitView::from)
            .collect();
        DiamondView {
            id: d.diamond.id.to_string(),
            repo: d.diamond.repo.to_string(),
            state,
            bundle,
            author: d.diamond.author.clone(),
            created_at: output::time(&d.diamond.created_at),
            splits,
            left_out,
        }
    }
}

#[derive(Serialize)]
struct CommitView<'a> {
    diamond: String,
    bundle: BundleView<'a>,
    splits: usize,
    conflicts: Vec<ConflictView>,
}

#[derive(Serialize)]
struct ConflictView {
    path: String,
    splits: Vec<String>,
}

fn split_line(s: &SplitView) -> String {
    format!(
        "{} , {} , {} files , {} , {}",
        s.id,
        s.created_at,
        s.files,
        ByteSize(s.bytes),
        s.source
    )
}

impl DiamondCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let json = ctx.global.json;
        let quiet = ctx.global.quiet || json;
        match self {
            DiamondCmd::Initialize(a) => {
                let dm = ctx.open().await?;
                let d = dm.diamond_initialize(&a.repo).await?;
                #[derive(Serialize)]
                struct V {
                    id: String,
                    repo: String,
                }
                let v = V {
                    id: d.id.to_string(),
                    repo: d.repo.to_string(),
                };
                output::result(json, &v, || d.id.to_string())?;
            }
            DiamondCmd::Split(SplitCmd::Add(a)) => {
                let dm = ctx.open().await?;
                let bar = ctx.progress();
                let opts = SplitOptions {
                    skip_on_error: a.skip_on_error,
                    ..Default::default()
                };
                let r = dm
                    .diamond_add_split(&a.repo, &a.diamond, a.path, opts, &bar)
                    .await?;
                for (path, why) in &r.skipped {
                    eprintln!("skipped {path}: {why}");
                }
                if !quiet {
                    let s = &r.split.stats;
                    eprintln!(
                        "{} files, {} ({} unchanged files not read); new data {} stored as {}",
                        s.files,
                        ByteSize(s.bytes),
                        r.unchanged_files,
                        ByteSize(s.new_bytes),
                        ByteSize(s.stored_bytes)
                    );
                }
                output::result(json, &SplitView::from(&r.split), || {
                    format!("Added split id:{}", r.split.id)
                })?;
            }
            DiamondCmd::Split(SplitCmd::List(a)) => {
                let dm = ctx.open().await?;
                let d = dm.diamond_get(&a.repo, &a.diamond).await?;
                for s in DiamondView::from(&d).splits {
                    output::result(json, &s, || split_line(&s))?;
                }
            }
            DiamondCmd::Commit(a) => {
                let dm = ctx.open().await?;
                let opts = DiamondCommitOptions {
                    message: a.message,
                    label: a.label,
                    branch: a.branch,
                    policy: match a.conflicts {
                        Policy::Fail => ConflictPolicy::Fail,
                        Policy::Latest => ConflictPolicy::Latest,
                        Policy::KeepAll => ConflictPolicy::KeepAll,
                    },
                    meta: Default::default(),
                };
                let r = dm.diamond_commit(&a.repo, &a.diamond, opts).await?;
                if !quiet {
                    for c in &r.conflicts {
                        eprintln!("conflict: {} written by {} splits", c.path, c.splits.len());
                    }
                }
                let v = CommitView {
                    diamond: a.diamond.to_string(),
                    bundle: BundleView::from(&r.bundle),
                    splits: r.splits.len(),
                    conflicts: r
                        .conflicts
                        .iter()
                        .map(|c| ConflictView {
                            path: c.path.clone(),
                            splits: c.splits.iter().map(ToString::to_string).collect(),
                        })
                        .collect(),
                };
                output::result(json, &v, || {
                    format!(
                        "Committed diamond {} as bundle id:{} ({} splits, {} conflicts)",
                        a.diamond,
                        r.bundle.id,
                        r.splits.len(),
                        r.conflicts.len()
                    )
                })?;
            }
            DiamondCmd::List(a) => {
                let dm = ctx.open().await?;
                for d in dm.diamond_list(&a.repo).await? {
                    let v = DiamondView::from(&d);
                    output::result(json, &v, || {
                        format!(
                            "{} , {} , {} splits , {}",
                            v.id,
                            v.state,
                            v.splits.len(),
                            v.bundle.as_deref().unwrap_or("-")
                        )
                    })?;
                }
            }
            DiamondCmd::Get(a) => {
                let dm = ctx.open().await?;
                let d = dm.diamond_get(&a.repo, &a.diamond).await?;
                let v = DiamondView::from(&d);
                output::result(json, &v, || {
                    let mut s = format!(
                        "diamond {} of repo {}: {}{} ; created {} by {}",
                        v.id,
                        v.repo,
                        v.state,
                        v.bundle
                            .as_deref()
                            .map(|b| format!(" as bundle {b}"))
                            .unwrap_or_default(),
                        v.created_at,
                        v.author
                    );
                    for sp in &v.splits {
                        s.push_str("\n  ");
                        s.push_str(&split_line(sp));
                    }
                    for id in &v.left_out {
                        s.push_str(&format!(
                            "\n  {id} (recorded after the commit; not in the bundle)"
                        ));
                    }
                    s
                })?;
            }
            DiamondCmd::Cancel(a) => {
                let dm = ctx.open().await?;
                dm.diamond_cancel(&a.repo, &a.diamond).await?;
                #[derive(Serialize)]
                struct V {
                    diamond: String,
                    state: &'static str,
                }
                let v = V {
                    diamond: a.diamond.to_string(),
                    state: "cancelled",
                };
                output::result(json, &v, || format!("Cancelled diamond {}", a.diamond))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
