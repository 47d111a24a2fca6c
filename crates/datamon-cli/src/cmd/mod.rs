//! One module per noun; each command has its `Args` and a `run` that parses, calls the library
//! and renders.

pub mod branch;
pub mod bundle;
pub mod context;
pub mod csi;
pub mod delete;
pub mod diamond;
pub mod fuse_inputs;
pub mod gc;
pub mod key;
pub mod label;
pub mod lineage;
pub mod localize;
pub mod misc;
pub mod mount;
pub mod parse;
pub mod repo;
pub mod run;
pub mod sidecar;
pub mod store;
pub mod trust;
pub mod web;
pub mod worktree;

use std::process::ExitCode;

use crate::{Command, Ctx};

pub async fn run(command: Command, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match command {
        Command::Repo(c) => c.run(ctx).await,
        Command::Bundle(c) => (*c).run(ctx).await,
        Command::Label(c) => c.run(ctx).await,
        Command::Branch(c) => c.run(ctx).await,
        Command::Diamond(c) => c.run(ctx).await,
        Command::Context(c) => c.run(ctx).await,
        Command::Store(c) => c.run(ctx).await,
        Command::Key(c) => c.run(ctx).await,
        Command::Identity(c) => c.run(ctx),
        Command::Trust(c) => c.run(ctx).await,
        Command::Config(c) => c.run(ctx),
        Command::Fsck(c) => c.run(ctx).await,
        Command::Gc(a) => gc::run(a, ctx).await,
        Command::Run(c) => (*c).run(ctx).await,
        Command::Sidecar(c) => c.run(ctx).await,
        Command::Localize(a) => a.run(ctx).await,
        Command::Log(a) => lineage::log(a, ctx).await,
        Command::Web(a) => a.run(ctx).await,
        Command::Csi(a) => a.run(ctx).await,
        Command::Version => misc::version(ctx),
        Command::Completions(c) => c.run(),
        Command::Manpages(c) => c.run(),
    }
}
