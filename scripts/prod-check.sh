#!/usr/bin/env bash
# `make prod-check`: the production path for real (issue 17). Builds the image from the
# Dockerfile, brings docker-compose.yml up with a generated test configuration, waits for the
# healthchecks, runs scripts/prod_journey.py against the containers, and tears everything down
# (volumes too), even on failure.
#
# This machine has no Docker daemon and no registry (platform-notes §8): podman + runc, a Debian
# bookworm base made once with debootstrap (cached under /var/tmp), PostgreSQL and Redis images
# built from that base (deploy/prod-check/compose.override.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${PROD_CHECK_CACHE:-/var/tmp/mssante-prod-check}
BASE_IMAGE=localhost/mssante-debian:bookworm
PORTAL_IMAGE=localhost/mssante-portal:prod-check
PROJECT=mssante-prodcheck
PODMAN_COMPOSE_VERSION=1.6.0
PY=$ROOT/.venv/bin/python

START=$(date +%s)
PHASE_START=$START
PHASE=""
phase() {  # phase NAME: prints the duration of the previous phase, then starts NAME
  local now
  now=$(date +%s)
  [[ -n "$PHASE" ]] && printf '== %-34s %4ss\n' "$PHASE" "$((now - PHASE_START))"
  PHASE=$1
  PHASE_START=$now
  [[ -n "$PHASE" ]] && echo "== $PHASE..."
  return 0
}

if [[ "$(id -u)" != "0" ]]; then
  echo "make prod-check installe podman et lance des conteneurs : à lancer en root." >&2
  exit 1
fi

# --- 1. Tools --------------------------------------------------------------------------------
phase "outils (podman, runc, debootstrap)"
pkgs=(podman runc debootstrap netavark aardvark-dns iptables)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "Installation des paquets Debian : ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -x $PY ]]; then
  echo "Pas de .venv : lancez d'abord make test (ou make venv)." >&2
  exit 1
fi
COMPOSE_BIN=$ROOT/.venv/bin/podman-compose
if ! "$COMPOSE_BIN" --version 2>/dev/null | grep -q "podman-compose version $PODMAN_COMPOSE_VERSION"; then
  "$PY" -m pip install --quiet "podman-compose==$PODMAN_COMPOSE_VERSION" 2>&1 | grep -v "is ignored" || true
fi

# podman's settings for this machine, in a file of our own (CONTAINERS_CONF), the system's
# untouched: runc (crun refuses hybrid cgroups here), ulimits at or below the hard limits
# (setrlimit above them is denied), netavark + aardvark-dns so compose's service names resolve.
mkdir -p "$CACHE"
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[[ $nofile == unlimited || $nofile -gt 8192 ]] && nofile=8192
[[ $nproc == unlimited || $nproc -gt 4096 ]] && nproc=4096
cat >"$CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
EOF
export CONTAINERS_CONF=$CACHE/containers.conf

# --- 2. The Debian base image (debootstrap, once) ----------------------------------------------
phase "image de base Debian"
if ! podman image exists "$BASE_IMAGE"; then
  tarball=$CACHE/bookworm-minbase.tar
  if [[ ! -s $tarball ]]; then
    # The Debian mirror apt already uses (not the security or other vendors' repositories).
    mirror=$( (grep -rhoE '(URIs:|^deb)[[:space:]]+[^[:space:]]+/debian/?([[:space:]]|$)' \
      /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | awk 'NR == 1 {print $2}')
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "debootstrap bookworm (minbase) depuis $mirror"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase bookworm "$CACHE/rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    tar -C "$CACHE/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$CACHE/rootfs"
  fi
  podman import "$tarball" "$BASE_IMAGE" >/dev/null 2>&1
fi

# --- 3. Images ------------------------------------------------------------------------------
phase "construction des images"
# This machine's HTTPS goes through a proxy whose CA is in the host's bundle: the build's pip
# gets that bundle (a volume of the build, not a layer of the image).
printf '[global]\ncert = /run/host-ca.crt\n' >"$CACHE/pip.conf"
build_volumes=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro -v "$CACHE/pip.conf:/etc/pip.conf:ro")
build() {  # build TAG LOG ARGS...: the previous image of TAG is removed once replaced
  local tag=$1 log=$2 before after
  shift 2
  before=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  podman build --pull=never --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" "$@" >"$log" 2>&1 \
    || { tail -30 "$log" >&2; return 1; }
  after=$(podman image inspect --format '{{.Id}}' "$tag")
  if [[ -n $before && $before != "$after" ]]; then podman rmi "$before" >/dev/null 2>&1 || true; fi
}
build "$PORTAL_IMAGE" "$CACHE/build-portal.log" "${build_volumes[@]}" .
build localhost/mssante-prodcheck-postgres:15 "$CACHE/build-postgres.log" \
  -f deploy/prod-check/postgres.Containerfile deploy/prod-check
build localhost/mssante-prodcheck-redis:7 "$CACHE/build-redis.log" \
  -f deploy/prod-check/redis.Containerfile deploy/prod-check

# --- 4. Test configuration (a temporary folder, never the repository) -----------------------------
phase "configuration de test"
RUN_DIR=$(mktemp -d "$CACHE/run.XXXXXX")
export PORTAL_ENV_FILE=$RUN_DIR/env PORTAL_SECRETS_DIR=$RUN_DIR/secrets PORTAL_IMAGE
free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
HTTP_PORT=$(free_port); SMTP_PORT=$(free_port); SINK_PORT=$(free_port)
export PORTAL_HTTP_PORT=127.0.0.1:$HTTP_PORT GATEWAY_SMTP_PORT=127.0.0.1:$SMTP_PORT
compose() { "$COMPOSE_BIN" -p "$PROJECT" -f docker-compose.yml -f deploy/prod-check/compose.override.yml "$@"; }

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0)) && [[ -n ${RUN_DIR:-} ]]; then
    echo "== échec : fin des journaux des conteneurs" >&2
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "--- $c" >&2
      podman logs --tail 25 "$c" 2>&1 | sed 's/^/    /' >&2
    done
  fi
  if [[ -n ${PROD_CHECK_KEEP:-} ]]; then  # debugging: leave the containers up
    echo "== PROD_CHECK_KEEP : conteneurs laissés ($PROJECT, $RUN_DIR)"
    exit "$rc"
  fi
  phase "arrêt et suppression (volumes compris)"
  compose down -v -t 5 >"$CACHE/down.log" 2>&1
  # Whatever compose left (a container it no longer knows), by this project's label only.
  podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f >/dev/null 2>&1
  podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null 2>&1
  [[ -n ${RUN_DIR:-} ]] && rm -rf "$RUN_DIR"
  phase ""
  echo "== durée totale : $(($(date +%s) - START))s"
  exit "$rc"
}
trap cleanup EXIT

"$PY" - "$RUN_DIR" "$SINK_PORT" <<'EOF'
"""The test PKI (devtools/pki.py) and the .env: .env.example as the README says to copy it, with
the secrets, addresses and demo switches of this run."""
import secrets
import shutil
import sys
from pathlib import Path

from devtools.pki import make_test_pki

run, sink_port = Path(sys.argv[1]), sys.argv[2]
pki = run / "pki"
make_test_pki(pki)
tls = run / "secrets" / "tls"
tls.mkdir(parents=True)
for src, dst in [("ca.crt", "igc-sante-chain.pem"), ("gateway.crt", "gateway.crt"),
                 ("gateway.key", "gateway.key"), ("ca.crl", "ca.crl")]:
    shutil.copy(pki / src, tls / dst)
for path in [run / "secrets", tls, *tls.iterdir()]:  # read by the containers' own users
    path.chmod(0o755 if path.is_dir() else 0o644)
db_password = secrets.token_urlsafe(24)
(run / "secrets" / "postgres_password").write_text(db_password + "\n")
(run / "secrets" / "postgres_password").chmod(0o644)
site = "portail.prod-check.test"
values = {
    "PORTAL_SITE_URL": f"https://{site}",
    # web: the portal calls the PSC mock by the compose service name (PSC_DISCOVERY_URL).
    "DJANGO_ALLOWED_HOSTS": f"{site},web",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DOVECOT_MASTER_PASSWORD": secrets.token_urlsafe(24),
    "DATABASE_URL": f"postgres://mssante:{db_password}@postgres:5432/mssante",
    "REDIS_URL": "redis://redis:6379/0",
    "CACHE_URL": "redis://redis:6379/1",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    "PORTAL_DEMO": "true",
    "PSC_MOCK_ENABLED": "true",
    "PSC_DISCOVERY_URL": "http://web:8000/_dev/psc/auth/realms/esante-wallet/"
    ".well-known/wallet-openid-configuration",
    "BEHIND_TLS_PROXY": "true",  # the journey speaks as the TLS proxy would (X-Forwarded-Proto)
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "TLS_CRL_URLS": "/etc/mssante/tls/ca.crl",
    "RELAY_ROUTES": f"operateur-test.mssante.fr=host.containers.internal:{sink_port}",
    "EXPORT_DIR": "/var/lib/mssante-portal/exports",
    "MSS_NIL": "0000000000",
    # No download from the national services during a smoke run.
    "WHITELIST_URL": "/etc/mssante/tls/absent-liste-blanche.xml",
    "ANNUAIRE_EXTRACTION_URL": "/etc/mssante/tls/absent-extraction.zip",
}
lines, seen = [], set()
for line in Path(".env.example").read_text(encoding="utf-8").splitlines():
    key = line.partition("=")[0].strip()
    if line.strip() and not line.lstrip().startswith("#") and key in values:
        line = f"{key}={values[key]}"
        seen.add(key)
    lines.append(line)
lines += [f"{k}={v}" for k, v in values.items() if k not in seen]
(run / "env").write_text("\n".join(lines) + "\n", encoding="utf-8")
EOF

# --- 5. Up, in the order of depends_on ----------------------------------------------------------
# podman 4.3 has no systemd here to run healthchecks on a timer, and podman-compose ignores the
# service_healthy conditions before podman 4.6: the script starts the services in the order
# docker-compose.yml declares and runs each service's own healthcheck (`podman healthcheck run`)
# until it passes.
container_of() { podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=io.podman.compose.service=$1" --format '{{.Names}}' | head -1; }
wait_healthy() {  # wait_healthy SERVICE SECONDS
  local c deadline
  c=$(container_of "$1")
  deadline=$(($(date +%s) + $2))
  until podman healthcheck run "$c" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      echo "ÉCHEC : $1 n'est pas prêt après $2 s (healthcheck de docker-compose.yml)." >&2
      return 1
    fi
    sleep 2
  done
  echo "   $1 : prêt (healthcheck)"
}
phase "démarrage : postgres, redis"
compose up -d --no-build --no-deps postgres redis >"$CACHE/up.log" 2>&1 || { cat "$CACHE/up.log" >&2; exit 1; }
wait_healthy postgres 90
wait_healthy redis 30
phase "démarrage : migrate"
compose up -d --no-build --no-deps migrate >>"$CACHE/up.log" 2>&1 || { cat "$CACHE/up.log" >&2; exit 1; }
rc=$(podman wait "$(container_of migrate)")
if [[ $rc != 0 ]]; then echo "ÉCHEC : migrate a fini avec le code $rc." >&2; exit 1; fi
phase "démarrage : dovecot, web, workers, beat, gateway"
compose up -d --no-build --no-deps dovecot >>"$CACHE/up.log" 2>&1 || { cat "$CACHE/up.log" >&2; exit 1; }
wait_healthy dovecot 90
compose up -d --no-build --no-deps web worker store-worker beat gateway >>"$CACHE/up.log" 2>&1 \
  || { cat "$CACHE/up.log" >&2; exit 1; }
wait_healthy web 120

# --- 6. The journey ---------------------------------------------------------------------------
phase "parcours"
"$PY" scripts/prod_journey.py --project "$PROJECT" --http-port "$HTTP_PORT" \
  --smtp-port "$SMTP_PORT" --sink-port "$SINK_PORT" --pki "$RUN_DIR/pki"
