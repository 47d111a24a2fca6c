//! Deleting: `bundle delete`, `label delete`, `branch delete`, `repo delete`, `repo rename`,
//! `repo squash` (retention), `repo remove-path` (history rewrite). The subcommand enums of each noun hold these `Args`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use datamon::{BranchName, BundleId, DeleteOptions, LabelName, RepoName, RetentionRules};
use serde_json::json;

use crate::output;
use crate::Ctx;

#[derive(Debug, Args)]
pub struct BundleDeleteArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    bundle: BundleId,
    /// Also delete the labels and branches that name the bundle (otherwise they block it)
    #[arg(long)]
    remove_refs: bool,
    /// Why (kept in the deletion record)
    #[arg(long)]
    reason: Option<String>,
}

pub async fn bundle(a: BundleDeleteArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    let opts = DeleteOptions {
        remove_refs: a.remove_refs,
        reason: a.reason,
    };
    let r = dm.delete_bundle(&a.repo, &a.bundle, &opts).await?;
    let labels: Vec<String> = r.labels.iter().map(ToString::to_string).collect();
    let branches: Vec<String> = r.branches.iter().map(ToString::to_string).collect();
    let view = json!({"bundle": r.bundle.to_string(), "labels_deleted": labels,
        "branches_deleted": branches});
    output::result(ctx.global.json, &view, || {
        let mut s = format!("Deleted bundle {}", r.bundle);
        if !labels.is_empty() {
            s.push_str(&format!(" and labels {}", labels.join(", ")));
        }
        if !branches.is_empty() {
            s.push_str(&format!(" and branches {}", branches.join(", ")));
        }
        s
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct LabelDeleteArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    label: LabelName,
}

pub async fn label(a: LabelDeleteArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    dm.delete_label(&a.repo, &a.label).await?;
    let view = json!({"label": a.label.to_string(), "deleted": true});
    output::result(ctx.global.json, &view, || {
        format!("Deleted label {}", a.label)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct BranchDeleteArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    branch: BranchName,
}

pub async fn branch(a: BranchDeleteArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    dm.delete_branch(&a.repo, &a.branch).await?;
    let view = json!({"branch": a.branch.to_string(), "deleted": true});
    output::result(ctx.global.json, &view, || {
        format!("Deleted branch {} (its bundles stay)", a.branch)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RepoDeleteArgs {
    #[arg(long)]
    repo: RepoName,
    /// Confirm: the repo and all its bundles go (their data at the next gc)
    #[arg(long)]
    yes: bool,
    /// Why (kept in the deletion record)
    #[arg(long)]
    reason: Option<String>,
}

pub async fn repo(a: RepoDeleteArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if !a.yes {
        anyhow::bail!(
            "repo delete removes repo {:?} and all its bundles: pass --yes to confirm",
            a.repo.as_str()
        );
    }
    let dm = ctx.open().await?;
    dm.delete_repo(&a.repo, a.reason).await?;
    let view = json!({"repo": a.repo.to_string(), "deleted": true});
    output::result(ctx.global.json, &view, || {
        format!("Deleted repo {}", a.repo)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RepoRenameArgs {
    #[arg(long)]
    repo: RepoName,
    /// The new name
    #[arg(long)]
    to: RepoName,
}

pub async fn rename(a: RepoRenameArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dm = ctx.open().await?;
    dm.rename_repo(&a.repo, &a.to).await?;
    let view = json!({"repo": a.repo.to_string(), "renamed_to": a.to.to_string()});
    output::result(ctx.global.json, &view, || {
        format!("Renamed repo {} to {}", a.repo, a.to)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct SquashArgs {
    #[arg(long)]
    repo: RepoName,
    /// Keep the bundles that labels point at
    #[arg(long)]
    keep_labelled: bool,
    /// Keep the newest N bundles
    #[arg(long, value_name = "N")]
    keep_newest: Option<usize>,
    /// Keep the bundles committed at or after this time (RFC 3339, or a date YYYY-MM-DD)
    #[arg(long, value_name = "TIME")]
    keep_since: Option<String>,
    /// Keep the bundles whose metadata has KEY=VALUE (repeatable: all must match)
    #[arg(long = "keep-meta", value_name = "KEY=VALUE")]
    keep_meta: Vec<String>,
    /// Only print what would be deleted
    #[arg(long)]
    dry_run: bool,
}

fn parse_time(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| {
        format!("--keep-since {s:?}: expected an RFC 3339 time or a date YYYY-MM-DD")
    })?;
    Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

pub async fn squash(a: SquashArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let keep_meta = a
        .keep_meta
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--keep-meta {kv:?}: expected KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rules = RetentionRules {
        keep_labelled: a.keep_labelled,
        keep_newest: a.keep_newest,
        keep_since: a.keep_since.as_deref().map(parse_time).transpose()?,
        keep_meta,
    };
    if !rules.keep_labelled
        && rules.keep_newest.is_none()
        && rules.keep_since.is_none()
        && rules.keep_meta.is_empty()
    {
        anyhow::bail!(
            "repo squash needs at least one rule (--keep-labelled, --keep-newest, --keep-since, \
             --keep-meta); branch heads are always kept"
        );
    }
    let dm = ctx.open().await?;
    let plan = dm.apply_retention(&a.repo, &rules, a.dry_run).await?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for b in &plan.delete {
        let view = json!({"bundle": b.id.to_string(), "action": verb.replace(' ', "_"),
            "message": b.message, "created_at": b.created_at.to_rfc3339()});
        output::result(ctx.global.json, &view, || {
            format!(
                "{verb} {} , {} , {}",
                b.id,
                output::time(&b.created_at),
                b.message
            )
        })?;
    }
    if !ctx.global.json && !ctx.global.quiet {
        eprintln!(
            "{} bundle(s) {verb}, {} kept",
            plan.delete.len(),
            plan.keep.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RemovePathArgs {
    #[arg(long)]
    repo: RepoName,
    /// Paths or globs relative to the bundle root (`data/users.csv`, `secrets`, `**/*.pem`; `*`
    /// stays within a directory, `**` crosses them); a matching directory goes whole
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Confirm: the bundles that hold a matching path are replaced and deleted
    #[arg(long)]
    yes: bool,
    /// Only print what would be rewritten
    #[arg(long)]
    dry_run: bool,
    /// Why (kept in the old bundles' deletion records)
    #[arg(long)]
    reason: Option<String>,
}

pub async fn remove_path(a: RemovePathArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if !a.yes && !a.dry_run {
        anyhow::bail!(
            "repo remove-path rewrites every bundle of repo {:?} that holds a matching path and \
             deletes the originals: pass --yes to confirm, or --dry-run to see which",
            a.repo.as_str()
        );
    }
    let dm = ctx.open().await?;
    let opts = datamon::RemovePathsOptions {
        patterns: a.paths,
        dry_run: a.dry_run,
        reason: a.reason,
    };
    let cancel = datamon::CancellationToken::new();
    let watch = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            watch.cancel();
        }
    });
    let bar = ctx.progress();
    let r = dm.remove_paths(&a.repo, &opts, &cancel, &bar).await?;
    let verb = if r.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    let quiet_text = r.bundles.is_empty() && r.labels.is_empty() && r.branches.is_empty();
    if !ctx.global.json && quiet_text {
        // Nothing to list; the summary below says so.
    } else {
        output::result(ctx.global.json, &r, || {
            let mut lines: Vec<String> = r
                .bundles
                .iter()
                .map(|b| {
                    format!(
                        "{verb} {} as {} , {} path(s) removed: {}",
                        b.old,
                        b.new,
                        b.removed.len(),
                        b.removed.join(", ")
                    )
                })
                .collect();
            let moved = if r.dry_run { "would move" } else { "moved" };
            for (kind, refs) in [("label", &r.labels), ("branch", &r.branches)] {
                for m in refs {
                    lines.push(format!(
                        "{moved} {kind} {} from {} to {}",
                        m.name, m.from, m.to
                    ));
                }
            }
            for s in &r.skipped_refs {
                lines.push(format!("left {s}: it moved meanwhile"));
            }
            lines.join("\n")
        })?;
    }
    if !ctx.global.json && !ctx.global.quiet {
        if r.bundles.is_empty() {
            eprintln!(
                "No live bundle of repo {} holds a matching path{}",
                r.repo,
                if r.blobs_to_purge > 0 {
                    " (deleted bundles' copies are handed to gc)"
                } else {
                    ""
                }
            );
        } else {
            let done = if r.dry_run {
                "would be rewritten"
            } else {
                "rewritten"
            };
            eprintln!("{} bundle(s) {done}", r.bundles.len());
        }
        if !r.dry_run && r.blobs_to_purge > 0 {
            eprintln!(
                "The removed bytes stay in the store until `datamon gc` has run twice, the \
                 grace period apart (the first run plans, the second deletes and repacks)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
