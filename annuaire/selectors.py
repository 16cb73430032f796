"""Reads of the annuaire app: trust decisions against the whitelist in force."""

from __future__ import annotations

from cryptography import x509

from annuaire.models import WhitelistEntry, WhitelistVersion
from annuaire.whitelist import dn_key


def whitelist_current() -> WhitelistVersion | None:
    return WhitelistVersion.objects.filter(is_current=True).first()


def whitelist_knows_domain(domain: str) -> bool:
    """Whether a domain belongs to the trust space. Exact match only: trust is never decided
    by a `*.mssante.fr` suffix (§1.2: some domains are elsewhere, and a suffix proves nothing)."""
    return WhitelistEntry.objects.filter(
        version__is_current=True, domain=domain.strip().lower()
    ).exists()


def whitelist_allows(domain: str, peer: str | x509.Name) -> bool:
    """Whether the certificate DN ``peer`` is listed for ``domain`` in the list in force."""
    try:
        key = dn_key(peer)
    except ValueError:
        return False
    return WhitelistEntry.objects.filter(
        version__is_current=True, domain=domain.strip().lower(), dn_key=key
    ).exists()
