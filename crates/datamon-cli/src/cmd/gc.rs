//! `datamon gc`: garbage collection without a lock (see `docs/format/gc.md`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use datamon::{CancellationToken, GcOptions};

use crate::output;
use crate::Ctx;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be collected and planned; write and delete nothing
    #[arg(long)]
    dry_run: bool,
    /// How old packs and plans must be before they are condemned and collected (e.g. 30m,
    /// 24h, 0s); longer than your longest upload
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    grace: String,
    /// Repack packs whose live blobs fill less than this fraction of them (0 never repacks,
    /// 1 repacks every pack with a dead blob)
    #[arg(long, default_value_t = 0.5, value_name = "FRACTION", value_parser = parse_fraction)]
    repack_below: f64,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "expected a fraction from 0 to 1 (e.g. 0.5), not {s:?}"
        )),
    }
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let bad = || format!("--grace {s:?}: expected a number and a unit (s, m, h, d), e.g. 24h");
    let split = s.find(|c: char| !c.is_ascii_digit()).with_context(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok().with_context(bad)?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!(bad()),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(a: GcArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let opts = GcOptions {
        dry_run: a.dry_run,
        grace: parse_duration(&a.grace)?,
        repack_below: a.repack_below,
    };

    let dm = ctx.open().await?;
    let cancel = CancellationToken::new();
    let watch = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            watch.cancel();
        }
    });
    let bar = ctx.progress();
    let r = dm.gc(&opts, &cancel, &bar).await?;
    output::result(ctx.global.json, &r, || {
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        let mut s = format!(
            "{} packs ({}), {} live blobs from {} roots; {verb} {} packs ({}) of {} plan(s)",
            r.packs,
            bytesize::ByteSize(r.bytes),
            r.live_blobs,
            r.roots,
            r.packs_deleted,
            bytesize::ByteSize(r.bytes_deleted),
            r.plans_collected.len()
        );
        if r.packs_repacked > 0 {
            s.push_str(&format!(
                " ({} repacked: {} live blobs, {} copied)",
                r.packs_repacked,
                r.blobs_copied,
                bytesize::ByteSize(r.bytes_copied)
            ));
        }
        if r.packs_spared > 0 {
            s.push_str(&format!(", spared {} packs used again", r.packs_spared));
        }
        let planned = if r.dry_run {
            "would condemn"
        } else {
            "condemned"
        };
        s.push_str(&format!(
            "; {planned} {} packs ({}) for the next run",
            r.packs_condemned,
            bytesize::ByteSize(r.bytes_condemned)
        ));
        s
    })?;
    Ok(ExitCode::SUCCESS)
}
