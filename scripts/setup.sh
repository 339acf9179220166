#!/usr/bin/env bash
# Installs what building, testing and trying pgsplit needs on a fresh
# Debian or Ubuntu machine: PostgreSQL server binaries (initdb, pg_ctl,
# pg_basebackup, psql, pgbench), openssl, clang/libclang-dev for
# pg_query, and the tools that check the deployment kit (promtool from
# prometheus, docker-compose, python3-yaml and python3-jsonschema). Safe to
# run repeatedly.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "pgsplit needs a Rust toolchain (cargo): see https://rustup.rs" >&2
  exit 1
fi

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The network-partition test makes namespaces and veth pairs (as root).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# pg_query (PostgreSQL's parser, for SQL classification) is built with bindgen.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
# The deployment kit's checks (scripts/kit.sh).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
python3 -c "import yaml" >/dev/null 2>&1 || need+=(python3-yaml)
python3 -c "import jsonschema" >/dev/null 2>&1 || need+=(python3-jsonschema)

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  # The tests and the demo start their own servers; no system cluster wanted.
  $sudo mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
