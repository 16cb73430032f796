#!/bin/sh
# First start: a cluster whose superuser is POSTGRES_USER (password from POSTGRES_PASSWORD_FILE)
# and a database POSTGRES_DB, as the official image does; then PostgreSQL on every address
# (the compose network), password required. fsync off: a throw-away smoke database.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off
