#!/usr/bin/env bash
# Builds pgsplit and runs `pgsplit demo`: a throwaway primary, two streaming
# replicas and the proxy on 127.0.0.1:6432. Ctrl-C stops and removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
exec ./target/release/pgsplit demo "$@"
