use std::process::ExitCode;

use clap::{Args, Subcommand};
use datamon::{BundleId, LabelName, RepoName};

use crate::output::{self, FormatArg, LabelView};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum LabelCmd {
    /// Point a label at a bundle
    Set(SetArgs),
    /// Show a label (exit code 2 if it does not exist)
    Get(GetArgs),
    /// List a repo's labels: name , bundle , time , author (--prefix P: names starting with P)
    List(ListArgs),
    /// Delete a label (its history stays; setting it again brings it back)
    Delete(crate::cmd::delete::LabelDeleteArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    label: LabelName,
    #[arg(long)]
    bundle: BundleId,
    /// Only move the label if it currently names this bundle ("none": only if it does not exist)
    #[arg(long, value_name = "BUNDLE_ID|none")]
    expect: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long)]
    repo: RepoName,
    #[arg(long)]
    label: LabelName,
    /// Every value the label had, oldest first
    #[arg(long)]
    history: bool,
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    repo: RepoName,
    /// Only labels whose name starts with this
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    #[command(flatten)]
    format: FormatArg,
}

impl LabelCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let json = ctx.global.json;
        match self {
            LabelCmd::Set(a) => {
                let dm = ctx.open().await?;
                let expect = match a.expect.as_deref() {
                    None => None,
                    Some("none") => Some(None),
                    Some(id) => Some(Some(id.parse::<BundleId>()?)),
                };
                let r = dm.set_label(&a.repo, &a.label, &a.bundle, expect).await?;
                output::result(json, &LabelView::new(a.label.as_str(), &r), || {
                    format!("Label {} set to {}", a.label, r.bundle)
                })?;
            }
            LabelCmd::Delete(a) => return crate::cmd::delete::label(a, ctx).await,
            LabelCmd::Get(a) => {
                let out = a.format.printer(json, &output::LABEL_FIELDS)?;
                let dm = ctx.open().await?;
                let records = if a.history {
                    dm.label_history(&a.repo, &a.label).await?
                } else {
                    vec![dm.get_label(&a.repo, &a.label).await?]
                };
                for r in &records {
                    out.item(&LabelView::new(a.label.as_str(), r), || {
                        output::label_line(a.label.as_str(), r)
                    })?;
                }
            }
            LabelCmd::List(a) => {
                let out = a.format.printer(json, &output::LABEL_FIELDS)?;
                let prefix = a.prefix.as_deref().unwrap_or("");
                let dm = ctx.open().await?;
                for (name, r) in dm.list_labels(&a.repo).await? {
                    if !name.as_str().starts_with(prefix) {
                        continue;
                    }
                    out.item(&LabelView::new(name.as_str(), &r), || {
                        output::label_line(name.as_str(), &r)
                    })?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
