#!/usr/bin/env bash
# Runs the whole test suite: unit, property, golden and end-to-end tests of the real binary.
# Usage: scripts/test.sh [extra nextest/cargo-test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "cargo-nextest not found; falling back to cargo test" >&2
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
