#!/usr/bin/env bash
# Soak: mixed pgbench load (90% select-only, 10% TPC-B) through pgsplit for
# SOAK_MINUTES (default 20), with a replica restarted every RESTART_EVERY
# minutes (default 2, alternating replicas). Each minute is its own pgbench
# run, so clients that a restart cost an error are counted and replaced.
# Prints per minute: TPS, p99 latency, failed pgbench clients, pgsplit's
# RSS; and RSS at start and end. Not part of CI (it takes 20 minutes).
#
#   bench/soak.sh                      # 20 minutes
#   SOAK_MINUTES=3 bench/soak.sh       # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

minutes=${SOAK_MINUTES:-20}
restart_every=${RESTART_EVERY:-2}
clients=${SOAK_CLIENTS:-16}

start_demo
repo=$PWD
url="postgresql://app@127.0.0.1:$port/app?sslmode=disable"
"$PGBENCH" -i -s 5 -q "$url" >/dev/null 2>&1

pg_ctl=$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
datadir_of() { awk -v n="$1" '$1 == n { gsub(/[()]/, "", $5); print $5 }' "$demo_log"; }
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$demo/status"; }

rss_start=$(rss_kib)
printf '%-6s %10s %10s %8s %10s %s\n' minute tps p99_ms failed rss_MiB event
for minute in $(seq 1 "$minutes"); do
  event=""
  restarter=""
  if ((minute % restart_every == 0)); then
    replica=pg$((2 + (minute / restart_every) % 2))
    # Restarted 20 s into the minute, under load.
    (sleep "${RESTART_AFTER:-20}" && as_postgres "$pg_ctl" -D "$(datadir_of "$replica")" -m fast -w restart >/dev/null 2>&1) &
    restarter=$!
    event="restart $replica"
  fi
  rm -f "$work"/pgbench_log.*
  out=$(cd "$work" && "$PGBENCH" -n -c "$clients" -j 2 -T "${ROUND_SECONDS:-60}" -b select-only@9 -b tpcb-like@1 \
    --log --sampling-rate 0.2 "$url" 2>&1 || true)
  [ -n "$restarter" ] && wait "$restarter"
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  failed=$(grep -c "client .* aborted" <<<"$out" || true)
  p99=$(cat "$work"/pgbench_log.* 2>/dev/null | python3 -c '
import sys
lat = sorted(int(line.split()[2]) for line in sys.stdin if line.strip())
print(f"{lat[int(len(lat) * 0.99)] / 1000:.2f}" if lat else "n/a")')
  rss=$(awk -v k="$(rss_kib)" 'BEGIN { printf "%.1f", k / 1024 }')
  printf '%-6s %10s %10s %8s %10s %s\n' "$minute" "${tps:-0}" "$p99" "$failed" "$rss" "$event"
done
rss_end=$(rss_kib)
echo
echo "pgsplit RSS: start $((rss_start / 1024)) MiB, end $((rss_end / 1024)) MiB"
cd "$repo"
