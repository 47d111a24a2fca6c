//! `datamon key`: the keys that open an encrypted store (see docs/security.md), and how the CLI
//! finds secrets: key files, `DATAMON_PASSPHRASE[_FILE]`, `DATAMON_KEY_FILE`, a prompt.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use datamon::{KeyInfo, Secret};
use serde::Serialize;

use crate::output::{self, FormatArg};
use crate::Ctx;

/// The environment variable holding the passphrase of a key being added.
pub(crate) const ENV_NEW_PASSPHRASE: &str = "DATAMON_NEW_PASSPHRASE";
/// The environment variable naming a file with the passphrase of a key being added.
pub(crate) const ENV_NEW_PASSPHRASE_FILE: &str = "DATAMON_NEW_PASSPHRASE_FILE";

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Write a new random key file (mode 0600; never overwrites)
    Generate(GenerateArgs),
    /// Let one more passphrase or key file open the store (nothing is re-encrypted). The new
    /// passphrase comes from DATAMON_NEW_PASSPHRASE(_FILE) or a prompt
    Add(AddArgs),
    /// List the keys that open the store: id, name, kind, added, by
    List(ListArgs),
    /// Remove a key, so its secret no longer opens the store (never the last key)
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the key file
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A name for the key (who or what holds it)
    #[arg(long)]
    name: String,
    /// Add this key file (created when missing) instead of a passphrase
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    format: FormatArg,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The key's id (or its name, when only one key has it)
    #[arg(long)]
    key: String,
}

pub(crate) const KEY_FIELDS: output::Fields = output::Fields {
    names: &["id", "name", "kind", "created_at", "created_by"],
    aliases: &[],
};

#[derive(Serialize)]
struct KeyView<'a> {
    id: &'a str,
    name: &'a str,
    kind: String,
    created_at: String,
    created_by: &'a str,
}

impl<'a> From<&'a KeyInfo> for KeyView<'a> {
    fn from(k: &'a KeyInfo) -> Self {
        KeyView {
            id: &k.id,
            name: &k.name,
            kind: k.kind.to_string(),
            created_at: k
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            created_by: &k.created_by,
        }
    }
}

fn key_line(k: &KeyView) -> String {
    format!(
        "{} , {} , {} , {} , {}",
        k.id, k.name, k.kind, k.created_at, k.created_by
    )
}

/// A passphrase read from the terminal, twice when `confirm`.
pub(crate) fn prompt_passphrase(prompt: &str, confirm: bool) -> anyhow::Result<Secret> {
    let p = rpassword::prompt_password(prompt).context("cannot read a passphrase")?;
    if confirm {
        let again =
            rpassword::prompt_password("Repeat it: ").context("cannot read a passphrase")?;
        if again != p {
            bail!("the two passphrases differ; nothing was changed");
        }
    }
    Ok(Secret::passphrase(p)?)
}

/// The secret of a new key: a key file (generated when missing), else a passphrase from
/// `env` / `env_file` (then `fallback` variables), else a prompt.
pub(crate) fn new_secret(
    key_file: Option<&Path>,
    env: &[&str],
    env_file: &[&str],
    what: &str,
) -> anyhow::Result<Secret> {
    if let Some(f) = key_file {
        if !f.exists() {
            datamon::generate_key_file(f)?;
            eprintln!(
                "Wrote a new key file {}: keep it safe, it opens the store",
                f.display()
            );
        }
        return Ok(Secret::key_file(f)?);
    }
    for v in env {
        if let Ok(p) = std::env::var(v) {
            return Secret::passphrase(p).with_context(|| format!("{v} is empty"));
        }
    }
    for v in env_file {
        if let Some(p) = std::env::var_os(v) {
            return Ok(Secret::passphrase_file(Path::new(&p))?);
        }
    }
    if std::io::stdin().is_terminal() {
        return prompt_passphrase(&format!("New passphrase for {what}: "), true);
    }
    bail!(
        "no passphrase for {what}: set {} (or {} naming a file), run in a terminal to be asked, or pass --key-file PATH",
        env[0],
        env_file[0]
    )
}

impl KeyCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self {
            KeyCmd::Generate(a) => {
                datamon::generate_key_file(&a.file)?;
                output::line(format!("Wrote key file {}", a.file.display()))?;
            }
            KeyCmd::Add(a) => {
                let dm = ctx.open().await?;
                let secret = new_secret(
                    a.key_file.as_deref(),
                    &[ENV_NEW_PASSPHRASE],
                    &[ENV_NEW_PASSPHRASE_FILE],
                    &format!("key {}", a.name),
                )?;
                let k = dm
                    .store()
                    .add_key(&secret, &a.name, dm.author())
                    .await
                    .map_err(datamon::Error::from)
                    .context("cannot add the key")?;
                if ctx.global.json {
                    output::json(&KeyView::from(&k))?;
                } else {
                    output::line(format!("Added key {} ({}, {})", k.id, k.name, k.kind))?;
                }
            }
            KeyCmd::List(a) => {
                let out = a.format.printer(ctx.global.json, &KEY_FIELDS)?;
                let dm = ctx.open().await?;
                let keys = dm.store().list_keys().await.map_err(datamon::Error::from)?;
                for k in keys {
                    let v = KeyView::from(&k);
                    out.item(&v, || key_line(&v))?;
                }
            }
            KeyCmd::Remove(a) => {
                let dm = ctx.open().await?;
                let k = dm
                    .store()
                    .remove_key(&a.key)
                    .await
                    .map_err(datamon::Error::from)
                    .context("cannot remove the key")?;
                if ctx.global.json {
                    output::json(&KeyView::from(&k))?;
                } else {
                    output::line(format!(
                        "Removed key {} ({}): its secret no longer opens the store",
                        k.id, k.name
                    ))?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
