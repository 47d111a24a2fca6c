//! End-to-end tests: every test drives the real `datamon` binary with its own `DATAMON_HOME`.

mod lineage;
