//! End-to-end tests of the datamon binary.

mod mount;
