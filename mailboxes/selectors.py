"""Reads and access checks of the mailboxes app.

Rule (ARCHITECTURE.md): a BAL a person may not use answers 404 exactly like one that does not
exist; ``PermissionDenied`` only when they may see it but not do this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from django.core.exceptions import PermissionDenied
from django.db.models import F, FilteredRelation, Q
from django.http import Http404

from accounts.models import User
from mailboxes.errors import StoreUnavailable
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store.imap import MailStore
from mailboxes.store.mime import parse_message


class Access(StrEnum):
    READ = "read"
    SEND = "send"
    MANAGE = "manage"


@dataclass(frozen=True)
class Grant:
    mailbox: Mailbox
    read: bool
    send: bool
    manage: bool
    relation: str  # "owner", "member", "delegate"

    def allows(self, need: Access) -> bool:
        return {"read": self.read, "send": self.send, "manage": self.manage}[need]


USABLE = [Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED]


def _grants(user: User, public_id: uuid.UUID | None = None) -> list[Grant]:
    """The person's grants, in one query: PER BALs they hold, and BALs where they have a
    right (member, delegate) that includes reading."""
    if not user.is_authenticated:
        return []
    boxes = (
        Mailbox.objects.annotate(
            mine=FilteredRelation("accesses", condition=Q(accesses__user=user))
        )
        .filter(status__in=USABLE)
        .filter(Q(kind=Mailbox.Kind.PER, owner=user) | Q(mine__can_read=True))
        .annotate(
            access_kind=F("mine__kind"),
            access_send=F("mine__can_send"),
            access_manage=F("mine__can_manage"),
        )
        .select_related("structure")
    )
    if public_id is not None:
        boxes = boxes.filter(public_id=public_id)
    grants = []
    for box in boxes:
        if box.kind == Mailbox.Kind.PER and box.owner_id == user.pk:
            grants.append(Grant(box, True, True, True, "owner"))
        else:
            grants.append(
                Grant(box, True, bool(box.access_send), bool(box.access_manage), box.access_kind)
            )
    return sorted(grants, key=lambda g: (g.mailbox.kind != Mailbox.Kind.PER, g.mailbox.address))


def usable_mailboxes(user: User) -> list[Grant]:
    """Every BAL the person may read: their PER BAL, ORG BALs they belong to, delegations."""
    return _grants(user)


def access_mailbox(
    user: User,
    public_id: uuid.UUID | str,
    need: Access = Access.READ,
    *,
    among: list[Grant] | None = None,
) -> Grant:
    """The person's grant on one BAL. Raises Http404 when missing or not theirs,
    PermissionDenied when they may read it but not ``need``. ``among``: the person's grants
    already read by the caller (``usable_mailboxes``), to spare a query."""
    try:
        key = uuid.UUID(str(public_id))
    except ValueError:
        raise Http404 from None
    if among is not None:
        grants = [g for g in among if g.mailbox.public_id == key]
    else:
        grants = _grants(user, key)
    if not grants:
        raise Http404
    grant = grants[0]
    if not grant.allows(need):
        raise PermissionDenied
    return grant


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


def message_html(grant: Grant, folder: str, uid: int) -> str | None:
    """The HTML body of a message, unsanitised (the caller sanitises), or None if missing.
    The read itself was traced when the message page was opened."""
    with MailStore(grant.mailbox.address) as store:
        if not store.folder_exists(folder):
            return None
        found = store.fetch(folder, uid, mark_seen=False)
    return parse_message(found[0]).html if found else None


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
