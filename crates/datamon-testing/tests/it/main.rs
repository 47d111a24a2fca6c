//! Integration tests: the conformance suite on every available backend, and transfers through
//! the fault-injecting proxy. Real servers come from the environment (see
//! `datamon_testing::backends`); `scripts/servers/up.sh` starts them.

mod conformance;
mod encryption;
mod faults;
mod gc;
