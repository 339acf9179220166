#!/usr/bin/env bash
# Compares pgbench throughput directly against the primary and through
# pgsplit (and PgBouncer, when installed), in one run against one throwaway
# cluster started by `pgsplit demo`.
#
#   bench/pgbench.sh                 # 16 clients, 20 s per run
#   CLIENTS=32 DURATION=10 bench/pgbench.sh
#
# Prints TPS per protocol mode, the ratios to direct, the gain of splitting
# over routing everything to the primary, and how reads spread over nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20}
SCALE=${SCALE:-10}
source bench/lib.sh
start_demo
direct="postgresql://app@127.0.0.1:$primary/app"
proxied="postgresql://app@127.0.0.1:$port/app"

# PgBouncer in transaction pooling with the same pool size, if installed.
pgbouncer_url=""
if command -v pgbouncer >/dev/null 2>&1; then
  start_pgbouncer
fi

"$PGBENCH" -i -q -s "$SCALE" "$direct" >/dev/null 2>&1

tps() { # url mode: prints TPS, or "failed" when a transaction failed or a client aborted
  local out
  out=$("$PGBENCH" -S -M "$2" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$1" 2>&1) || true
  if grep -q "^number of failed transactions: 0 " <<<"$out" && ! grep -qi "abort" <<<"$out"; then
    awk -F'= ' '/^tps/ { split($2, a, " "); printf "%.0f", a[1] }' <<<"$out"
  else
    echo failed
  fi
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')" 2>/dev/null || echo n/a; }

ports=$(awk '$1 ~ /^pg[0-9]+$/ { split($4, a, ":"); print a[2] }' "$demo_log")
commits() { # xact_commit of database app on every node, space separated
  for p in $ports; do
    psql -XAtq "postgresql://app@127.0.0.1:$p/app" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'"
  done | tr '\n' ' '
}
spread() { # before after: share of transactions per node
  python3 - "$1" "$2" <<'PY'
import sys
b = [int(x) for x in sys.argv[1].split()]
a = [int(x) for x in sys.argv[2].split()]
d = [max(0, y - x) for x, y in zip(b, a)]
t = sum(d) or 1
print("/".join(f"{100 * x // t}" for x in d))
PY
}

printf "pgbench -S, %s clients, %s threads, %s s per run, scale %s\n" "$CLIENTS" "$THREADS" "$DURATION" "$SCALE"
printf "split: pgsplit with read/write splitting; primary: pgsplit routing everything to the primary\n"
printf "reads %%: share of transactions per node (pg1 = primary) during the split run\n\n"
printf "%-9s %8s %8s %8s %9s %13s %15s %15s %14s %10s\n" mode direct split primary pgbouncer split/direct primary/direct bouncer/direct split/primary "reads %"
for mode in simple extended prepared; do
  d=$(tps "$direct" "$mode")
  sleep 2 # let the direct run's statistics land before counting
  before=$(commits)
  s=$(tps "$proxied" "$mode")
  sleep 2 # statistics reach pg_stat_database a moment later
  reads=$(spread "$before" "$(commits)")
  p=$(PGOPTIONS="-c pgsplit.route=primary" tps "$proxied" "$mode")
  b=n/a
  if [ -n "$pgbouncer_url" ]; then b=$(tps "$pgbouncer_url" "$mode"); fi
  printf "%-9s %8s %8s %8s %9s %13s %15s %15s %14s %10s\n" "$mode" "$d" "$s" "$p" "$b" \
    "$(ratio "$s" "$d")" "$(ratio "$p" "$d")" "$(ratio "$b" "$d")" "$(ratio "$s" "$p")" "$reads"
done
