#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration
# tests against real PostgreSQL servers (started and removed by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
