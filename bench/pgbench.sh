#!/usr/bin/env bash
# Compares pgbench throughput directly against the primary and through
# pgsplit, in one run against one throwaway cluster (`pgsplit demo`).
#
#   bench/pgbench.sh                 # 16 clients, 20 s per run
#   CLIENTS=32 DURATION=10 bench/pgbench.sh
#
# Prints TPS per protocol mode and the ratio pgsplit/direct.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20}
SCALE=${SCALE:-10}
PGBENCH=${PGBENCH:-$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)}

cargo build --release --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
PGSPLIT_LOG=warn ./target/release/pgsplit demo --listen "127.0.0.1:$port" >"$log" 2>&1 &
demo=$!
trap 'kill -INT $demo 2>/dev/null; wait $demo 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 120); do
  grep -q "Connect with" "$log" && break
  kill -0 $demo 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
primary=$(awk '$1 == "pg1" { split($4, a, ":"); print a[2] }' "$log")
export PGPASSWORD=app
direct="postgresql://app@127.0.0.1:$primary/app"
proxied="postgresql://app@127.0.0.1:$port/app"

"$PGBENCH" -i -q -s "$SCALE" "$direct" >/dev/null 2>&1

tps() { # url mode
  "$PGBENCH" -S -M "$2" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$1" 2>/dev/null |
    awk -F'= ' '/^tps/ { split($2, a, " "); printf "%.0f", a[1] }'
}

printf "pgbench -S, %s clients, %s threads, %s s per run, scale %s\n\n" "$CLIENTS" "$THREADS" "$DURATION" "$SCALE"
printf "%-10s %12s %12s %10s\n" mode direct pgsplit ratio
for mode in simple extended prepared; do
  d=$(tps "$direct" "$mode")
  p=$(tps "$proxied" "$mode")
  printf "%-10s %12s %12s %10s\n" "$mode" "$d" "$p" "$(python3 -c "print(f'{$p / $d:.2f}x' if $d else 'n/a')")"
done
