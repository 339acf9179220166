#!/bin/bash
# Runs once in the primary's empty data directory (docker-entrypoint-initdb.d):
# a replication user with a slot per replica, and the application's user
# and database.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
SELECT pg_create_physical_replication_slot('replica1');
SELECT pg_create_physical_replication_slot('replica2');
CREATE ROLE app WITH LOGIN PASSWORD '${APP_PASSWORD}';
CREATE DATABASE app OWNER app;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
