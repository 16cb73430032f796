"""Reads of the annuaire app: trust decisions against the whitelist in force."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from annuaire.ins import INS, InvalidINS, patient_address
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


MALFORMED = "Adresse mal formée."


@dataclass(frozen=True)
class RecipientVerdict:
    """What the sender sees next to an address before sending (issue 5: per address, why)."""

    address: str
    ok: bool
    reason: str = ""  # French, for the person writing
    patient: INS | None = None


def recipient_check(address: str) -> RecipientVerdict:
    """Whether ``address`` may receive MSSanté mail from us, judged on what the annuaire app
    knows: syntax, Mon Espace Santé addresses (valid INS key), the trust space (whitelist, exact
    domain). The BALs we host are checked by the mailboxes app."""
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
    return RecipientVerdict(address, True, patient=patient)
