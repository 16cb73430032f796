#!/usr/bin/env bash
# Print `export DATABASE_URL=... REDIS_URL=...` for the tests, starting what must run.
# Use the machine's PostgreSQL/Redis on 127.0.0.1 when they answer (trust auth); otherwise
# start private instances outside the repository (platform-notes §5, §6), reused across runs.
set -euo pipefail
state="${MSSANTE_SERVICES_DIR:-/tmp/mssante-test-services}"
mkdir -p "$state"
log() { echo "$*" >&2; }

pg_answers() {  # $1 port: accepts a password-less connection as postgres?
  PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc "select 1" >/dev/null 2>&1
}

if [[ -z "${DATABASE_URL:-}" ]]; then
  if pg_answers 5432; then
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/mssante"
  else
    port="${MSSANTE_PG_PORT:-55432}"
    if ! pg_answers "$port"; then
      bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
      data="$state/pg"
      run=()
      if [[ "$(id -u)" == "0" ]]; then run=(runuser -u postgres --); chown postgres: "$state"; fi
      if [[ ! -f "$data/PG_VERSION" ]]; then
        log "PostgreSQL privé : initialisation dans $data"
        "${run[@]}" "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
      fi
      log "PostgreSQL privé : démarrage sur le port $port"
      "${run[@]}" "$bindir/pg_ctl" -D "$data" -l "$state/pg.log" -w -o "-p $port -k $state -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
    fi
    DATABASE_URL="postgres://postgres@127.0.0.1:$port/mssante"
  fi
fi

if [[ -z "${REDIS_URL:-}" ]]; then
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    REDIS_URL="redis://127.0.0.1:6379/0"
  else
    port="${MSSANTE_REDIS_PORT:-56379}"
    if ! redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      log "Redis privé : démarrage sur le port $port"
      redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$state" \
        --daemonize yes --pidfile "$state/redis.pid" --logfile "$state/redis.log"
      for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    fi
    REDIS_URL="redis://127.0.0.1:$port/0"
  fi
fi

echo "export DATABASE_URL='$DATABASE_URL' REDIS_URL='$REDIS_URL'"
