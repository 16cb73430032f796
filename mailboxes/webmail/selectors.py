"""Reads of the webmail: unread counts, what became of what a BAL sent, the people it wrote
to lately. Reads of message content are services (``services.messages``): they are traced."""

from __future__ import annotations

from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from mailboxes.access import Grant
from mailboxes.errors import StoreUnavailable
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store.imap import MailStore
from mailboxes.transport import quota


def unread_counts(grants: list[Grant]) -> list[tuple[Grant, int | None]]:
    """Unread messages in the INBOX of each BAL (None when the store does not answer)."""
    rows: list[tuple[Grant, int | None]] = []
    for grant in grants:
        try:
            with MailStore(grant.mailbox.address) as store:
                rows.append((grant, store.unread()))
        except StoreUnavailable:
            rows.append((grant, None))
    return rows


def delivery_statuses(mailbox: Mailbox, message_id: str) -> list[OutboundDelivery]:
    """What became of each recipient of a message this BAL sent (shown on the Sent copy)."""
    if not message_id:
        return []
    return list(
        OutboundDelivery.objects.filter(
            message__mailbox=mailbox, message__message_id=message_id
        ).order_by("recipient")
    )


def recent_correspondents(grants: list[Grant], text: str, limit: int = 3) -> list[str]:
    """Addresses these BALs wrote to lately (webmail sends), matching every word typed, most
    recent first: the first suggestions of the compose autocomplete."""
    words = [w for w in text.lower().replace(",", " ").split() if w][:4]
    if not words or not grants:
        return []
    rows = OutboundDelivery.objects.filter(
        message__mailbox__in=[g.mailbox for g in grants],
        message__origin=OutboundMessage.Origin.WEBMAIL,
    )
    for word in words:
        rows = rows.filter(recipient__icontains=word)
    seen: list[str] = []
    for address in rows.order_by("-id").values_list("recipient", flat=True)[:200]:
        if address not in seen:
            seen.append(address)
            if len(seen) >= limit:
                break
    return seen


def quota_warning(mailbox: Mailbox) -> str | None:
    """The webmail's warning for a BAL at WARN_PERCENT of its quota or more, in French; None
    without a quota or below it (no Maildir walk for a BAL without a quota)."""
    if mailbox.quota_bytes is None:
        return None
    usage = quota.usage_of(mailbox)
    if not usage.warn or usage.used is None:
        return None
    values = {
        "percent": usage.percent,
        "used": filesizeformat(usage.used),
        "quota": filesizeformat(mailbox.quota_bytes),
    }
    if usage.full:
        return (
            _(
                "Votre BAL est pleine à %(percent)s %% (%(used)s sur %(quota)s) : les nouveaux "
                "messages ne lui sont plus remis et attendent chez l'expéditeur. Supprimez des "
                "messages ou videz la corbeille."
            )
            % values
        )
    return (
        _(
            "Votre BAL est pleine à %(percent)s %% (%(used)s sur %(quota)s). Au-delà de 100 %%, "
            "les nouveaux messages ne lui seront plus remis : supprimez des messages ou videz la "
            "corbeille."
        )
        % values
    )
