//! `datamon identity` (the ed25519 key that signs this user's writes) and `datamon trust` (the
//! store's list of trusted writers; see docs/security.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use datamon::{Identity, TrustedKey};
use serde::Serialize;

use crate::output::{self, FormatArg};
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Write a new signing identity (an ed25519 key; mode 0600; never overwrites) and print its
    /// public key. Use it with DATAMON_SIGNING_KEY_FILE or `context create --signing-key`
    Generate(IdentityFileArgs),
    /// Print the public key of an identity file (default: the one in use)
    Show(IdentityShowArgs),
}

#[derive(Debug, Args)]
pub struct IdentityFileArgs {
    /// The identity file
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
}

#[derive(Debug, Args)]
pub struct IdentityShowArgs {
    /// The identity file (default: DATAMON_SIGNING_KEY_FILE, else the context's)
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Start the store's trust list with this identity as its admin and trust root: from then
    /// on, readers believe only records signed by listed keys (pins the root in the context)
    Init(InitArgs),
    /// Trust a writer's public key, for some repos or all (`--repo '*'`, the default)
    Add(AddArgs),
    /// Take a key off the trust list: what it signs is no longer believed
    Remove(RemoveArgs),
    /// The trust list in force: key, name, repos, admin
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The name shown as the author of what this identity signs (default: the author)
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The writer's public key (`datamon identity show`)
    #[arg(long, value_name = "HEX")]
    key: String,
    /// The name shown as the author of what it signs
    #[arg(long)]
    name: String,
    /// A repo it may write (repeatable; default: every repo, `*`)
    #[arg(long = "repo", value_name = "REPO")]
    repos: Vec<String>,
    /// It may also change the trust list
    #[arg(long)]
    admin: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The public key, or the name when one key has it
    #[arg(long)]
    key: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    format: FormatArg,
}

pub(crate) const TRUST_FIELDS: output::Fields = output::Fields {
    names: &["key", "name", "repos", "admin"],
    aliases: &[],
};

#[derive(Serialize)]
struct TrustView<'a> {
    key: &'a str,
    name: &'a str,
    repos: &'a [String],
    admin: bool,
}

impl IdentityCmd {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let id = match self {
            IdentityCmd::Generate(a) => {
                let id = Identity::generate_file(&a.file)?;
                eprintln!(
                    "Wrote identity {}: keep it safe, it signs as you",
                    a.file.display()
                );
                id
            }
            IdentityCmd::Show(a) => match a.file {
                Some(f) => Identity::from_file(&f)?,
                None => match ctx.identity_file()? {
                    Some(f) => Identity::from_file(&f)?,
                    None => bail!(
                        "no identity in use: set DATAMON_SIGNING_KEY_FILE or give the context one (`datamon context create ... --signing-key PATH`)"
                    ),
                },
            },
        };
        if ctx.global.json {
            output::json(&serde_json::json!({ "public_key": id.public_key() }))?;
        } else {
            output::line(id.public_key())?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn show(ctx: &Ctx, keys: &[TrustedKey], format: &FormatArg) -> anyhow::Result<()> {
    let out = format.printer(ctx.global.json, &TRUST_FIELDS)?;
    for k in keys {
        let v = TrustView {
            key: &k.key,
            name: &k.name,
            repos: &k.repos,
            admin: k.admin,
        };
        out.item(&v, || {
            format!(
                "{} , {} , {} , {}",
                v.key,
                v.name,
                v.repos.join(" "),
                if v.admin { "admin" } else { "writer" }
            )
        })?;
    }
    Ok(())
}

impl TrustCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let dm = ctx.open().await?;
        let mut store = dm.store().clone();
        let current: Vec<TrustedKey> = store.trust_list().map(<[_]>::to_vec).unwrap_or_default();
        let new = match self {
            TrustCmd::List(a) => {
                if store.trust_list().is_none() {
                    bail!("the store has no trust list: every record is believed (start one with `datamon trust init`)");
                }
                show(ctx, &current, &a.format)?;
                return Ok(ExitCode::SUCCESS);
            }
            TrustCmd::Init(a) => {
                if !current.is_empty() {
                    bail!("the store already has a trust list: see `datamon trust list`");
                }
                let Some(me) = store.identity() else {
                    bail!("no identity to sign with: `datamon identity generate --file PATH`, then set DATAMON_SIGNING_KEY_FILE or give the context --signing-key");
                };
                vec![TrustedKey {
                    key: me,
                    name: a.name.unwrap_or_else(|| dm.author().to_owned()),
                    repos: vec!["*".into()],
                    admin: true,
                }]
            }
            TrustCmd::Add(a) => {
                let mut keys: Vec<TrustedKey> =
                    current.into_iter().filter(|k| k.key != a.key).collect();
                keys.push(TrustedKey {
                    key: a.key.to_ascii_lowercase(),
                    name: a.name,
                    repos: if a.repos.is_empty() {
                        vec!["*".into()]
                    } else {
                        a.repos
                    },
                    admin: a.admin,
                });
                keys
            }
            TrustCmd::Remove(a) => {
                let by_key = current.iter().any(|k| k.key == a.key);
                let named = current.iter().filter(|k| k.name == a.key).count();
                if !by_key && named != 1 {
                    bail!(
                        "{} on the trust list: give a key (see `datamon trust list`)",
                        if named == 0 {
                            format!("no key {:?}", a.key)
                        } else {
                            format!("{named} keys named {:?}", a.key)
                        }
                    );
                }
                current
                    .into_iter()
                    .filter(|k| !(k.key == a.key || (!by_key && k.name == a.key)))
                    .collect()
            }
        };
        let seq = store
            .set_trust(new, dm.author())
            .await
            .map_err(datamon::Error::from)
            .context("cannot change the trust list")?;
        if let Some(root) = store.trust_root() {
            ctx.pin_trust_root(root)?;
        }
        if !ctx.global.json {
            output::line(format!("Trust list version {seq} is in force"))?;
        }
        show(
            ctx,
            store.trust_list().unwrap_or_default(),
            &FormatArg::default(),
        )?;
        Ok(ExitCode::SUCCESS)
    }
}
