"""System checks with stable ids: misconfiguration is caught at start, not at the first user."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def psc_configuration(app_configs: Any, **kwargs: Any) -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    # With PORTAL_ENV=production the settings already refuse to load with the mock (any entry
    # point, gunicorn included); this check covers the other modes run with DEBUG off.
    if settings.PSC_MOCK_ENABLED and not settings.DEBUG and not settings.PORTAL_DEMO:
        problems.append(
            Error(
                "The Pro Santé Connect mock is enabled while DEBUG is off.",
                hint="Set PSC_MOCK_ENABLED=false in production, or PORTAL_DEMO=true for a demo.",
                id="mssante.E001",
            )
        )
    if not settings.PSC_DISCOVERY_URL:
        problems.append(
            Error(
                "PSC_DISCOVERY_URL is empty: nobody can sign in.",
                hint="Set it to the issuer's wallet-openid-configuration URL (.env.example).",
                id="mssante.E002",
            )
        )
    if not settings.PSC_CLIENT_ID or not settings.PSC_CLIENT_SECRET:
        problems.append(
            Error(
                "PSC_CLIENT_ID and PSC_CLIENT_SECRET are required.",
                hint="They are issued by ANS when the portal is registered with Pro Santé Connect.",
                id="mssante.E003",
            )
        )
    if (
        settings.PORTAL_ENV == "production"
        and settings.PSC_DISCOVERY_URL
        and not settings.PSC_DISCOVERY_URL.startswith("https://")
    ):
        problems.append(
            Error(
                "PSC_DISCOVERY_URL must use https in production.",
                id="mssante.E004",
            )
        )
    if settings.PORTAL_ENV == "production" and not settings.ALLOWED_HOSTS:
        problems.append(Error("DJANGO_ALLOWED_HOSTS is empty.", id="mssante.E005"))
    return problems


@register()
def tls_revocation(app_configs: Any, **kwargs: Any) -> list[Warning]:
    if settings.PORTAL_ENV == "production" and not settings.TLS_CRL_URLS:
        return [
            Warning(
                "TLS_CRL_URLS is empty: revoked IGC-Santé certificates are not refused.",
                hint="List the CRL of every CA issuing operator certificates (.env.example).",
                id="mssante.W001",
            )
        ]
    return []


@register()
def whitelist_trust(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The whitelist's trust anchors: well-formed pins and CA bundles that hold certificates
    (annuaire/whitelist.py). A mistake here would refuse every list, silently until the
    staleness alert."""
    problems: list[Error] = []
    for pin in settings.WHITELIST_SIGNER_PINS:
        try:
            digest = base64.b64decode(pin, validate=True)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            problems.append(
                Error(
                    f"WHITELIST_SIGNER_PINS: {pin!r} is not a SPKI SHA-256 pin.",
                    hint="Base64 of the SHA-256 of the signer's SubjectPublicKeyInfo "
                    "(.env.example gives the openssl command).",
                    id="mssante.E006",
                )
            )
    for name in ("WHITELIST_SIGNER_CA_BUNDLE", "WHITELIST_CA_BUNDLE"):
        path = getattr(settings, name)
        try:
            found = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            found, reason = [], str(exc)
        else:
            reason = "no certificate"
        if not found:
            problems.append(
                Error(
                    f"{name}={path!r} holds no CA certificate ({reason}).",
                    hint="A PEM file with the IGC-Santé CAs; empty for the one shipped in "
                    "deploy/igc-sante/.",
                    id="mssante.E007",
                )
            )
    return problems


def _writable_dir(path: Path) -> bool:
    """``path`` is a directory this process may write in, or can be made one: its nearest
    existing ancestor is (exports create their directories as needed)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


@register()
def production_services(app_configs: Any, **kwargs: Any) -> list[Error]:
    """What a production process needs from its environment and that has no safe default
    there: where exports go, the X-MSS-NIL product reference, the cache and the broker."""
    if settings.PORTAL_ENV != "production":
        return []
    problems: list[Error] = []
    export_dir = Path(settings.EXPORT_DIR)
    if not export_dir.is_absolute():
        problems.append(
            Error(
                f"EXPORT_DIR={str(export_dir)!r} est un chemin relatif.",
                hint="Donnez un chemin absolu, sur un volume conservé (.env.example).",
                id="mssante.E020",
            )
        )
    elif not _writable_dir(export_dir):
        problems.append(
            Error(
                f"EXPORT_DIR={str(export_dir)!r} n'est pas un répertoire accessible en écriture.",
                hint="Montez le volume des exports et donnez-le à l'utilisateur du portail.",
                id="mssante.E021",
            )
        )
    if not settings.MSS_NIL.strip():
        problems.append(
            Error(
                "MSS_NIL est vide : chaque message envoyé doit porter l'en-tête X-MSS-NIL.",
                hint="La référence produit attribuée lors de la déclaration sur Convergence "
                "(Référentiel #2 ECO.2.4.3).",
                id="mssante.E022",
            )
        )
    cache = settings.CACHES["default"]
    if cache["BACKEND"].endswith("RedisCache") and not cache.get("LOCATION"):
        problems.append(
            Error(
                "Aucune adresse de cache : REDIS_URL et CACHE_URL sont vides.",
                hint="Donnez REDIS_URL (ou CACHE_URL), par exemple redis://redis:6379/0.",
                id="mssante.E023",
            )
        )
    if not settings.CELERY_BROKER_URL:
        problems.append(
            Error(
                "Aucun courtier Celery : REDIS_URL et CELERY_BROKER_URL sont vides.",
                hint="Donnez REDIS_URL (ou CELERY_BROKER_URL), par exemple redis://redis:6379/0.",
                id="mssante.E024",
            )
        )
    return problems
