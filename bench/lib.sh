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
