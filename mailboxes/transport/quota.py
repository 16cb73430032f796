"""A BAL's quota: how much mail it may hold (``Mailbox.quota_bytes``, none: no limit), set by the
operator (its console) or the structure's director (the BAL page), enforced at delivery: the
gateway answers ``452 4.2.2`` to RCPT for a BAL at or over its quota (RFC 3463 §3.3 X.2.2
"mailbox full", temporary: the sending operator keeps the message and retries) and the relay
defers a local delivery the same way; the webmail warns from WARN_PERCENT.

Usage is what Dovecot holds in the BAL's Maildir (mailboxes.store.sizes, cached a few minutes):
a BAL may go over its quota by the messages of those minutes, never lose one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction

from accounts.audit import Action, audit_record
from mailboxes.models import Mailbox
from mailboxes.store.sizes import home_sizes
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User

WARN_PERCENT = 90  # the webmail warns its readers from this share of the quota
MEGABYTE = 1024 * 1024
# RFC 5321 §4.2.2 452 (insufficient storage) with RFC 3463 X.2.2 (mailbox full), temporary.
FULL_REPLY = "452 4.2.2 Mailbox full: over its quota, try again later"
FULL_RESULT = "Mailbox full: over its quota"


class QuotaInvalid(PortalError):
    user_message = "Le quota doit être un nombre de mégaoctets positif, ou vide pour aucune limite."
    code = "mailbox.quota_invalid"
    http_status = 400


@dataclass(frozen=True)
class Usage:
    """What a BAL holds against its quota. ``used`` None: the Maildir could not be read."""

    used: int | None
    quota: int | None

    @property
    def percent(self) -> int | None:
        if self.quota is None or self.used is None:
            return None
        if self.quota == 0:
            return 100
        return int(self.used * 100 // self.quota)

    @property
    def full(self) -> bool:
        return self.quota is not None and self.used is not None and self.used >= self.quota

    @property
    def warn(self) -> bool:
        return self.percent is not None and self.percent >= WARN_PERCENT


def usages(boxes: list[Mailbox]) -> dict[str, Usage]:
    """Usage of each BAL of ``boxes`` by address (one Maildir walk each, cached)."""
    sizes = home_sizes(box.address for box in boxes)
    return {box.address: Usage(sizes.get(box.address), box.quota_bytes) for box in boxes}


def usage_of(box: Mailbox) -> Usage:
    return usages([box])[box.address]


def full_addresses(addresses: list[str]) -> set[str]:
    """The BALs among ``addresses`` that are at or over their quota (those without a quota are
    never full): the relay defers their local deliveries."""
    boxes = list(
        Mailbox.objects.filter(address__in=addresses, quota_bytes__isnull=False).only(
            "address", "quota_bytes"
        )
    )
    return {address for address, usage in usages(boxes).items() if usage.full}


def megabytes_to_bytes(value: str) -> int | None:
    """A quota typed in megabytes ("" or blank: no limit). Raises QuotaInvalid."""
    text = value.strip().replace(",", ".")
    if not text:
        return None
    try:
        megabytes = float(text)
    except ValueError as exc:
        raise QuotaInvalid() from exc
    if not megabytes > 0 or megabytes > 10_000_000:
        raise QuotaInvalid()
    return int(megabytes * MEGABYTE)


@transaction.atomic
def mailbox_quota_set(
    *,
    mailbox: Mailbox,
    quota_bytes: int | None,
    actor: User,
    request: HttpRequest | None = None,
) -> Mailbox:
    """Set ``mailbox``'s quota (bytes, None: no limit), traced (``mailbox.quota_set``) with the
    previous and the new value. The gateway applies it within its verdict cache's few seconds.
    Raises QuotaInvalid for a negative quota."""
    if quota_bytes is not None and quota_bytes < 0:
        raise QuotaInvalid()
    locked = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    previous = locked.quota_bytes
    locked.quota_bytes = quota_bytes
    locked.save(update_fields=["quota_bytes"])
    audit_record(
        action=Action.QUOTA_SET,
        actor=actor,
        target=locked,
        structure_id=locked.structure_id,
        request=request,
        details={"address": locked.address, "before": previous, "after": quota_bytes},
    )
    mailbox.quota_bytes = quota_bytes
    return locked
