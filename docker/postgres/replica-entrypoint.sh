#!/bin/bash
# A streaming replica: on first start, clone the primary with pg_basebackup
# (using this replica's slot), then run PostgreSQL as a hot standby.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "$PRIMARY_HOST" -U postgres -q; do sleep 1; done
  # The primary's init script may still be creating the replication user.
  until PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -U replicator \
      -D "$PGDATA" -X stream -R -S "$REPLICA_SLOT"; do
    rm -rf "${PGDATA:?}"/*
    sleep 2
  done
  echo "primary_conninfo = 'host=$PRIMARY_HOST user=replicator password=$REPLICATION_PASSWORD application_name=$REPLICA_SLOT'" \
    >> "$PGDATA/postgresql.auto.conf"
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on
