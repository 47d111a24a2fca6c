//! The CSI driver driven over its unix socket by a tonic gRPC client, as the kubelet and the
//! external provisioner call it, with real FUSE mounts.
//!
//! FUSE tests need root, `/dev/fuse` and `fusermount3`; when they are missing, the tests print
//! "skipping", unless `DATAMON_TEST_REQUIRE` names `fuse` (as `.ci/run` sets it): then they fail.

#![allow(clippy::unwrap_used, missing_docs)]
// Tests write fixtures (and try writes through read-only mounts) directly.
#![allow(clippy::disallowed_methods)]

mod harness;

mod controller;
mod identity;
mod metrics;
mod node;
mod versioned;
