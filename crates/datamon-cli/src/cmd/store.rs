use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::output;
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Copy into --to every object of --from that it lacks (packs, index, repos, bundles,
    /// branches, labels, in that order); never overwrites; safe to interrupt and rerun
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The store to copy from
    #[arg(long, value_name = "URL")]
    from: String,
    /// The store to copy into (created if empty)
    #[arg(long, value_name = "URL")]
    to: String,
}

#[derive(Serialize)]
struct SyncView<'a> {
    from: &'a str,
    to: &'a str,
    copied: u64,
    bytes: u64,
    present: u64,
    conflicts: &'a [String],
}

impl StoreCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let StoreCmd::Sync(a) = self;
        let store_options = Ctx::store_options();
        let opts = datamon::OpenOptions {
            store_options,
            concurrency: ctx.global.concurrency,
            ..Default::default()
        };
        let r = datamon::Datamon::sync_stores(&a.from, &a.to, &opts)
            .await
            .with_context(|| format!("cannot sync {} into {}", a.from, a.to))?;
        if ctx.global.json {
            output::json(&SyncView {
                from: &a.from,
                to: &a.to,
                copied: r.copied,
                bytes: r.bytes,
                present: r.present,
                conflicts: &r.conflicts,
            })?;
        } else {
            output::line(format!(
                "Copied {} objects ({}); {} already there",
                r.copied,
                bytesize::ByteSize::b(r.bytes),
                r.present
            ))?;
            for k in &r.conflicts {
                eprintln!("warning: {k} differs in the destination; left as it is");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
