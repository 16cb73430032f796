"""The CRL sync: fetch the IGC-Santé CRLs, verify them, put them in force, alert before they end.

See ``mailboxes/transport/crl.py`` for what is in force, how the gateway and relay use it, and what
happens when it expires.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction

from accounts.audit import Action, TargetType, audit_record
from mailboxes.models import AppCertificate
from mailboxes.store import dovecot
from mailboxes.transport import crl as crls
from mailboxes.transport.crl import CrlError, CrlInfo

logger = logging.getLogger(__name__)
ACTION = Action.CRL_SYNC


@dataclass
class CrlSync:
    """Outcome of one sync. ``result``: success | unchanged | failure."""

    result: str
    sources: list[str]
    error: str = ""
    crls: list[CrlInfo] = field(default_factory=list)


def _fetch(source: str) -> bytes:
    if source.startswith(("https://", "http://")):
        # Plain HTTP is how CAs publish CRLs (RFC 5280 §4.2.1.13): the CRL is signed, and the
        # signature, not the transport, is what we trust.
        try:
            response = requests.get(source, timeout=30, stream=True)
            response.raise_for_status()
            data = response.raw.read(crls.MAX_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise CrlError(f"Téléchargement impossible de {source} : {exc}") from exc
    else:
        try:
            with open(source, "rb") as handle:
                data = handle.read(crls.MAX_BYTES + 1)
        except OSError as exc:
            raise CrlError(f"Lecture impossible de {source} : {exc.strerror}") from exc
    if len(data) > crls.MAX_BYTES:
        raise CrlError(f"{source} dépasse {crls.MAX_BYTES // (1024 * 1024)} Mo : refusé.")
    return bytes(data)


def _collect(sources: list[str]) -> tuple[bytes, list[CrlInfo]]:
    """Every CRL of ``sources``, verified, as the PEM file to put in force. Raises CrlError at
    the first one that is not good (then nothing changes)."""
    software_cas = settings.LPS_CLIENT_CA_BUNDLE  # optional: no software certificates without it
    authorities = crls.load_authorities(
        [
            settings.GATEWAY_CA_BUNDLE,
            settings.RELAY_CA_BUNDLE,
            software_cas if software_cas and Path(software_cas).exists() else "",
        ]
    )
    now = dt.datetime.now(dt.UTC)
    pem: list[bytes] = []
    summaries: dict[str, CrlInfo] = {}
    for source in sources:
        for crl in crls.parse(_fetch(source), source):
            summary = crls.verify(crl, authorities, source=source, now=now)
            if summary.issuer in summaries:
                raise CrlError(f"Deux LCR pour la même AC ({summary.issuer}) : une seule attendue.")
            summaries[summary.issuer] = summary
            pem.append(crl.public_bytes(serialization.Encoding.PEM))
    try:
        in_force = {c.issuer: c for c in crls.read_in_force(settings.TLS_CRL_FILE)}
    except CrlError:
        in_force = {}  # an unreadable file in force is replaced, not compared with
    for issuer, summary in summaries.items():
        previous = in_force.get(issuer)
        if previous is not None and summary.last_update < previous.last_update:
            # An older CRL replayed (a stale mirror, or an attacker) would un-revoke.
            raise CrlError(
                f"LCR de {issuer} refusée : plus ancienne "
                f"({summary.last_update:%d/%m/%Y %H:%M} UTC) que celle en vigueur "
                f"({previous.last_update:%d/%m/%Y %H:%M} UTC)."
            )
    return b"".join(pem), list(summaries.values())


def crl_sync(*, sources: list[str] | None = None) -> CrlSync:
    """Fetch (URL) or read (path) each CRL of ``sources`` (default: TLS_CRL_URLS), verify each
    against the CAs of GATEWAY_CA_BUNDLE and RELAY_CA_BUNDLE, and when all are good, replace
    the file in force (TLS_CRL_FILE) atomically. The gateway picks the new file up for new
    connections, the relay at its next connection.

    Never raises for a bad download or CRL: the failure is logged, traced (audit ``tls.crl_sync``,
    result failure) and the CRL in force stays. Checks the expiry of what is in force at the
    end (alert). Side effects: the file, one audit event, logs.
    """
    sources = list(sources or settings.TLS_CRL_URLS)
    run = CrlSync(result="failure", sources=sources)
    try:
        if not sources:
            raise CrlError("Aucune source de LCR configurée (TLS_CRL_URLS).")
        if not settings.TLS_CRL_FILE:
            raise CrlError("Aucun fichier de LCR configuré (TLS_CRL_FILE).")
        data, run.crls = _collect(sources)
        path = Path(settings.TLS_CRL_FILE)
        if path.exists() and path.read_bytes() == data:
            run.result = "unchanged"
        else:
            crls.write_atomically(settings.TLS_CRL_FILE, data)
            run.result = "success"
    except CrlError as exc:
        run.error = str(exc)
        logger.error("CRL sync failed, the CRL in force stays: %s", exc)
    except OSError as exc:  # the file in force could not be written
        run.error = f"Écriture impossible de {settings.TLS_CRL_FILE} : {exc.strerror or exc}"
        logger.error("CRL sync failed, the CRL in force stays: %s", run.error)
    audit_record(
        action=ACTION,
        actor_label="synchronisation LCR",
        target_type=TargetType.CRL,
        target_id=settings.TLS_CRL_FILE,
        success=run.result != "failure",
        error_code="crl_refused" if run.result == "failure" else "",
        details={
            "result": run.result,
            "sources": [s[:300] for s in sources],
            "error": run.error[:500],
            "crls": [
                {
                    "issuer": c.issuer,
                    "last_update": c.last_update.isoformat(),
                    "next_update": c.next_update.isoformat(),
                    "revoked": c.revoked,
                }
                for c in run.crls
            ],
        },
    )
    if run.result != "failure":
        software_certificates_revoke()
    crl_expiry_check()
    return run


def software_certificates_revoke(*, kick: Callable[[str], None] | None = None) -> int:
    """Unbind every software certificate (APP BAL, mailboxes.models.AppCertificate) that the
    CRLs in force revoke, and end its BAL's IMAP sessions: Dovecot reads the CRLs only when its
    configuration is written, the portal's bindings follow each sync. Each removal is traced
    (``software.certificate_unbound``, reason ``revoked``). Returns how many."""
    try:
        revoked = crls.revoked_in_force(settings.TLS_CRL_FILE)
    except CrlError as exc:
        logger.error("software certificates not checked against the CRLs: %s", exc)
        return 0
    if not revoked:
        return 0
    serials = {format(serial, "x") for _issuer, serial in revoked}
    removed = 0
    for bound in AppCertificate.objects.filter(serial__in=serials).select_related(
        "mailbox__structure"
    ):
        if (bound.issuer, int(bound.serial, 16)) not in revoked:
            continue
        with transaction.atomic():
            audit_record(
                action=Action.SOFTWARE_CERTIFICATE_UNBOUND,
                actor_label="synchronisation LCR",
                target=bound.mailbox,
                structure=bound.mailbox.structure,
                details={
                    "common_name": bound.common_name,
                    "fingerprint": bound.fingerprint,
                    "reason": "revoked",
                },
            )
            bound.delete()
        (kick or dovecot.sessions_kick)(bound.mailbox.address)
        logger.warning(
            "software certificate %s revoked by the CRL: unbound from %s",
            bound.common_name,
            bound.mailbox.address,
        )
        removed += 1
    return removed


def crl_expiry_check(*, now: dt.datetime | None = None) -> bool:
    """Log an error (the operator's alert) when revocation is configured and the CRL in force
    is missing, unreadable, expired or ends within TLS_CRL_ALERT_HOURS. Returns True when it is
    fine (or revocation is not configured)."""
    if not settings.TLS_CRL_URLS and crls.file_stamp(settings.TLS_CRL_FILE) is None:
        return True  # not configured (the production system check says so)
    now = now or dt.datetime.now(dt.UTC)
    try:
        in_force = crls.read_in_force(settings.TLS_CRL_FILE)
    except CrlError as exc:
        logger.error("CRL in force unreadable: %s", exc)
        return False
    if not in_force:
        logger.error(
            "no CRL in force (%s): revocation is not checked until a sync succeeds",
            settings.TLS_CRL_FILE,
        )
        return False
    fine = True
    for crl in in_force:
        if crl.next_update <= now:
            logger.error(
                "CRL in force for %s expired on %s: peers it covers are refused (fail closed) "
                "until a fresh CRL is synced",
                crl.issuer,
                crl.next_update.isoformat(),
            )
            fine = False
        elif crl.next_update - now < dt.timedelta(hours=settings.TLS_CRL_ALERT_HOURS):
            logger.error(
                "CRL in force for %s expires on %s: sync a fresh one (manage.py sync_crl)",
                crl.issuer,
                crl.next_update.isoformat(),
            )
            fine = False
    return fine
