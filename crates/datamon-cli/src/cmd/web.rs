//! `datamon web`: serves the read-only web UI and its JSON API over the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::Ctx;

/// Browse repos, bundles, files, diffs, runs and lineage in a web browser (read-only)
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Address to listen on; any address but loopback requires a token
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "DATAMON_WEB_LISTEN",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// File holding the token every request must present (or set $DATAMON_WEB_TOKEN)
    #[arg(long, env = "DATAMON_WEB_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Open the UI in the default browser once it is serving
    #[arg(long)]
    open: bool,
}

impl WebArgs {
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?;
            let t = t.trim().to_owned();
            anyhow::ensure!(!t.is_empty(), "the token file {} is empty", f.display());
            return Ok(Some(t));
        }
        // A secret is never taken from the command line.
        Ok(std::env::var("DATAMON_WEB_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }

    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let token = self.token()?;
        let dm = ctx.open().await?;
        let opts = datamon_web::WebOptions {
            listen: self.listen,
            token: token.clone(),
        };
        let server = match datamon_web::Server::bind(dm, opts).await {
            Err(e @ datamon_web::Error::TokenRequired { .. }) => {
                return Err(anyhow::Error::from(e).context(
                    "pass --token-file FILE or set DATAMON_WEB_TOKEN, or listen on 127.0.0.1",
                ))
            }
            r => r?,
        };
        let url = format!("http://{}/", server.local_addr());
        println!("Serving the datamon web UI on {url}");
        if token.is_some() {
            println!("Requests must present the token: open {url}?token=TOKEN once, or send `Authorization: Bearer TOKEN`");
        }
        if self.open {
            let target = match &token {
                Some(t) => format!("{url}?token={t}"),
                None => url.clone(),
            };
            let opener = if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            };
            if let Err(e) = std::process::Command::new(opener)
                .arg(&target)
                .stdin(std::process::Stdio::null())
                .spawn()
            {
                tracing::warn!("cannot open a browser with {opener}: {e}");
            }
        }
        server
            .serve(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(ExitCode::SUCCESS)
    }
}
