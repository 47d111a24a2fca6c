//! End-to-end tests: every test drives the real `datamon` binary with its own `DATAMON_HOME`.
#![allow(clippy::disallowed_methods)] // tests write fixtures directly

mod util;

mod bundle;
mod compare;
mod compat;
mod concurrency;
mod context;
mod diamond;
mod diff;
mod download;
mod encryption;
mod errors;
mod faults;
mod labels_branches;
mod lifecycle;
mod lineage;
mod misc;
mod mount;
mod posix;
mod repo;
mod s3;
mod sidecar;
