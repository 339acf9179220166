# Shared by the bench scripts (source it from the repo root): a release
# build and a throwaway primary + 2 replicas with pgsplit in front
# (`pgsplit demo`), all removed on exit.
#
# After start_demo: $work (scratch dir), $port (pgsplit), $primary (the
# primary's port), $demo_log, and PGPASSWORD set for the app user. Put the
# pids of extra processes to stop in $extra_pids.

PGBENCH=${PGBENCH:-$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)}
extra_pids=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cleanup() {
  [ -n "$extra_pids" ] && kill $extra_pids 2>/dev/null
  kill -TERM "$demo" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}

start_demo() {
  cargo build --release --quiet
  work=$(mktemp -d)
  chmod 755 "$work"
  demo_log="$work/demo.log"
  port=$(free_port)
  PGSPLIT_LOG=warn ./target/release/pgsplit demo --listen "127.0.0.1:$port" >"$demo_log" 2>&1 &
  demo=$!
  trap cleanup EXIT
  for _ in $(seq 1 120); do
    grep -q "Connect with" "$demo_log" && break
    kill -0 "$demo" 2>/dev/null || { cat "$demo_log"; exit 1; }
    sleep 0.5
  done
  primary=$(awk '$1 == "pg1" { split($4, a, ":"); print a[2] }' "$demo_log")
  export PGPASSWORD=app
}

# PgBouncer in front of the primary: transaction pooling, the same pool
# size as pgsplit's default. Sets $pgbouncer_url and $bouncer_pid.
start_pgbouncer() {
  local bport
  bport=$(free_port)
  cat >"$work/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$primary dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
INI
  echo '"app" "app"' >"$work/userlist.txt"
  chmod 644 "$work"/*
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- pgbouncer -q "$work/pgbouncer.ini" 2>"$work/pgbouncer.err" &
  else
    pgbouncer -q "$work/pgbouncer.ini" 2>"$work/pgbouncer.err" &
  fi
  sleep 1
  bouncer_pid=$(pgrep -n -x pgbouncer)
  extra_pids="$extra_pids $bouncer_pid"
  pgbouncer_url="postgresql://app@127.0.0.1:$bport/app"
}

# Peer proxies built outside this repository (none of their code is here), given
# by binary path, with read/write splitting over the primary and both
# replicas, transaction pooling and the same pool size. Each sets
# $peer_url and $peer_pid. Replica ports come from the demo's node list.
replica_ports() { awk '$1 ~ /^pg[0-9]+$/ && $1 != "pg1" { split($4, a, ":"); print a[2] }' "$demo_log"; }

# Picks the peer's port ($peer_port) and the replicas' ($r1, $r2).
peer_ports() {
  peer_port=$(free_port)
  read -r r1 r2 <<<"$(replica_ports | tr '\n' ' ')"
}

# Starts a peer in the background (log in $work/NAME.log) and waits for
# its port; sets $peer_pid and $peer_url.
run_peer() { # name command...
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 </dev/null &
  peer_pid=$!
  extra_pids="$extra_pids $peer_pid"
  wait_for_port "$peer_pid" "$peer_port" "$work/$name.log"
  peer_url="postgresql://app@127.0.0.1:$peer_port/app"
}

wait_for_port() { # pid port log
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || { echo "proxy exited; see $3" >&2; tail -5 "$3" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "proxy did not open port $2; see $3" >&2
  return 1
}

# PgCat: md5 to clients (all it offers), its own query parser splitting.
start_pgcat() { # binary
  peer_ports
  cat >"$work/pgcat.toml" <<TOML
[general]
host = "127.0.0.1"
port = $peer_port
admin_username = "pgcat_admin"
admin_password = "pgcat_admin"

[pools.app]
pool_mode = "transaction"
load_balancing_mode = "random"
default_role = "any"
query_parser_enabled = true
query_parser_read_write_splitting = true
primary_reads_enabled = true
prepared_statements_cache_size = 500

[pools.app.users.0]
username = "app"
password = "app"
pool_size = 20
statement_timeout = 0

[pools.app.shards.0]
servers = [["127.0.0.1", $primary, "primary"], ["127.0.0.1", $r1, "replica"], ["127.0.0.1", $r2, "replica"]]
database = "app"
TOML
  run_peer pgcat "$1" --log-level warn --no-color "$work/pgcat.toml"
}

# PgDog: SCRAM to clients, reads over the primary and replicas (its default).
start_pgdog() { # binary
  peer_ports
  cat >"$work/pgdog.toml" <<TOML
[general]
host = "127.0.0.1"
port = $peer_port
default_pool_size = 20
pooler_mode = "transaction"
load_balancing_strategy = "random"
read_write_split = "include_primary"
prepared_statements = "extended"
auth_type = "scram"

[[databases]]
name = "app"
host = "127.0.0.1"
port = $primary
role = "primary"

[[databases]]
name = "app"
host = "127.0.0.1"
port = $r1
role = "replica"

[[databases]]
name = "app"
host = "127.0.0.1"
port = $r2
role = "replica"
TOML
  cat >"$work/pgdog_users.toml" <<TOML
[[users]]
name = "app"
database = "app"
password = "app"
pool_size = 20
TOML
  run_peer pgdog env RUST_LOG=warn "$1" --config "$work/pgdog.toml" --users "$work/pgdog_users.toml"
}
