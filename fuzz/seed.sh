#!/usr/bin/env bash
# Re-seeds fuzz/corpus/<target>/ from real client traffic: starts a throwaway
# PostgreSQL (trust auth, plus one SCRAM and one cleartext-password role),
# puts a recording TCP relay in front of it, drives it with psql and
# pgbench, and splits what the clients sent into corpus files:
#   startup          the first packets of each connection (SSLRequest,
#                    startup, CancelRequest) and the first messages after
#   client_messages  runs of post-startup messages (Query, Parse/Bind/...,
#                    CopyData, SASL and password messages, Terminate)
#   classify         the SQL texts of the Query and Parse messages
#   scram            the real SCRAM exchanges, rewritten to the scram
#                    target's layout, plus hand-written variants
# A few hand-made startup packets cover what libpq does not send here
# (GSSENCRequest, _pq_. options, protocol 3.2). Each target gets at most
# MAX_FILES files of at most MAX_BYTES bytes, named by their SHA-1 like
# libFuzzer's own corpus files. Existing corpus files are replaced.
#
# Needs PostgreSQL server binaries under /usr/lib/postgresql/*/bin and
# python3; as root, the server runs as the `postgres` OS user.
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir=$PWD

MAX_FILES=${MAX_FILES:-50}
MAX_BYTES=${MAX_BYTES:-8192}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
  echo "seed.sh: no PostgreSQL under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
# Inherited PGHOST/PGPORT/... must not redirect the tools.
while read -r var; do unset "$var"; done < <(env | sed -n 's/^\(PG[A-Z_]*\)=.*/\1/p')

work=$(mktemp -d)
relay_pid=
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
cleanup() {
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
  if [ -f "$work/data/postmaster.pid" ]; then
    as_postgres "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ]; then chown postgres: "$work"; fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "seed.sh: PostgreSQL from $bin" >&2
as_postgres "$bin/initdb" -D "$work/data" -A trust -U postgres --no-sync >"$work/initdb.log"
# Password logins for the two recorded roles, trust for everything else.
{
  echo "host all seed_scram 127.0.0.1/32 scram-sha-256"
  echo "host all seed_password 127.0.0.1/32 password"
  cat "$work/data/pg_hba.conf"
} >"$work/hba" && cat "$work/hba" >"$work/data/pg_hba.conf"
pg_port=$(free_port)
as_postgres "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null

# The relay: accepts on a free port, forwards to the server, and appends
# each connection's client-to-server bytes to conn-<n> (n in accept order).
cat >"$work/relay.py" <<'EOF'
import os, socket, sys, threading

target_port, record_dir, port_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
with open(port_file + ".tmp", "w") as f:
    f.write(str(listener.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)

def pipe(src, dst, record):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record:
                record.write(data)
                record.flush()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

n = 0
while True:
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", target_port))
    record = open(os.path.join(record_dir, "conn-%04d" % n), "wb")
    n += 1
    threading.Thread(target=pipe, args=(client, server, record), daemon=True).start()
    threading.Thread(target=pipe, args=(server, client, None), daemon=True).start()
EOF
mkdir "$work/rec"
python3 "$work/relay.py" "$pg_port" "$work/rec" "$work/relay.port" &
relay_pid=$!
for _ in $(seq 100); do [ -f "$work/relay.port" ] && break; sleep 0.1; done
port=$(cat "$work/relay.port")

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGCONNECT_TIMEOUT=10
psql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }
seq_sql() { "$bin/psql" -X -q "$@" >/dev/null 2>&1 || true; }   # errors expected

# Setup (over the unix socket, so it is not recorded).
PGHOST=$work PGPORT=$pg_port "$bin/psql" -X -q -v ON_ERROR_STOP=1 >/dev/null <<'EOF'
CREATE ROLE seed_scram LOGIN PASSWORD 'scram-secret';
CREATE ROLE seed_password LOGIN PASSWORD 'plain-secret';
CREATE TABLE seed_items (id int PRIMARY KEY, name text, price numeric);
GRANT ALL ON seed_items TO seed_scram, seed_password;
EOF

# psql: simple protocol, multi-statement strings, \copy, catalog queries.
# libpq's default sslmode=prefer sends an SSLRequest first (refused here).
psql -c "INSERT INTO seed_items VALUES (1, 'one', 1.5), (2, 'two; really', 2); SELECT * FROM seed_items WHERE id = 1; UPDATE seed_items SET price = price * 2 WHERE name LIKE 't%'"
psql -c "BEGIN; SET LOCAL statement_timeout = '5s'; SELECT id FROM seed_items ORDER BY id FOR UPDATE; COMMIT"
psql -c "BEGIN READ ONLY; SELECT \$q\$a;b\$q\$, 'it''s', E'\\\\x', \"name\" FROM seed_items /* c; */ -- x;
; COMMIT"
psql -c "SET search_path = public, pg_catalog; SET application_name TO 'seeder'; RESET search_path; SHOW work_mem" -c "DISCARD ALL"
psql -c "WITH moved AS (DELETE FROM seed_items WHERE id = 2 RETURNING *) INSERT INTO seed_items SELECT id + 10, name, price FROM moved"
psql -c "PREPARE q(int) AS SELECT name FROM seed_items WHERE id = \$1; EXECUTE q(1); DEALLOCATE q"
psql -c "CREATE TEMP TABLE scratch AS SELECT generate_series(1, 3) AS n; LISTEN seed_channel; NOTIFY seed_channel, 'hi'; SELECT pg_advisory_lock(42), pg_advisory_unlock(42)"
psql -c "SELECT now(), random() > 2, nextval('no_such_seq')" 2>/dev/null || true
seq_sql -c "SELEC broken syntax; SELECT 1"
printf '3,three,3.5\n4,"four, quoted",\\N\n' >"$work/items.csv"
chmod a+r "$work/items.csv"
psql -c "\\copy seed_items FROM '$work/items.csv' WITH (FORMAT csv, NULL '\\N')" -c "\\copy (SELECT * FROM seed_items ORDER BY id) TO STDOUT"
psql -c '\d+ seed_items' -c '\dt' -c '\df pg_catalog.pg_advisory_lock' -c '\l'
PGOPTIONS="-c search_path=public -c statement_timeout=5s --work-mem=8MB" PGAPPNAME=seed_options \
  psql "sslmode=disable" -c "SHOW statement_timeout"
psql "sslmode=disable dbname=template1" -c "SELECT datname FROM pg_database ORDER BY 1"
seq_sql "replication=database" -c "IDENTIFY_SYSTEM"
# Password exchanges: SCRAM (with and without the SSLRequest) and cleartext.
PGPASSWORD=scram-secret psql -U seed_scram -c "SELECT current_user"
PGPASSWORD=scram-secret psql "sslmode=disable" -U seed_scram -c "SELECT count(*) FROM seed_items"
PGPASSWORD=plain-secret psql -U seed_password -c "SELECT session_user"
PGPASSWORD=wrong seq_sql -U seed_scram -c "SELECT 1"
# A CancelRequest: psql cancels its running query on SIGINT.
"$bin/psql" -X -q -c "SELECT pg_sleep(10)" >/dev/null 2>&1 &
cancel_pid=$!
sleep 1.5
kill -INT "$cancel_pid" 2>/dev/null || true
wait "$cancel_pid" || true

# pgbench: COPY-based initialisation, then the three query modes.
"$bin/pgbench" -i -s 1 -q >/dev/null 2>&1
for mode in simple extended prepared; do
  "$bin/pgbench" -n -t 20 -M "$mode" --random-seed=1 >/dev/null
done

kill "$relay_pid" 2>/dev/null || true
wait "$relay_pid" 2>/dev/null || true
relay_pid=
as_postgres "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null

# Split the recordings into corpus files.
python3 - "$work/rec" "$fuzz_dir/corpus" "$MAX_FILES" "$MAX_BYTES" <<'EOF'
import base64, hashlib, os, struct, sys

rec_dir, corpus_dir, max_files, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
SSL, GSS, CANCEL = 80877103, 80877104, 80877102

def frames(data):
    """Tagged messages; a partial one at the end is dropped."""
    out, i = [], 0
    while i + 5 <= len(data):
        length = struct.unpack(">i", data[i + 1:i + 5])[0]
        if length < 4 or i + 1 + length > len(data):
            break
        out.append(data[i:i + 1 + length])
        i += 1 + length
    return out

def startup_phase(data):
    """(bytes of the startup packets, rest, user)."""
    i, user = 0, None
    while i + 8 <= len(data):
        length, code = struct.unpack(">ii", data[i:i + 8])
        packet = data[i:i + length]
        i += length
        if code in (SSL, GSS):
            continue
        if code >> 16 == 3:
            fields = packet[8:].split(b"\0")
            params = dict(zip(fields[0::2], fields[1::2]))
            user = params.get(b"user", b"").decode()
        break
    return data[:i], data[i:], user

conns = []
for name in sorted(os.listdir(rec_dir)):
    with open(os.path.join(rec_dir, name), "rb") as f:
        data = f.read()
    if data:
        conns.append(startup_phase(data))

def pick(candidates, key):
    """Unique inputs under the size cap; the first of each key first, then
    the rest in order, up to max_files."""
    seen, firsts, rest = set(), [], []
    for c in candidates:
        if len(c) > max_bytes or c in seen:
            continue
        seen.add(c)
        k = key(c)
        (rest if any(k == key(f) for f in firsts) else firsts).append(c)
    return (firsts + rest)[:max_files]

def write(target, inputs):
    d = os.path.join(corpus_dir, target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    for data in inputs:
        with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    print("seed.sh: %-16s %3d files, %6d bytes" % (target, len(inputs), sum(map(len, inputs))), file=sys.stderr)

# startup: the startup-phase packets plus the first two messages after them.
def packet(code, payload=b""):
    return struct.pack(">ii", 8 + len(payload), code) + payload
def params(*pairs):
    return b"".join(k + b"\0" + v + b"\0" for k, v in pairs) + b"\0"
handmade = [
    packet(GSS) + packet(196608, params((b"user", b"app"), (b"database", b"db"))),
    packet(196610, params((b"user", b"app"), (b"_pq_.test_option", b"on"))),
    packet(196608, params((b"user", b"app"), (b"options", b"-c search_path=a\\ b --work-mem=4MB -cgeqo=off"))),
    packet(CANCEL, struct.pack(">ii", 1234, 5678)),
]
startup = [s + b"".join(frames(rest)[:2]) for s, rest, _ in conns] + handmade
write("startup", pick(startup, lambda c: c[:8]))

# client_messages: each connection's messages in runs ending at a Sync,
# Query, CopyDone or Terminate, joined while under 2 KiB.
chunks = []
for _, rest, _ in conns:
    run = b""
    for m in frames(rest):
        run += m
        if m[:1] in b"SQcX" and len(run) > 256:
            chunks.append(run)
            run = b""
    if run:
        chunks.append(run)
chunks = [c[:2048] for c in chunks]
def tags(c):
    return bytes(m[0] for m in frames(c))
write("client_messages", pick(chunks, lambda c: bytes(sorted(set(tags(c))))))

# classify: SQL texts from Query and Parse.
sqls = []
for _, rest, _ in conns:
    for m in frames(rest):
        body = m[5:]
        if m[:1] == b"Q":
            sqls.append(body.split(b"\0")[0])
        elif m[:1] == b"P":
            sqls.append(body.split(b"\0")[1])
sqls = [s for s in sqls if s.strip()]
write("classify", pick(sqls, lambda s: s.split(None, 1)[0].lower()))

# scram: selector byte, client-first, NUL, client-final (see the target).
b64 = lambda b: base64.b64encode(b).decode()
CERT_HASH = b"\xab" * 32
scram = []
for _, rest, user in conns:
    if user != "seed_scram":
        continue
    ms = [m for m in frames(rest) if m[:1] == b"p"]
    if len(ms) < 2:
        continue
    mech, first = ms[0][5:].split(b"\0", 1)
    client_first = first[4:]
    client_final = ms[1][5:].decode()
    without_proof = client_final.rsplit(",p=", 1)[0]
    nonce = without_proof.split(",r=", 1)[1].split(",")[0]
    templated = without_proof.replace(nonce, "${nonce}") + ",p=${proof}"
    scram.append(b"\0" + client_first + b"\0" + templated.encode())
    scram.append(b"\1" + client_first + b"\0" + templated.encode())
    scram.append(b"\0" + client_first + b"\0" + client_final.encode())
    scram.append(b"\0" + client_first)
gs2_plus = "p=tls-server-end-point,,"
for selector, first, final in [
    (2, gs2_plus + "n=,r=fyko+d2lbbFgONRv9qkxdawL",
     "c=%s,r=${nonce},p=${proof}" % b64(gs2_plus.encode() + CERT_HASH)),
    (2, gs2_plus + "n=,r=fyko+d2lbbFgONRv9qkxdawL", "c=%s,r=${nonce},p=${proof}" % b64(gs2_plus.encode())),
    (0, "y,,n=,r=rOprNGfwEbeRWgbNEkqO", "c=eSws,r=${nonce},p=${proof}"),
    (1, "y,,n=,r=rOprNGfwEbeRWgbNEkqO", "c=eSws,r=${nonce},p=${proof}"),
    (0, "n,a=admin,n=user,r=abc,ext=1", "c=%s,r=${nonce},x=more,p=${proof}" % b64(b"n,a=admin,")),
    (0, "n,,n=,r=abc", "c=biws,r=${nonce},p=%s" % b64(bytes(32))),
    (0, "n,,n=,r=abc", "c=biws,r=${nonce},p=${proof},p=${proof}"),
    (0, "n,,m=ext,n=,r=abc", "c=biws,r=wrong,p=AAAA"),
]:
    scram.append(bytes([selector]) + first.encode() + b"\0" + final.encode())
write("scram", pick(scram, lambda s: s[:1]))
EOF
