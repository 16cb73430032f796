"""Reads of the annuaire app: trust decisions against the whitelist in force."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Count

from annuaire.ins import INS, InvalidINS, patient_address
from annuaire.models import (
    DirectoryEntry,
    DirectoryImport,
    WhitelistEntry,
    WhitelistSyncRun,
    WhitelistVersion,
)
from annuaire.search import (
    DirectoryQuery,
    Suggestion,
    directory_choices,
    directory_entry,
    directory_search,
    directory_suggest,
    typos_tolerated,
)
from annuaire.whitelist import dn_key


def whitelist_current() -> WhitelistVersion | None:
    return WhitelistVersion.objects.filter(is_current=True).first()


def whitelist_knows_domain(domain: str) -> bool:
    """Whether a domain belongs to the trust space. Exact match only: trust is never decided
    by a `*.mssante.fr` suffix (§1.2: some domains are elsewhere, and a suffix proves nothing)."""
    return WhitelistEntry.objects.filter(
        version__is_current=True, domain=domain.strip().lower()
    ).exists()


def _listed(peer: str | x509.Name, **where: str) -> bool:
    """Whether the certificate DN ``peer`` is in the list in force (``where``: more filters)."""
    try:
        key = dn_key(peer)
    except ValueError:
        return False
    return WhitelistEntry.objects.filter(version__is_current=True, dn_key=key, **where).exists()


def whitelist_allows(domain: str, peer: str | x509.Name) -> bool:
    """Whether the certificate DN ``peer`` is listed for ``domain`` in the list in force."""
    return _listed(peer, domain=domain.strip().lower())


def whitelist_dn_keys(domains: Iterable[str]) -> dict[str, frozenset[str]]:
    """For each of ``domains`` (as given), the certificate DNs (normalised, whitelist.dn_key)
    listed for it in the list in force; empty when the domain is not in the trust space. One
    query for them all (the relay asks for every domain of a batch)."""
    wanted = {domain: domain.strip().lower() for domain in domains}
    found: dict[str, set[str]] = {}
    for domain, key in WhitelistEntry.objects.filter(
        version__is_current=True, domain__in=set(wanted.values())
    ).values_list("domain", "dn_key"):
        found.setdefault(domain, set()).add(key)
    return {domain: frozenset(found.get(key, ())) for domain, key in wanted.items()}


MALFORMED = "Adresse mal formée."


@dataclass(frozen=True)
class RecipientVerdict:
    """What the sender sees next to an address before sending (issue 5: per address, why)."""

    address: str
    ok: bool
    reason: str = ""  # French, for the person writing
    patient: INS | None = None
    holder: str = ""  # who the annuaire says owns it: "Dr Claire MARTIN — Médecin"
    bal_type: str = ""  # PER / ORG / APP / CAB, when the annuaire knows the address
    notice: str = ""  # accepted, but worth a look (not in the annuaire)


NOT_IN_DIRECTORY = (
    "Adresse absente de l'annuaire national (boîte applicative, liste rouge ou création "
    "récente) : vérifiez-la avant d'envoyer."
)
UNKNOWN_REFUSED = (
    "Adresse inconnue de l'annuaire national : l'envoi vers une adresse non publiée est "
    "refusé par votre opérateur. Vérifiez-la dans l'annuaire."
)
_CACHE_SECONDS = 30.0
_CACHE_MAX = 20_000
_cache: dict[str, tuple[float, RecipientVerdict]] = {}


def recipient_cache_clear() -> None:
    """Forget the cached verdicts (after a directory import or a whitelist sync, and in
    tests); other processes forget theirs within 30 seconds."""
    _cache.clear()


def recipient_check(address: str) -> RecipientVerdict:
    """Whether ``address`` may receive MSSanté mail from us, judged on what the annuaire app
    knows: syntax, Mon Espace Santé addresses (valid INS key), the trust space (whitelist, exact
    domain), and the national directory (who owns it; an address the directory does not list
    is accepted with a notice: APP and liste rouge BALs are not in the public extraction).
    The BALs we host are checked by the mailboxes app. Cached 30 s per process: compose and
    the relay ask for every recipient of every message."""
    key = address.strip().lower()
    now = time.monotonic()
    hit = _cache.get(key)
    if hit and now - hit[0] < _CACHE_SECONDS:
        return hit[1]
    verdict = _recipient_check(address)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = (now, verdict)
    return verdict


def _holder(entry: DirectoryEntry) -> str:
    if entry.bal_type == "PER":
        return " — ".join(p for p in (entry.label, entry.profession_label) if p)
    return " — ".join(p for p in (entry.structure_name, entry.service) if p)


def _recipient_check(address: str) -> RecipientVerdict:
    address = address.strip()
    try:
        validate_email(address)
    except ValidationError:
        return RecipientVerdict(address, False, MALFORMED)
    address = address.lower()
    try:
        patient = patient_address(address)
    except InvalidINS as exc:
        return RecipientVerdict(address, False, f"Adresse patient invalide : {exc}")
    domain = address.rpartition("@")[2]
    if not whitelist_knows_domain(domain):
        return RecipientVerdict(
            address,
            False,
            f"{domain} est hors espace de confiance MSSanté : cette adresse ne peut pas "
            "recevoir de messagerie sécurisée de santé.",
        )
    if patient is not None:
        return RecipientVerdict(address, True, patient=patient)
    entry = directory_entry(address)
    if entry is None:
        if settings.ANNUAIRE_UNKNOWN_POLICY == "refuse":
            return RecipientVerdict(address, False, UNKNOWN_REFUSED)
        return RecipientVerdict(address, True, notice=NOT_IN_DIRECTORY)
    return RecipientVerdict(address, True, holder=_holder(entry), bal_type=entry.bal_type)


def directory_last_import() -> DirectoryImport | None:
    """The last import that left a directory in force."""
    return DirectoryImport.objects.filter(result__in=["success", "unchanged"]).first()


def directory_imports(limit: int = 10) -> list[DirectoryImport]:
    """The last ``limit`` imports of the national extraction, newest first, whatever their
    result (the operator's console shows their counts and errors)."""
    return list(DirectoryImport.objects.order_by("-started_at")[:limit])


@dataclass(frozen=True)
class WhitelistDiff:
    """What changed between the previous whitelist and the one in force."""

    previous: WhitelistVersion
    added_domains: list[str]
    removed_domains: list[str]
    added_dns: list[tuple[str, str]]  # (domain, DN as published)
    removed_dns: list[tuple[str, str]]


def whitelist_previous() -> WhitelistVersion | None:
    """The list in force before the current one (the sync keeps it for comparison)."""
    return WhitelistVersion.objects.filter(is_current=False).order_by("-imported_at").first()


def whitelist_diff(current: WhitelistVersion, previous: WhitelistVersion) -> WhitelistDiff:
    """Domains and (domain, certificate DN) pairs added and removed from ``previous`` to
    ``current``: pairs compared by their normalised DN (whitelist.dn_key)."""

    def pairs(version: WhitelistVersion) -> dict[tuple[str, str], str]:
        rows = WhitelistEntry.objects.filter(version=version).values_list("domain", "dn_key", "dn")
        return {(domain, key): dn for domain, key, dn in rows}

    now, before = pairs(current), pairs(previous)
    domains_now = {domain for domain, _ in now}
    domains_before = {domain for domain, _ in before}
    return WhitelistDiff(
        previous=previous,
        added_domains=sorted(domains_now - domains_before),
        removed_domains=sorted(domains_before - domains_now),
        added_dns=sorted((k[0], now[k]) for k in now.keys() - before.keys()),
        removed_dns=sorted((k[0], before[k]) for k in before.keys() - now.keys()),
    )


def whitelist_entries(version: WhitelistVersion, limit: int = 500) -> list[WhitelistEntry]:
    """The entries of ``version`` (domain, DN), by domain, at most ``limit``."""
    return list(WhitelistEntry.objects.filter(version=version).order_by("domain", "dn")[:limit])


def whitelist_sync_runs(limit: int = 5) -> list[WhitelistSyncRun]:
    """The last syncs of the whitelist, newest first, with their result and error."""
    return list(WhitelistSyncRun.objects.order_by("-started_at")[:limit])


def directory_entries(addresses: list[str]) -> dict[str, DirectoryEntry]:
    """The directory's rows for these addresses, by address."""
    wanted = [a.strip().lower() for a in addresses]
    return {e.address: e for e in DirectoryEntry.objects.filter(address__in=wanted)}


def directory_per_entries(text: str, limit: int) -> list[DirectoryEntry]:
    """Personal BALs of professionals with a national id: the one whose national id is
    ``text`` (digits), else those whose name matches ``text`` (the autocomplete's matching),
    by name."""
    entries = DirectoryEntry.objects.filter(bal_type="PER").exclude(pp_national_id="")
    if text.isdigit():
        entries = entries.filter(pp_national_id=text)
    else:
        entries = entries.filter(address__in=[s.address for s in directory_suggest(text, limit)])
    return list(entries.order_by("last_name", "first_name")[:limit])


def directory_professional(national_id: str) -> DirectoryEntry | None:
    """A named row of the directory for this national id (to fill in a new account)."""
    return DirectoryEntry.objects.filter(pp_national_id=national_id).exclude(last_name="").first()


def directory_structure_names(addresses: Iterable[str]) -> dict[str, str]:
    """The structure name the directory gives for each of these addresses it lists."""
    return dict(
        DirectoryEntry.objects.filter(address__in=list(addresses)).values_list(
            "address", "structure_name"
        )
    )


def directory_domain_structures(domains: Iterable[str]) -> list[tuple[str, str, int]]:
    """(domain, structure name, number of BALs) for the named structures of these domains."""
    return list(
        DirectoryEntry.objects.filter(domain__in=list(domains))
        .exclude(structure_name="")
        .values_list("domain", "structure_name")
        .annotate(n=Count("id"))
        .order_by()
    )


def whitelist_lists_certificate(peer: str | x509.Name) -> bool:
    """Whether the certificate DN ``peer`` is listed for any domain in the list in force."""
    return _listed(peer)


# The directory: search, autocomplete (annuaire.search).
__all__ = [
    "MALFORMED",
    "NOT_IN_DIRECTORY",
    "UNKNOWN_REFUSED",
    "DirectoryQuery",
    "RecipientVerdict",
    "Suggestion",
    "WhitelistDiff",
    "directory_choices",
    "directory_domain_structures",
    "directory_entries",
    "directory_entry",
    "directory_imports",
    "directory_last_import",
    "directory_per_entries",
    "directory_professional",
    "directory_search",
    "directory_structure_names",
    "directory_suggest",
    "recipient_cache_clear",
    "recipient_check",
    "typos_tolerated",
    "whitelist_allows",
    "whitelist_current",
    "whitelist_diff",
    "whitelist_dn_keys",
    "whitelist_entries",
    "whitelist_knows_domain",
    "whitelist_lists_certificate",
    "whitelist_previous",
    "whitelist_sync_runs",
]
