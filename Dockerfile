# One image for every process of the portal (web, worker, store-worker, beat, dovecot, gateway).
# The base is a build argument: the official Python image by default; `make prod-check` builds on
# a Debian bookworm made with debootstrap (no registry there), which has no Python: Debian's
# python3 (3.11 in bookworm) is then installed. Either way the portal lives in /opt/venv.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORTAL_ENV=production \
    STATIC_ROOT=/srv/mssante-portal/staticfiles \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN set -eu; \
    pkgs="dovecot-imapd dovecot-lmtpd dovecot-auth-lua lua-socket gnupg ghostscript curl ca-certificates"; \
    command -v python3.11 >/dev/null || pkgs="$pkgs python3 python3-venv"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*; \
    python3.11 -m venv /opt/venv; \
    useradd --system --no-create-home --shell /usr/sbin/nologin mssante; \
    useradd --system --create-home --shell /usr/sbin/nologin portal

WORKDIR /srv/mssante-portal
# The dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY . .
# The static files of every app, the PSC mock's included: a demonstration (PORTAL_DEMO) turns
# it on at run time, and the manifest must name its files then.
RUN pip install --no-deps -e . \
 && DJANGO_SECRET_KEY=build DATABASE_URL=sqlite:////tmp/build.sqlite3 DOVECOT_MASTER_PASSWORD=build \
    PSC_MOCK_ENABLED=true PORTAL_DEMO=true \
    STATIC_ROOT=/srv/mssante-portal/staticfiles python manage.py collectstatic --noinput

# State shared between processes through named volumes (a fresh named volume takes the owner
# of the folder it is mounted on): Dovecot's folder (the list of BALs, written by web and
# worker; the root-run Dovecot writes its configuration there too), the CRLs in force (synced
# by worker, read by gateway) and the encrypted BAL exports; PORTAL_VAR_DIR is the portal's.
RUN d=/var/lib/mssante-portal; mkdir -p $d/dovecot $d/tls $d/exports \
 && chown portal $d $d/dovecot $d/tls $d/exports

USER portal
EXPOSE 8000
CMD ["gunicorn", "mssante_portal.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--access-logfile", "-"]
