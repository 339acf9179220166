#!/usr/bin/env bash
# pgsplit beside PgBouncer (and any other proxy) on one primary + 2
# replicas, in one run: pgbench through each, the same workloads, then a
# table of TPS, average and p99 latency, the ratios pgsplit/PgBouncer and
# pgsplit/direct, and each proxy's CPU time per 10k transactions.
#
#   bench/compare.sh                          # 10 s per run
#   DURATION=20 bench/compare.sh
#   PGDOG_BIN=/path/to/pgdog PGCAT_BIN=/path/to/pgcat bench/compare.sh
#       (peer proxies you built yourself; the script writes their configs:
#       read/write splitting over the primary and both replicas,
#       transaction pooling, pool size 20)
#   OTHER_PROXY_URL=postgresql://app@127.0.0.1:6433/app bench/compare.sh
#       (any proxy you started yourself in front of the same primary; its
#       port is printed below. OTHER_PROXY_PID lets the script read its
#       CPU time.)
#
# Rows: select-only (-S) in simple, extended and prepared mode and the
# default TPC-B script, at 16 and 256 clients, and -S with a new
# connection per transaction (-C, connection set-up and authentication).
# "pgsplit" routes everything to the primary (PGOPTIONS=-c
# pgsplit.route=primary), the fair comparison with PgBouncer; "split" is
# pgsplit with read/write splitting on, the comparison with the peers.
# The last column compares each proxy row with pgsplit: pgsplit/direct,
# pgsplit/PgBouncer, and split/peer for the splitting peers.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
source bench/lib.sh
start_demo
echo "cluster: primary on port $primary; pgsplit on $port" >&2
direct="postgresql://app@127.0.0.1:$primary/app"
proxied="postgresql://app@127.0.0.1:$port/app"
pgsplit_pid=$(pgrep -f "pgsplit demo --listen 127.0.0.1:$port" | head -1)

# PgBouncer from Debian's package, transaction pooling, the same pool size.
command -v pgbouncer >/dev/null 2>&1 || {
  echo "installing pgbouncer" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
}
start_pgbouncer
bouncer=$pgbouncer_url

"$PGBENCH" -i -q -s "$SCALE" "$direct" >/dev/null 2>&1

ticks() { # pid: CPU ticks (user + system) so far
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

run() { # url clients args...: prints "tps avg_ms p99_ms transactions"
  local url=$1 clients=$2
  shift 2
  local dir
  dir=$(mktemp -d -p "$work")
  (cd "$dir" && "$PGBENCH" -n -c "$clients" -j "$THREADS" -T "$DURATION" \
     --log --sampling-rate=0.1 "$@" "$url" >out 2>&1) || true
  python3 - "$dir" <<'PY'
import glob, re, sys
d = sys.argv[1]
out = open(f"{d}/out").read()
tps = re.search(r"^tps = ([0-9.]+)", out, re.M)
tx = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
failed = re.search(r"^number of failed transactions: (\d+)", out, re.M)
if not tps or not tx or (failed and failed.group(1) != "0") or "aborted" in out:
    print("failed - - 0"); sys.exit()
lat = sorted(float(line.split()[2]) / 1000 for f in glob.glob(f"{d}/pgbench_log.*") for line in open(f))
avg = sum(lat) / len(lat) if lat else 0
p99 = lat[int(len(lat) * 0.99)] if lat else 0
print(f"{float(tps.group(1)):.0f} {avg:.2f} {p99:.2f} {tx.group(1)}")
PY
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')" 2>/dev/null || echo n/a; }
per10k() { python3 -c "print(f'{($1) / 100 / $2 * 10000:.3f}' if $2 else 'n/a')" 2>/dev/null || echo n/a; }

targets=("direct|$direct|" "pgsplit|$proxied|$pgsplit_pid|primary" "split|$proxied|$pgsplit_pid|auto" "pgbouncer|$bouncer|$bouncer_pid|")
if [ -n "${PGCAT_BIN:-}" ]; then
  start_pgcat "$PGCAT_BIN"
  targets+=("pgcat|$peer_url|$peer_pid|")
fi
if [ -n "${PGDOG_BIN:-}" ]; then
  start_pgdog "$PGDOG_BIN"
  targets+=("pgdog|$peer_url|$peer_pid|")
fi
[ -n "${OTHER_PROXY_URL:-}" ] && targets+=("other|$OTHER_PROXY_URL|${OTHER_PROXY_PID:-}|")

printf "pgbench, %s s per run, %s threads, scale %s; latency in ms; CPU in seconds per 10k transactions\n\n" "$DURATION" "$THREADS" "$SCALE"
printf "%-24s %-9s %8s %8s %8s %8s  %s\n" workload target TPS avg p99 cpu/10k ratio
for workload in "select simple 16|16|-S -M simple" "select extended 16|16|-S -M extended" \
                "select prepared 16|16|-S -M prepared" "tpc-b 16|16|-M extended" \
                "select simple 256|256|-S -M simple" "select extended 256|256|-S -M extended" \
                "tpc-b 256|256|-M extended" "select reconnect 16|16|-S -C"; do
  IFS='|' read -r name clients args <<<"$workload"
  declare -A tps=()
  for target in "${targets[@]}"; do
    IFS='|' read -r label url pid route <<<"$target"
    before=$(ticks "$pid")
    read -r t avg p99 tx < <(PGOPTIONS="${route:+-c pgsplit.route=$route}" run "$url" "$clients" $args)
    after=$(ticks "$pid")
    cpu=n/a
    [ -n "$pid" ] && cpu=$(per10k "$after - $before" "$tx")
    tps[$label]=$t
    printf "%-24s %-9s %8s %8s %8s %8s" "$name" "$label" "$t" "$avg" "$p99" "$cpu"
    case $label in
      direct) printf "\n" ;;
      pgsplit | split) printf "  %s/direct %s\n" "$label" "$(ratio "$t" "${tps[direct]}")" ;;
      pgbouncer) printf "  pgsplit/pgbouncer %s\n" "$(ratio "${tps[pgsplit]}" "$t")" ;;
      *) printf "  split/%s %s\n" "$label" "$(ratio "${tps[split]}" "$t")" ;;
    esac
  done
  unset tps
done
