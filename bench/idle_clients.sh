#!/usr/bin/env bash
# Memory per idle client: opens CLIENTS (default 10000) logged-in, idle
# client connections to a pgsplit and reports its resident memory per
# client (RSS after minus RSS before, divided by the clients). The aim is
# under 10 KiB per idle client.
#
#   bench/idle_clients.sh
#   CLIENTS=5000 bench/idle_clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-10000}
ulimit -n "$(ulimit -Hn)"
source bench/lib.sh
start_demo

# A second pgsplit in front of the same nodes, with trust authentication
# so that the clients below need no password exchange.
proxy_port=$(free_port)
nodes=$(awk '$1 ~ /^pg[0-9]+$/ { split($4, a, ":"); role = ($1 == "pg1") ? "primary" : "replica";
  printf "  - { name: %s, host: 127.0.0.1, port: %s, role: %s }\n", $1, a[2], role }' "$demo_log")
cat >"$work/idle.yaml" <<YAML
listen: 127.0.0.1:$proxy_port
admin_listen: 127.0.0.1:0
auth_method: trust
max_client_connections: $((CLIENTS + 100))
nodes:
$nodes
users: [{ name: app, password: app }]
YAML
PGSPLIT_LOG=warn ./target/release/pgsplit --config "$work/idle.yaml" 2>"$work/idle.log" &
pid=$!
extra_pids="$pid"
for _ in $(seq 1 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $proxy_port)).close()" 2>/dev/null && break
  sleep 0.2
done

python3 - "$proxy_port" "$CLIENTS" "$pid" <<'PY'
import socket, struct, sys, time
port, count, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def login():
    s = socket.create_connection(("127.0.0.1", port))
    params = b"user\0app\0database\0app\0\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    data = b""
    while not data.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"login refused: {data[:200]!r}")
        data += chunk
    return s

warm = [login() for _ in range(10)]
time.sleep(0.5)
before = rss_kib()
clients = []
start = time.time()
for i in range(count):
    clients.append(login())
took = time.time() - start
time.sleep(1)
after = rss_kib()
print(f"{count} idle clients logged in in {took:.1f} s")
print(f"pgsplit RSS: {before} KiB before, {after} KiB after")
print(f"per idle client: {(after - before) / count:.2f} KiB")
PY
