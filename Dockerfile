# One image for every process of the portal (web, worker, beat, dovecot; later the gateway).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORTAL_ENV=production \
    STATIC_ROOT=/srv/mssante-portal/staticfiles
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-imapd dovecot-lmtpd gnupg ghostscript curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin mssante \
 && useradd --system --create-home --shell /usr/sbin/nologin portal

WORKDIR /srv/mssante-portal
COPY pyproject.toml ./
RUN pip install --no-cache-dir -e . 2>/dev/null || true
COPY . .
RUN pip install --no-cache-dir -e . \
 && DJANGO_SECRET_KEY=build DATABASE_URL=sqlite:////tmp/build.sqlite3 DOVECOT_MASTER_PASSWORD=build \
    STATIC_ROOT=/srv/mssante-portal/staticfiles python manage.py collectstatic --noinput

# The CRLs in force (volume shared by worker, which syncs them, and gateway): owned by portal so
# that a fresh named volume is too.
RUN mkdir -p /var/lib/mssante-portal/tls /var/lib/mssante-portal/exports \
 && chown portal /var/lib/mssante-portal/tls /var/lib/mssante-portal/exports

USER portal
EXPOSE 8000
CMD ["gunicorn", "mssante_portal.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--access-logfile", "-"]
