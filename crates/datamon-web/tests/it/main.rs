//! The web server's tests: HTTP tests of every API endpoint against a real server on loopback
//! over a real local store, and a headless Chromium test of the UI.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests: fixtures and panics

mod api;
mod browser;
mod perf;
mod util;
