#!/usr/bin/env bash
# Runs every check and test, from a fresh clone on a fresh Debian 12 machine:
# installs what is missing, builds the guests to components, then formatting,
# clippy, and the workspace's tests (unit tests beside the code; integration tests
# in tests/ against the real runtime and the real components).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build-guests.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The integration tests run the `boulder` binary, which `cargo test` alone does not build.
cargo build --workspace --bins --quiet
cargo test --workspace
