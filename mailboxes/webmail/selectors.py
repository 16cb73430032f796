"""Reads of the webmail: unread counts, what became of what a BAL sent, the people it wrote
to lately. Reads of message content are services (``services.messages``): they are traced."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils.translation import gettext as _

from accounts.audit import Action, TargetType
from accounts.models import AuditEvent, User
from accounts.typography import octets
from mailboxes.access import Access, Grant
from mailboxes.errors import StoreUnavailable
from mailboxes.models import Mailbox, MessageHandling, OutboundDelivery, OutboundMessage
from mailboxes.store.imap import SPECIAL_FOLDERS, Criteria, Folder, MailStore
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


@dataclass(frozen=True)
class Arrivals:
    """What changed in a folder since its page was shown: the tab title and the banner."""

    label: str
    unread: int
    arrived: int


def folder_arrivals(grant: Grant, folder: str, since: int) -> Arrivals | None:
    """New messages in ``folder`` of the BAL since UID ``since`` (the page's UIDNEXT), for
    the webmail's polling; None for a folder the BAL does not have or a person who may not
    read it. Counts only: nothing is opened or marked, so nothing is traced (like the
    switcher's counts)."""
    if not grant.allows(Access.READ):
        return None
    with MailStore(grant.mailbox.address) as store:
        if not store.folder_exists(folder):
            return None
        unread, arrived = store.arrivals(folder, since)
    return Arrivals(str(SPECIAL_FOLDERS.get(folder, folder)), unread, arrived)


Ref = tuple[str, int]  # (folder, UID)


@dataclass(frozen=True)
class Neighbours:
    """The messages above and below one message in the list it was opened from."""

    previous: Ref | None
    next: Ref | None
    position: int  # 1-based; 0 when the message is no longer in that list
    total: int
    folders: tuple[Folder, ...] = ()  # the BAL's folders, without counts (to move it)


def list_neighbours(
    grant: Grant,
    folder: str,
    uid: int,
    *,
    criteria: Criteria | None,
    order: str,
    everywhere: bool = False,
    threaded: bool = False,
    with_folders: bool = False,
    store: MailStore | None = None,
) -> Neighbours:
    """Previous / next of ``uid`` in the list (folder, search, order, or the conversation view)
    its page came from, for the message page. UIDs only: nothing is opened or marked, so
    nothing is traced (like the counts); ``with_folders``: the BAL's folders too, in the same
    IMAP session. ``store``: an IMAP session already open on this BAL (the page's own, which
    read the message), else one is opened. Empty for a folder the BAL does not have or a
    person who may not read it."""
    if not grant.allows(Access.READ):
        return Neighbours(None, None, 0, 0)
    if store is not None:
        return _neighbours(store, folder, uid, criteria, order, everywhere, threaded, with_folders)
    with MailStore(grant.mailbox.address) as opened:
        return _neighbours(opened, folder, uid, criteria, order, everywhere, threaded, with_folders)


def _neighbours(
    store: MailStore,
    folder: str,
    uid: int,
    criteria: Criteria | None,
    order: str,
    everywhere: bool,
    threaded: bool,
    with_folders: bool,
) -> Neighbours:
    searching = criteria is not None and not criteria.is_empty()
    if not store.folder_exists(folder):
        return Neighbours(None, None, 0, 0)
    # The folders to move the message to: names only, no counts (no STATUS).
    folders = tuple(store.folders(counts=False)) if with_folders else ()
    if everywhere and searching:
        assert criteria is not None
        refs = store.everywhere(store.folder_names(), criteria=criteria)
    elif threaded:
        threads = store.threads(folder, criteria=criteria if searching else None)
        refs = [(folder, u) for thread in threads for u in thread]
    else:
        near = store.around(folder, uid) if order == "arrival" and not searching else None
        if near is not None:  # the folder by arrival: its neighbours without every UID
            above, below, position, total = near
            return Neighbours(
                (folder, above) if above else None,
                (folder, below) if below else None,
                position,
                total,
                folders,
            )
        found = store.ordered_uids(folder, criteria=criteria if searching else None, order=order)
        refs = [(folder, u) for u in found]
    try:
        at = refs.index((folder, uid))
    except ValueError:
        return Neighbours(None, None, 0, len(refs), folders)
    return Neighbours(
        refs[at - 1] if at > 0 else None,
        refs[at + 1] if at + 1 < len(refs) else None,
        at + 1,
        len(refs),
        folders,
    )


def folders_of(grant: Grant) -> list[Folder]:
    """The BAL's folders with their counts (STATUS only, untraced like the switcher's counts),
    for the page that arranges them."""
    if not grant.allows(Access.READ):
        return []
    with MailStore(grant.mailbox.address) as store:
        return store.folders()


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


TEAM_KINDS = (Mailbox.Kind.ORG, Mailbox.Kind.APP)


def handlings_of(mailbox: Mailbox, message_ids: list[str]) -> dict[str, MessageHandling]:
    """Who took which of these messages in charge, for a page of a team BAL's list."""
    if mailbox.kind not in TEAM_KINDS or not message_ids:
        return {}
    rows = MessageHandling.objects.filter(
        mailbox=mailbox, message_id__in=[m for m in message_ids if m]
    ).select_related("by")
    return {h.message_id: h for h in rows}


def taken_by(mailbox: Mailbox, user: User, limit: int = 500) -> tuple[str, ...]:
    """The Message-IDs ``user`` has in charge in the team BAL (« Pris en charge par moi »)."""
    return tuple(
        MessageHandling.objects.filter(mailbox=mailbox, by=user, state=MessageHandling.State.TAKEN)
        .order_by("-at")
        .values_list("message_id", flat=True)[:limit]
    )


def openers_of(mailbox: Mailbox, message_id: str) -> list[tuple[str, datetime]]:
    """Who of the team opened this message and when they first did, from the journal's
    « Lecture d'un message » traces (oldest first): « Ouvert par » on a team BAL's message."""
    if mailbox.kind not in TEAM_KINDS or not message_id:
        return []
    first: dict[str, datetime] = {}
    events = (
        AuditEvent.objects.filter(
            action=Action.MESSAGE_READ.value,
            # Both columns of the journal's index (audit_target), not target_id alone.
            target_type=TargetType.MAILBOX.value,
            target_id=str(mailbox.public_id),
            result=AuditEvent.Result.SUCCESS,
            details__message_id=message_id,
        )
        .order_by("occurred_at")
        .values_list("actor__first_name", "actor__last_name", "actor_label", "occurred_at")[:200]
    )
    for first_name, last_name, label, when in events:
        first.setdefault(f"{first_name or ''} {last_name or ''}".strip() or label, when)
    return list(first.items())


def sent_statuses(mailbox: Mailbox, message_ids: list[str]) -> dict[str, list[OutboundDelivery]]:
    """The recipients' deliveries of a page of the Sent folder, by Message-ID (one query)."""
    ids = [m for m in message_ids if m]
    if not ids:
        return {}
    found: dict[str, list[OutboundDelivery]] = {}
    rows = OutboundDelivery.objects.filter(
        message__mailbox=mailbox, message__message_id__in=ids
    ).only("status", "read_at", "recipient", "message__message_id")
    for row in rows.select_related("message"):
        found.setdefault(row.message.message_id, []).append(row)
    return found


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
        "used": octets(usage.used),
        "quota": octets(mailbox.quota_bytes),
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
