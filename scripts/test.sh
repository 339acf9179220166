#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the integration
# tests against real PostgreSQL servers (started and removed by the tests),
# and the deployment kit's checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
scripts/kit.sh
scripts/fuzz.sh
