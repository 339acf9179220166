#!/usr/bin/env bash
# What read-your-writes costs: pgbench through one pgsplit (in front of a
# throwaway primary + 2 replicas from `pgsplit demo`), the same workloads
# run once per consistency level, chosen per session with
# PGOPTIONS="-c pgsplit.consistency=...". Prints TPS, average latency and
# the ratio of each level to `eventual`, measured in this one run.
#
#   bench/consistency.sh                 # 16 clients, 15 s per run
#   CLIENTS=32 DURATION=10 bench/consistency.sh
#
# Workloads (autocommit statements, as most web applications send them):
#   write:  one UPDATE per transaction (the commit-position round trip is
#           all read_your_writes adds to a write);
#   mixed:  an UPDATE of a random account, then reading it back and three
#           other accounts (reads right after the client's own write).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
DURATION=${DURATION:-15}
SCALE=${SCALE:-10}
source bench/lib.sh
start_demo
"$PGBENCH" -i -q -s "$SCALE" "postgresql://app@127.0.0.1:$primary/app" >/dev/null 2>&1

cat >"$work/write.sql" <<SQL
\set aid random(1, 100000 * $SCALE)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SQL
cat >"$work/mixed.sql" <<SQL
\set aid random(1, 100000 * $SCALE)
\set other random(1, 100000 * $SCALE)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :other;
SELECT abalance FROM pgbench_accounts WHERE aid = :other + 1;
SELECT abalance FROM pgbench_accounts WHERE aid = :other + 2;
SQL

run() { # script consistency: prints "TPS latency_ms", or "failed -"
  local out
  out=$(PGOPTIONS="-c pgsplit.consistency=$2" "$PGBENCH" -n -f "$work/$1.sql" -M extended \
    -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "postgresql://app@127.0.0.1:$port/app" 2>&1) || true
  if grep -q "^number of failed transactions: 0 " <<<"$out" && ! grep -qi "abort" <<<"$out"; then
    awk -F'= ' '/^tps/ { split($2, a, " "); t = a[1] } /^latency average/ { split($2, b, " "); l = b[1] }
      END { printf "%.0f %.2f\n", t, l }' <<<"$out"
  else
    echo "failed -"
  fi
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')" 2>/dev/null || echo n/a; }

printf "pgbench through pgsplit, %s clients, %s threads, %s s per run, scale %s\n\n" "$CLIENTS" "$THREADS" "$DURATION" "$SCALE"
printf "%-7s %-17s %8s %12s %12s\n" workload consistency TPS "latency ms" "vs eventual"
for script in write mixed; do
  read -r base_tps base_lat < <(run "$script" eventual)
  printf "%-7s %-17s %8s %12s %12s\n" "$script" eventual "$base_tps" "$base_lat" 1.00x
  for level in sticky read_your_writes; do
    read -r tps lat < <(run "$script" "$level")
    printf "%-7s %-17s %8s %12s %12s\n" "$script" "$level" "$tps" "$lat" "$(ratio "$tps" "$base_tps")"
  done
done
