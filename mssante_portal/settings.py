"""Settings of the MSSanté portal, fed only by environment variables (see .env.example).

Three run modes (PORTAL_ENV):
- ``production`` (default): nothing is assumed; secrets and database must be given.
- ``embedded``: ``make run`` on one machine: SQLite and a filesystem Celery transport under
  ``var/``, the PSC mock on, a generated secret key kept under ``var/``.
- ``test``: ``make test``: PostgreSQL and Redis from DATABASE_URL / REDIS_URL.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from mssante_portal.env import (
    EnvError,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

PORTAL_ENV = env_choice("PORTAL_ENV", "production", ("production", "embedded", "test"))
EMBEDDED = PORTAL_ENV == "embedded"
TESTING = PORTAL_ENV == "test"

VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", EMBEDDED)


def _secret(name: str) -> str:
    """A secret from the environment (or ``<name>_FILE``). Outside production, a random value
    is generated once and kept under var/ (never in the repository)."""
    value = env_str(name)
    if value:
        return value
    if PORTAL_ENV == "production":
        raise EnvError(f"{name} (or {name}_FILE) is required in production")
    path = VAR_DIR / "secrets" / name.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: processes starting together agree on one value
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(50))
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret("DJANGO_SECRET_KEY")

# Public base URL of the portal (used to build the PSC redirect and logout URLs in the mock).
SITE_URL = env_str("PORTAL_SITE_URL", "http://127.0.0.1:8000" if PORTAL_ENV != "production" else "")
SITE_URL = SITE_URL.rstrip("/")

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS",
    ["127.0.0.1", "localhost"] if PORTAL_ENV != "production" else [],
)
if SITE_URL and urlsplit(SITE_URL).hostname and urlsplit(SITE_URL).hostname not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(urlsplit(SITE_URL).hostname or "")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [SITE_URL] if SITE_URL else [])

INSTALLED_APPS = [
    "accounts.admin_config.PortalAdminConfig",  # django.contrib.admin, second factor required
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "csp",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.mfa",
    "mssante_portal",
    "accounts",
    "accounts.psc",
    "annuaire",
    "mailboxes",
]

PSC_MOCK_ENABLED = env_bool("PSC_MOCK_ENABLED", EMBEDDED)
# A public demonstration may run the mock with DEBUG off, but only when said explicitly.
PORTAL_DEMO = env_bool("PORTAL_DEMO", False)
if PSC_MOCK_ENABLED and PORTAL_ENV == "production" and not PORTAL_DEMO:
    # Refused here, while the settings load, not only by a system check (mssante.E001):
    # gunicorn imports the settings without running checks, and the mock signs anyone in.
    raise EnvError(
        "PSC_MOCK_ENABLED=true is refused with PORTAL_ENV=production: the Pro Santé Connect "
        "mock signs anyone in. Set PSC_MOCK_ENABLED=false, or PORTAL_DEMO=true for a public "
        "demonstration without real professionals."
    )
if PSC_MOCK_ENABLED:
    INSTALLED_APPS += ["devtools.psc_mock", "devtools.demo"]

MIDDLEWARE = [
    # /sante/ and /sante/pret/ first: probes come with the container's own Host and over plain
    # HTTP (docstring of HealthMiddleware); the host check and HTTPS redirect stay for the rest.
    "mailboxes.operator.health.HealthMiddleware",
    # Dovecot's login requests (loopback and the shared secret), at every IMAP login of a
    # software: none of the page middleware below is of use to them (its docstring).
    "mailboxes.software.middleware.DovecotAuthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.SessionTimeoutMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "mssante_portal.errors.PortalErrorMiddleware",
]

ROOT_URLCONF = "mssante_portal.urls"
WSGI_APPLICATION = "mssante_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "mssante_portal.context.portal",
                "mailboxes.console.context.console",
                "mailboxes.operator.context.operator",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
if EMBEDDED:
    _default_db = f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"
elif TESTING:
    _default_db = "postgres://postgres@127.0.0.1:5432/mssante"
else:
    _default_db = ""
DATABASE_URL = env_str("DATABASE_URL", _default_db)
if not DATABASE_URL:
    raise EnvError("DATABASE_URL is required in production")
DATABASES = {
    # Persistent connections: opening one per request costs more than a page's queries.
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serves several processes (web, worker, beat) in the embedded mode: wait for locks
    # and use WAL so that readers do not block the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Cache (allauth keeps the id_token replay list here) -----------------------------------
# No default in production: a container's 127.0.0.1 has no Redis (system check mssante.E023).
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0" if TESTING else "")
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
        if EMBEDDED
        else {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str(
                "CACHE_URL", REDIS_URL.rsplit("/", 1)[0] + "/1" if REDIS_URL else ""
            ),
        }
    )
}

# --- Celery ---------------------------------------------------------------------------------
if EMBEDDED:
    _celery_dir = VAR_DIR / "celery"
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Closing and exporting a BAL read all its mail and delete its Maildir: they run on the queue
# `store`, consumed only by the worker that mounts the mail (compose's store-worker).
CELERY_TASK_ROUTES = {"mailboxes.tasks.run_mailbox_job": {"queue": "store"}}

# --- Auth: Pro Santé Connect through django-allauth -------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",  # the break-glass operator account (admin only)
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:home"

ACCOUNT_ADAPTER = "accounts.psc.adapter.PortalAccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.psc.adapter.PscSocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
# password1: the break-glass account signs in with a password (sign-up itself is closed).
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_USER_DISPLAY = "accounts.selectors.user_display"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_QUERY_EMAIL = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_LOGIN_ON_GET = False  # the button posts a form (CSRF), as allauth recommends


def _rates(name: str, default: str) -> str:
    """allauth's rate syntax, checked at start: ``<count>/<duration>[/ip|user]`` items."""
    value = env_str(name, default).replace(" ", "")
    if not re.fullmatch(r"(\d+/\d*[smhd](/(ip|user))?)(,\d+/\d*[smhd](/(ip|user))?)*", value):
        raise EnvError(f"{name}={value!r} is not a list of rates such as 30/m/user,60/m/ip")
    return value


# Rate limits of accounts.ratelimit (counters in the cache), per person and per client address.
# The break-glass password sign-in keeps allauth's own limits on failed attempts (10/m per
# address, 5 per 5 min per account).
PORTAL_RATE_LIMITS = {
    "psc_login": _rates("RATE_LIMIT_PSC_LOGIN", "20/m/ip,100/h/ip"),
    "annuaire_search": _rates("RATE_LIMIT_ANNUAIRE_SEARCH", "30/m/user,120/m/ip"),
    "annuaire_suggest": _rates("RATE_LIMIT_ANNUAIRE_SUGGEST", "120/m/user,480/m/ip"),
}

# The break-glass operator account (Django admin): a second factor through allauth.mfa, TOTP
# or a WebAuthn key (recovery codes as a spare), required by accounts.admin_site.
MFA_SUPPORTED_TYPES = ["totp", "webauthn", "recovery_codes"]
MFA_TOTP_ISSUER = "Portail MSSanté"
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = PORTAL_ENV != "production"  # http://127.0.0.1 in dev
# Networks the admin answers from (addresses or CIDR, comma-separated); empty: any. Elsewhere
# every admin URL is a 404.
OPERATOR_ADMIN_NETWORKS = env_networks("OPERATOR_ADMIN_NETWORKS", [])

# PSC facts: ../shared/reference/annuaire-psc-ins.md §B. The discovery document lives at the
# non-standard `.well-known/wallet-openid-configuration` path (§B1).
_mock_discovery = (
    f"{SITE_URL}/_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"
)
PSC_DISCOVERY_URL = env_str("PSC_DISCOVERY_URL", _mock_discovery if PSC_MOCK_ENABLED else "")
PSC_CLIENT_ID = env_str("PSC_CLIENT_ID", "mssante-portal-dev" if PSC_MOCK_ENABLED else "")
PSC_CLIENT_SECRET = env_str(
    "PSC_CLIENT_SECRET", "mock-secret-not-for-production" if PSC_MOCK_ENABLED else ""
)
PSC_SCOPE = env_list("PSC_SCOPE", ["openid", "scope_all"])  # §B2: scope_all returns SubjectRefPro
PSC_ACR_VALUES = env_str("PSC_ACR_VALUES", "eidas1")  # §B2: the only level PSC supports now
PSC_TOKEN_AUTH_METHOD = env_choice(
    "PSC_TOKEN_AUTH_METHOD", "client_secret_basic", ("client_secret_basic", "client_secret_post")
)
PSC_HTTP_TIMEOUT = env_int("PSC_HTTP_TIMEOUT", 10, minimum=1)
# Origins the browser is sent to during sign-in and logout (CSP form-action). By default the
# discovery host and its `wallet.` twin, where PSC serves the authorize page (§B1).
_psc_origins: list[str] = []
if PSC_DISCOVERY_URL:
    _u = urlsplit(PSC_DISCOVERY_URL)
    _psc_origins.append(f"{_u.scheme}://{_u.netloc}")
    if _u.hostname and _u.hostname.startswith("auth."):
        _psc_origins.append(f"{_u.scheme}://wallet.{_u.netloc[len('auth.') :]}")
PSC_BROWSER_ORIGINS = env_list("PSC_BROWSER_ORIGINS", _psc_origins)

SOCIALACCOUNT_PROVIDERS = {
    "prosanteconnect": {
        "APPS": [
            {
                "name": "Pro Santé Connect",
                "client_id": PSC_CLIENT_ID,
                "secret": PSC_CLIENT_SECRET,
                "settings": {
                    "server_url": PSC_DISCOVERY_URL,
                    "token_auth_method": PSC_TOKEN_AUTH_METHOD,
                    "oauth_pkce_enabled": True,
                    "scope": PSC_SCOPE,
                    "auth_params": {"acr_values": PSC_ACR_VALUES},
                },
            }
        ],
    }
}

# Mock behaviour (dev/demo only).
# The mock's second registered client, « logiciel métier de test »: a care software that gets
# tokens for IMAP and submission (API LPS); `manage.py psc_token` drives its flow.
PSC_MOCK_LPS_CLIENT_ID = env_str("PSC_MOCK_LPS_CLIENT_ID", "logiciel-metier-test")
PSC_MOCK_LPS_CLIENT_SECRET = env_str("PSC_MOCK_LPS_CLIENT_SECRET", "lps-secret-not-for-production")
PSC_MOCK_USERINFO_FORMAT = env_choice("PSC_MOCK_USERINFO_FORMAT", "json", ("json", "jwt"))
# Deliberate misbehaviour of the mock, to show and test each sign-in failure page.
PSC_MOCK_FAULT = env_choice(
    "PSC_MOCK_FAULT",
    "",
    (
        "",
        "wrong_nonce",
        "tampered_id_token",
        "expired_id_token",
        "unknown_kid",
        "no_subject_name_id",
        "wrong_acr",
        "no_auth_time",
    ),
)

# --- Operator whitelist (../shared/reference/mssante-spec.md §1.2) ------------------------------
WHITELIST_URL = env_str(
    "WHITELIST_URL",
    "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml"
    if PORTAL_ENV == "production"
    else "",
)
# Trust is a key, not a name (STYLE.md): the list is taken when its signer's certificate chains
# to a CA of this PEM bundle and its key is pinned below. Default: IGC-Santé, gamme Élémentaire
# (root and Organisations CA), shipped with the code; never a public web CA bundle.
_IGC_SANTE_BUNDLE = str(BASE_DIR / "deploy" / "igc-sante" / "elementaire-organisations.pem")
WHITELIST_SIGNER_CA_BUNDLE = env_str("WHITELIST_SIGNER_CA_BUNDLE") or _IGC_SANTE_BUNDLE
# The signer's key: SPKI SHA-256 pins (base64, RFC 7469 §2.4; annuaire.whitelist.spki_pin). A
# key rollover is this one setting: list the new pin next to the old one. Default: the key of
# ANS's signer of the 2025-02-28 list (CN=alb.mssante.fr, certificate valid until 2026-08-23).
WHITELIST_SIGNER_PINS = env_list("WHITELIST_SIGNER_PINS") or [
    "JNoFTqEIytyBUKykYK5yuMMyyYIcq1yq3DVz0UuRgHM="
]
# The signer's certificate is checked now; a certificate expired or not yet valid by less than
# this is still taken (clocks apart, a renewal under way).
WHITELIST_SIGNER_TOLERANCE_HOURS = env_int("WHITELIST_SIGNER_TOLERANCE_HOURS", 24, minimum=0)
# PEM bundle verifying the HTTPS download (its server has an IGC-Santé certificate, §1.2).
WHITELIST_CA_BUNDLE = env_str("WHITELIST_CA_BUNDLE") or _IGC_SANTE_BUNDLE
# Alert (error log) when the list in force is older than this.
WHITELIST_MAX_AGE_HOURS = env_int("WHITELIST_MAX_AGE_HOURS", 48, minimum=1)

# --- Annuaire Santé: the national MSSanté extraction (../shared/reference §A1) ------------------
# Daily download (beat); empty: no automatic import (load a file with `manage.py import_annuaire`).
ANNUAIRE_EXTRACTION_URL = env_str(
    "ANNUAIRE_EXTRACTION_URL",
    "https://service.annuaire.sante.fr/annuaire-sante-webservices/V300/services/extraction/"
    "Extraction_Correspondance_MSSante"
    if PORTAL_ENV == "production"
    else "",
)
# PEM bundle of the IGC-Santé chain that signs service.annuaire.sante.fr (empty: system CAs).
ANNUAIRE_CA_BUNDLE = env_str("ANNUAIRE_CA_BUNDLE", "")
# An address of a trusted domain that the national directory does not list (APP BALs, liste
# rouge, created since the last extraction): "warn" (accepted with a notice) or "refuse".
ANNUAIRE_UNKNOWN_POLICY = env_choice("ANNUAIRE_UNKNOWN_POLICY", "warn", ("warn", "refuse"))
# A file keeping fewer BAL than this share of the directory in force is refused (truncated).
ANNUAIRE_MIN_KEEP_PERCENT = env_int("ANNUAIRE_MIN_KEEP_PERCENT", 50, minimum=0)
# The largest extraction text accepted (the published one is ~90 MB): a bigger file, or an
# archive that would inflate to more, is refused before anything is read.
ANNUAIRE_MAX_SIZE_MB = env_int("ANNUAIRE_MAX_SIZE_MB", 1024, minimum=1)
# Publication of our BALs to the national directory (FHIR PATCH, mssante-spec §4): off if empty.
ANNUAIRE_PUBLICATION_URL = env_str("ANNUAIRE_PUBLICATION_URL", "")
ANNUAIRE_PUBLICATION_API_KEY = env_str("ANNUAIRE_PUBLICATION_API_KEY", "")

# --- Inbound gateway (MX of the trust space) -----------------------------------------------------
GATEWAY_HOST = env_str("GATEWAY_HOST", "127.0.0.1")
GATEWAY_PORT = env_int("GATEWAY_PORT", 10025, minimum=1)
GATEWAY_HOSTNAME = env_str("GATEWAY_HOSTNAME", "localhost")
GATEWAY_CERT = env_str("GATEWAY_CERT", str(VAR_DIR / "pki" / "gateway.crt"))
GATEWAY_KEY = env_str("GATEWAY_KEY", str(VAR_DIR / "pki" / "gateway.key"))
# CA bundle that client certificates must chain to (IGC-Santé in production).
GATEWAY_CA_BUNDLE = env_str("GATEWAY_CA_BUNDLE", str(VAR_DIR / "pki" / "ca.crt"))
GATEWAY_MAX_SIZE = env_int("GATEWAY_MAX_SIZE", 25 * 1024 * 1024, minimum=1024)  # MES: 25 MB (§3.8)
GATEWAY_MAX_RECIPIENTS = env_int("GATEWAY_MAX_RECIPIENTS", 100, minimum=1)
GATEWAY_DRAIN_SECONDS = env_int("GATEWAY_DRAIN_SECONDS", 30, minimum=1)
# Sessions per gateway process, in all and from one client address (then 421 4.7.0).
GATEWAY_MAX_SESSIONS = env_int("GATEWAY_MAX_SESSIONS", 100, minimum=1)
GATEWAY_MAX_SESSIONS_PER_ADDRESS = env_int("GATEWAY_MAX_SESSIONS_PER_ADDRESS", 20, minimum=1)
# Before TLS (RFC 3207): seconds from the connection to a completed handshake, and command lines.
GATEWAY_STARTTLS_TIMEOUT = env_int("GATEWAY_STARTTLS_TIMEOUT", 30, minimum=1)
GATEWAY_STARTTLS_COMMANDS = env_int("GATEWAY_STARTTLS_COMMANDS", 10, minimum=2)

GATEWAY_PROCESSES = env_int("GATEWAY_PROCESSES", 1, minimum=1)  # set to the number of cores

# --- Outbound relay (ARCHITECTURE.md, data flow 2) ----------------------------------------------
# Our certificate, presented as the client certificate to other operators' MX (IGC-Santé).
RELAY_CERT = env_str("RELAY_CERT", GATEWAY_CERT)
RELAY_KEY = env_str("RELAY_KEY", GATEWAY_KEY)
# CA bundle the peers' certificates must chain to (IGC-Santé in production).
RELAY_CA_BUNDLE = env_str("RELAY_CA_BUNDLE", GATEWAY_CA_BUNDLE)
RELAY_HOSTNAME = env_str("RELAY_HOSTNAME", GATEWAY_HOSTNAME)
# Fixed routes instead of DNS MX, "domain=host:port" ("*" for every domain): closed networks, tests.
RELAY_ROUTES = env_list("RELAY_ROUTES", [])
RELAY_LIFETIME_HOURS = env_int("RELAY_LIFETIME_HOURS", 5 * 24, minimum=1)  # then bounce
RELAY_RETRY_BASE_SECONDS = env_int("RELAY_RETRY_BASE_SECONDS", 60, minimum=1)
RELAY_RETRY_MAX_SECONDS = env_int("RELAY_RETRY_MAX_SECONDS", 3600, minimum=1)
RELAY_CLAIM_SECONDS = env_int("RELAY_CLAIM_SECONDS", 600, minimum=10)  # then the sweep re-queues
RELAY_TIMEOUT_SECONDS = env_int("RELAY_TIMEOUT_SECONDS", 60, minimum=1)
# TLS 1.2 suites of the gateway and of the relay (TLS 1.3 suites are all AEAD with forward
# secrecy): the ANSSI profile until ANS publishes the list (mssante-spec §1.5).
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# --- Certificate revocation (IGC-Santé CRLs: mssante-spec §1.3-§1.4, mailboxes/transport/crl.py)
# Where the CRLs come from (URLs, or paths for closed networks and tests), one per issuing CA;
# synced by `manage.py sync_crl` and beat. Empty: no sync (the production system check warns).
TLS_CRL_URLS = env_list("TLS_CRL_URLS", [])
# The CRLs in force (PEM), loaded by the gateway and the relay; no file: revocation not checked.
# Tests and benches make their own PKI: they point it at its CRL (tests/mailboxes/conftest.py).
TLS_CRL_FILE = env_str("TLS_CRL_FILE", "" if TESTING else str(VAR_DIR / "tls" / "crl.pem"))
# Alert (error log) when a CRL in force ends within this many hours.
TLS_CRL_ALERT_HOURS = env_int("TLS_CRL_ALERT_HOURS", 48, minimum=1)
# The gateway looks for a new CRL file at most this often (seconds), for new connections.
TLS_CRL_RECHECK_SECONDS = env_int("TLS_CRL_RECHECK_SECONDS", 30, minimum=0)

# --- Writing (webmail compose) -----------------------------------------------------------------
# X-MSS-NIL: the product reference assigned when the software was declared on Convergence
# (Référentiel #2 ECO.2.4.3). Required in production (system check mssante.E022); the
# placeholder elsewhere.
MSS_NIL = env_str("MSS_NIL", "" if PORTAL_ENV == "production" else "0000000000")
COMPOSE_MAX_ATTACHMENT_BYTES = env_int(
    "COMPOSE_MAX_ATTACHMENT_BYTES", 18 * 1024 * 1024, minimum=1024
)
# The whole message once encoded (base64 adds a third).
COMPOSE_MAX_MESSAGE_BYTES = env_int("COMPOSE_MAX_MESSAGE_BYTES", 25 * 1024 * 1024, minimum=1024)
COMPOSE_MAX_RECIPIENTS = env_int("COMPOSE_MAX_RECIPIENTS", 100, minimum=1)
# Attachments stay in memory (never in an unmanaged temporary directory, mssante-spec §3.4);
# the compose view refuses a body larger than the limit before reading it.
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.MemoryFileUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = COMPOSE_MAX_ATTACHMENT_BYTES + 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 50

# --- Dovecot, the message store (ARCHITECTURE.md) ---------------------------------------------
DOVECOT_DIR = Path(env_str("DOVECOT_DIR", str(VAR_DIR / "dovecot")))
DOVECOT_MAIL_ROOT = Path(env_str("DOVECOT_MAIL_ROOT", str(VAR_DIR / "mail")))
# The portal reaches Dovecot only through its sockets in DOVECOT_DIR/run (lmtp, imap-portal);
# this network listener is for IMAP clients (and tests' own looks), on loopback by default.
DOVECOT_LISTEN = env_str("DOVECOT_LISTEN", "127.0.0.1")
DOVECOT_IMAP_PORT = env_int("DOVECOT_IMAP_PORT", 10143, minimum=1)
# The only user that may open those sockets: the one the portal's processes run as. Empty: the
# user that writes the configuration (set it when Dovecot is started by root for another user).
DOVECOT_SOCKET_USER = env_str("DOVECOT_SOCKET_USER", "")
DOVECOT_MASTER_USER = env_str("DOVECOT_MASTER_USER", "portal")
# Unprivileged system user that owns the Maildirs when Dovecot is started as root.
DOVECOT_MAIL_USER = env_str("DOVECOT_MAIL_USER", "mssante")
DOVECOT_POSTMASTER_DOMAIN = env_str("DOVECOT_POSTMASTER_DOMAIN", "localhost")
DOVECOT_TIMEOUT = env_int("DOVECOT_TIMEOUT", 10, minimum=1)
# Several Dovecot backends behind the instance above, which then only proxies (docs/deployment.md):
# "name=host:imap_port:lmtp_port", comma-separated. Each BAL goes to the backend its
# Mailbox.dovecot_backend names (empty: the first one listed). Empty: one instance, no proxy.
DOVECOT_BACKENDS = env_list("DOVECOT_BACKENDS", [])


DOVECOT_MASTER_PASSWORD = _secret("DOVECOT_MASTER_PASSWORD")

# --- Prometheus metrics (/sante/metriques, mailboxes/operator/metrics.py) -------------------
# Never public: answered to clients in these networks (addresses or CIDR) or presenting this
# token (``Authorization: Bearer <token>``, or METRICS_TOKEN_FILE); with neither set, a 404.
METRICS_NETWORKS = env_networks("METRICS_NETWORKS", [])
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

# --- Software and mail clients (API LPS, mssante-spec §2.2; mailboxes.software) ---------------
# Each listener is off while its port is empty (the default): IMAP with STARTTLS (143 in
# production, SC.MSS/CONF.06), IMAP over TLS (993), submission with STARTTLS (587, CONF.05).
LPS_LISTEN = env_str("LPS_LISTEN", "127.0.0.1")
LPS_IMAP_PORT = env_str("LPS_IMAP_PORT", "")
LPS_IMAPS_PORT = env_str("LPS_IMAPS_PORT", "")
LPS_SUBMISSION_PORT = env_str("LPS_SUBMISSION_PORT", "")
# The names mail clients are told (auto-configuration, « Connecter un logiciel »).
LPS_IMAP_HOSTNAME = env_str("LPS_IMAP_HOSTNAME", GATEWAY_HOSTNAME)
LPS_SUBMISSION_HOSTNAME = env_str("LPS_SUBMISSION_HOSTNAME", LPS_IMAP_HOSTNAME)
# The certificate of those listeners (TLS 1.2 minimum, TLS_CIPHERS: CONF.01, CONF.03).
LPS_TLS_CERT = env_str("LPS_TLS_CERT", GATEWAY_CERT)
LPS_TLS_KEY = env_str("LPS_TLS_KEY", GATEWAY_KEY)
# The CAs of the software certificates that open APP BALs (SASL EXTERNAL): IGC-Santé's
# organisation CAs in production, like the gateway's peers. The CRLs in force (TLS_CRL_FILE)
# apply to them too.
LPS_CLIENT_CA_BUNDLE = env_str("LPS_CLIENT_CA_BUNDLE", GATEWAY_CA_BUNDLE)
# Where Dovecot asks the portal whether a token opens a BAL (loopback), and the secret it shows.
LPS_AUTH_URL = env_str("LPS_AUTH_URL", f"{SITE_URL}/logiciels/dovecot/auth")
# Where Dovecot's requests may come from: loopback, or the Dovecot container's network.
LPS_AUTH_NETWORKS = env_networks("LPS_AUTH_NETWORKS", ["127.0.0.0/8", "::1"])
_lps_on = bool(LPS_IMAP_PORT or LPS_IMAPS_PORT or LPS_SUBMISSION_PORT)
LPS_AUTH_SECRET = _secret("LPS_AUTH_SECRET") if _lps_on or PORTAL_ENV != "production" else ""
LPS_SUBMISSION_MAX_SIZE = env_int(
    "LPS_SUBMISSION_MAX_SIZE", COMPOSE_MAX_MESSAGE_BYTES, minimum=1024
)
# How long a token PSC found live is taken as live without asking again (never past its exp;
# 0: ask PSC at every login). The delay before a token revoked at PSC stops opening sessions.
LPS_TOKEN_CACHE_SECONDS = env_int("LPS_TOKEN_CACHE_SECONDS", 30, minimum=0)

# --- Sessions, cookies, security --------------------------------------------------------------
# Sessions in the database, read through the cache (one query less on every page).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"  # the PSC redirect back is a top-level GET navigation
# Absolute lifetime of a session from its sign-in, whatever the activity (a working day)...
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600, minimum=300)
# ...and the idle time after which it ends (accounts.middleware.SessionTimeoutMiddleware).
# How often an open folder page asks whether mail arrived (seconds; a STATUS, nothing traced).
WEBMAIL_POLL_SECONDS = env_int("WEBMAIL_POLL_SECONDS", 30, minimum=1)
SESSION_IDLE_TIMEOUT = env_int("SESSION_IDLE_TIMEOUT", 30 * 60, minimum=60)
SECURE = PORTAL_ENV == "production"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SECURE)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SECURE)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if SECURE else 0)
# HSTS for every subdomain and the browsers' preload list: the operator's decision for its own
# domain (off by default; `check --deploy` warns until it is taken).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The portal calls the PSC mock's discovery, token, userinfo and JWKS endpoints itself, over
# the internal network (a demonstration in containers: http://web:8000): no HTTPS redirect there.
SECURE_REDIRECT_EXEMPT = [r"^_dev/psc/"] if PSC_MOCK_ENABLED else []
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
)
X_FRAME_OPTIONS = "DENY"
# The reverse proxies in front of the portal (addresses or networks). When the connection
# comes from one of them, the client address (traces, rate limits, the admin's networks) is
# the nearest X-Forwarded-For hop that is not one of them; empty: the connection's peer.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES", [])

# Strict Content-Security-Policy (django-csp 4): no inline script or style anywhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'", *PSC_BROWSER_ORIGINS],
    }
}

# --- Console (issue 7) ---------------------------------------------------------------------
# Encrypted BAL exports (before closing, or on request) are written here.
# Absolute in production (system check mssante.E020): a relative one would depend on the
# directory each process starts in; elsewhere it is taken from the current directory.
EXPORT_DIR = Path(env_str("EXPORT_DIR", str(VAR_DIR / "exports")))
if PORTAL_ENV != "production":
    EXPORT_DIR = EXPORT_DIR.resolve()
# A close or export job still waiting after this many seconds is enqueued again (its task was
# lost); one running whose progress has not moved for this long ends in failure (its worker
# died).
JOB_REQUEUE_SECONDS = env_int("JOB_REQUEUE_SECONDS", 300, minimum=30)
JOB_STALE_SECONDS = env_int("JOB_STALE_SECONDS", 1800, minimum=60)
# Functional traces are kept this many days, then purged (6 months by default).
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 183, minimum=1)
# Sensitive console actions (close, export, delegation, role change) need a Pro Santé Connect
# sign-in younger than this (seconds); otherwise the person signs in again.
CONSOLE_REAUTH_MAX_AGE = env_int("CONSOLE_REAUTH_MAX_AGE", 900)
# New-mail notices go to ordinary addresses, outside the trust space, through this SMTP server
# (Django's email settings). They never carry health data.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.locmem.EmailBackend"
    if TESTING
    else "django.core.mail.backends.filebased.EmailBackend"
    if EMBEDDED
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = str(VAR_DIR / "notices")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
NOTICE_FROM_EMAIL = env_str("NOTICE_FROM_EMAIL", "ne-pas-repondre@exemple-operateur.fr")

# --- I18n: the UI speaks French -----------------------------------------------------------------
LANGUAGE_CODE = "fr"
LANGUAGES = [("fr", "Français")]
TIME_ZONE = "Europe/Paris"
USE_I18N = True
USE_TZ = True
LOCALE_PATHS = [BASE_DIR / "locale"]

# --- Static files -----------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
# Whitenoise serves the static files from the apps' folders, without collectstatic, wherever
# `make run` runs (DEBUG off there too: the demonstration shows the French error pages).
WHITENOISE_USE_FINDERS = EMBEDDED or DEBUG
WHITENOISE_AUTOREFRESH = EMBEDDED or DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PORTAL_ENV == "production"
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Logging ------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
}
