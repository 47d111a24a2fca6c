//! `datamon localize`: the init-container step that downloads bundles into folders before a
//! job starts (`datamon::sidecar::localize`), usable as a container's `args`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use datamon::sidecar::{localize, LocalizeOptions};
use datamon::{CancellationToken, InputSpec};

use crate::cmd::parse::parse_duration;
use crate::Ctx;

#[derive(Debug, Args)]
pub struct LocalizeArgs {
    /// What goes where, `REPO@SELECTOR[:PATH]=DIR`: the bundle (or its PATH) is downloaded and
    /// verified into DIR, which must be empty or absent (repeatable)
    #[arg(
        long = "input",
        value_name = "REPO@SELECTOR[:PATH]=DIR",
        required = true
    )]
    inputs: Vec<String>,
    /// Attempts per input beyond the first, for transient store errors and data that does not verify
    #[arg(long, default_value_t = 3, value_name = "N")]
    retries: u32,
    /// The wait before the first retry, doubled at each retry
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    backoff: Duration,
}

impl LocalizeArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let mut items = Vec::new();
        for s in &self.inputs {
            let Some((spec, dir)) = s.rsplit_once('=').filter(|(_, d)| !d.is_empty()) else {
                bail!("--input {s:?}: expected REPO@SELECTOR[:PATH]=DIR (the folder to fill)");
            };
            let spec: InputSpec = spec
                .parse()
                .with_context(|| format!("--input {s:?}: expected REPO@SELECTOR[:PATH]=DIR"))?;
            items.push((spec, PathBuf::from(dir)));
        }
        let dm = ctx.open().await?;
        let cancel = CancellationToken::new();
        {
            let cancel = cancel.clone();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot watch SIGTERM")?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                cancel.cancel();
            });
        }
        let opts = LocalizeOptions {
            retries: self.retries,
            backoff: self.backoff,
        };
        let bar = ctx.progress();
        let done = localize(&dm, &items, opts, &bar, &cancel).await?;
        for d in &done {
            crate::output::result(
                ctx.global.json,
                &serde_json::json!({
                    "repo": d.repo,
                    "bundle": d.bundle,
                    "dir": d.dir,
                    "files": d.files,
                    "attempts": d.attempts,
                }),
                || {
                    format!(
                        "{} , {} , {} , {} files",
                        d.repo,
                        d.bundle,
                        d.dir.display(),
                        d.files
                    )
                },
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
