"""The whitelist sync (liste blanche of the trust space)."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import Action, TargetType, audit_record
from annuaire.models import WhitelistEntry, WhitelistSyncRun, WhitelistVersion
from annuaire.selectors import recipient_cache_clear
from annuaire.whitelist import MAX_BYTES, Whitelist, WhitelistError, parse_signed

logger = logging.getLogger(__name__)

ACTION = Action.WHITELIST_SYNC


def _fetch(source: str) -> bytes:
    if source.startswith(("https://", "http://")):
        if not source.startswith("https://"):
            raise WhitelistError("La liste blanche se télécharge en HTTPS uniquement.")
        try:
            # The server presents an IGC-Santé chain (§1.2): verify against the configured bundle
            # only (a path: requests then ignores certifi and REQUESTS_CA_BUNDLE).
            response = requests.get(
                source, timeout=30, verify=settings.WHITELIST_CA_BUNDLE, stream=True
            )
            response.raise_for_status()
            data = response.raw.read(MAX_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise WhitelistError(f"Téléchargement impossible : {exc}") from exc
        return bytes(data)
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise WhitelistError(f"Lecture impossible de {source} : {exc.strerror}") from exc


@transaction.atomic
def _swap_in(whitelist: Whitelist, source: str) -> tuple[WhitelistVersion, dict[str, object]]:
    previous = WhitelistVersion.objects.select_for_update().filter(is_current=True).first()
    old_domains = set(previous.entry_set.values_list("domain", flat=True)) if previous else set()
    version = WhitelistVersion.objects.create(
        generated_at=whitelist.generated_at,
        source=source[:500],
        sha256=whitelist.sha256,
        signer_subject=whitelist.signer_subject[:500],
        entries=len(whitelist.entries),
        domains=len(whitelist.domains),
        dns=len(whitelist.dns),
    )
    WhitelistEntry.objects.bulk_create(
        (
            WhitelistEntry(
                version=version,
                domain=e.domain,
                dn=e.dn,
                dn_key=e.dn_key,
                description=e.description,
                responsible_contact=e.responsible_contact,
                support_contact=e.support_contact,
                updated_at=e.updated_at,
            )
            for e in whitelist.entries
        ),
        batch_size=2000,
    )
    if previous:
        previous.is_current = False
        previous.save(update_fields=["is_current"])
    version.is_current = True
    version.save(update_fields=["is_current"])
    # Keep the previous version for comparison; older ones go.
    WhitelistVersion.objects.exclude(pk__in=[version.pk, previous.pk if previous else 0]).delete()
    stats = {
        "entries": version.entries,
        "domains": version.domains,
        "dns": version.dns,
        "certificates": len(whitelist.dn_keys),
        "added": len(whitelist.domains - old_domains),
        "removed": len(old_domains - whitelist.domains),
        "rejected": whitelist.rejected[:50],
    }
    return version, stats


def whitelist_sync(*, source: str | None = None) -> WhitelistSyncRun:
    """Fetch, verify and swap in the operator whitelist from a URL or a file.

    The signature is trusted when the signer's certificate chains to WHITELIST_SIGNER_CA_BUNDLE
    and its key is one of WHITELIST_SIGNER_PINS, now (WHITELIST_SIGNER_TOLERANCE_HOURS).
    Never raises for a bad download or document: the run is recorded as a failure, logged and
    traced (audit ``annuaire.whitelist_sync``), and the last good list stays in force. A
    document identical to the current one changes nothing. Side effects: the run, one audit
    event, the recipient verdict cache cleared.
    """
    source = source or settings.WHITELIST_URL
    run = WhitelistSyncRun.objects.create(
        source=(source or "")[:500], result=WhitelistSyncRun.Result.FAILURE
    )
    signer: dict[str, str] = {}  # who signed the list taken, for the trace
    try:
        if not source:
            raise WhitelistError("Aucune source de liste blanche configurée (WHITELIST_URL).")
        whitelist = parse_signed(
            _fetch(source),
            pins=settings.WHITELIST_SIGNER_PINS,
            ca_bundle=settings.WHITELIST_SIGNER_CA_BUNDLE,
            at=timezone.now(),
            tolerance=timedelta(hours=settings.WHITELIST_SIGNER_TOLERANCE_HOURS),
        )
        current = WhitelistVersion.objects.filter(is_current=True).first()
        if current and current.sha256 == whitelist.sha256:
            run.result, run.version = WhitelistSyncRun.Result.UNCHANGED, current
            run.stats = {"entries": current.entries, "domains": current.domains, "dns": current.dns}
        else:
            run.version, run.stats = _swap_in(whitelist, source)
            run.result = WhitelistSyncRun.Result.SUCCESS
        signer = {"signer": whitelist.signer_subject[:500], "signer_pin": whitelist.signer_pin}
    except WhitelistError as exc:
        run.error = str(exc)
        logger.error("whitelist sync failed, the list in force stays: %s", exc)
    run.finished_at = timezone.now()
    failed = run.result == WhitelistSyncRun.Result.FAILURE
    with transaction.atomic():
        run.save()
        audit_record(
            action=ACTION,
            actor_label="synchronisation liste blanche",
            target_type=TargetType.WHITELIST_SYNC_RUN,
            target_id=str(run.pk),
            success=not failed,
            error_code="whitelist_refused" if failed else "",
            details={
                "result": run.result,
                "source": (source or "")[:300],
                "version": run.version_id,
                "error": run.error[:1000],
                **signer,
            },
        )
    recipient_cache_clear()
    return run


def whitelist_staleness_check() -> bool:
    """Log an error (the operator's alert) when the list in force is older than allowed.
    Returns True when it is fresh."""
    current = WhitelistVersion.objects.filter(is_current=True).first()
    limit = timezone.now() - timedelta(hours=settings.WHITELIST_MAX_AGE_HOURS)
    if current is None or current.imported_at < limit:
        logger.error(
            "whitelist is stale: %s",
            "no list in force"
            if current is None
            else f"imported {current.imported_at:%Y-%m-%d %H:%M}",
        )
        return False
    return True
