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
