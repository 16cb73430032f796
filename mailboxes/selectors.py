"""Reads and access checks of the mailboxes app.

Rule (ARCHITECTURE.md): a BAL a person may not use answers 404 exactly like one that does not
exist; ``PermissionDenied`` only when they may see it but not do this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.core.exceptions import PermissionDenied
from django.db.models import F, FilteredRelation, Max, Q
from django.http import Http404
from django.utils import timezone

from accounts.models import AuditEvent, Membership, Structure, User
from accounts.selectors import directed_structures
from annuaire.directory import directory_suggest
from annuaire.models import DirectoryEntry
from mailboxes.errors import StoreUnavailable
from mailboxes.models import Mailbox, MailboxAccess, OutboundDelivery, OutboundMessage
from mailboxes.store.imap import MailStore
from mailboxes.store.mime import parse_message
from mailboxes.store.sizes import home_sizes


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


def _public_id(value: uuid.UUID | str) -> uuid.UUID:
    """A public id from a URL or a form; Http404 when it is not one (like a missing object)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404 from None


def _grants(user: User, public_id: uuid.UUID | None = None) -> list[Grant]:
    """The person's grants, in one query: PER BALs they hold, and BALs where they have a
    right (member, delegate) that includes reading and has not reached its end date."""
    if not user.is_authenticated:
        return []
    boxes = (
        Mailbox.objects.annotate(
            mine=FilteredRelation(
                "accesses",
                condition=Q(accesses__user=user)
                & (
                    Q(accesses__expires_at__isnull=True)
                    | Q(accesses__expires_at__gt=timezone.now())
                ),
            )
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
    key = _public_id(public_id)
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


# --- The director's console ---------------------------------------------------------------


def console_structures(user: User) -> list[Structure]:
    """The structures this person administers: those they direct; every structure for the
    operator's staff (a professional account marked staff)."""
    if not user.is_authenticated or not user.national_id:
        return []
    if user.is_staff:
        return list(Structure.objects.order_by("name"))
    return directed_structures(user)


def console_structure(user: User, public_id: uuid.UUID | str) -> Structure:
    """A structure the person administers. Http404 for any other, exactly like a missing one."""
    for structure in console_structures(user):
        if str(structure.public_id) == str(public_id):
            return structure
    raise Http404


def console_mailbox(structure: Structure, public_id: uuid.UUID | str) -> Mailbox:
    """A BAL of this structure (closed ones too). Http404 for any other."""
    key = _public_id(public_id)
    box = (
        Mailbox.objects.filter(structure=structure, public_id=key)
        .select_related("owner", "responsible", "domain")
        .first()
    )
    if box is None:
        raise Http404
    return box


@dataclass(frozen=True)
class BalRow:
    mailbox: Mailbox
    people: list[MailboxAccess]
    last_activity: datetime | None
    size: int | None


def console_mailboxes(structure: Structure, *, kind: str = "", status: str = "") -> list[BalRow]:
    """The structure's BALs with their people, last traced activity and size on disk, in
    three queries whatever their number (sizes come from a short-lived cache)."""
    chosen = Mailbox.objects.filter(structure=structure)
    if kind:
        chosen = chosen.filter(kind=kind)
    if status:
        chosen = chosen.filter(status=status)
    boxes = list(chosen.select_related("owner", "responsible").order_by("kind", "address"))
    now = timezone.now()
    people: dict[int, list[MailboxAccess]] = {}
    for access in (
        MailboxAccess.objects.filter(mailbox__in=boxes)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("user")
        .order_by("user__last_name", "user__first_name")
    ):
        people.setdefault(access.mailbox_id, []).append(access)
    last = dict(
        AuditEvent.objects.filter(
            target_type="mailboxes.mailbox", target_id__in=[str(b.public_id) for b in boxes]
        )
        .exclude(actor__isnull=True)
        .values("target_id")
        .annotate(at=Max("occurred_at"))
        .values_list("target_id", "at")
    )
    sizes = home_sizes([b.address for b in boxes if b.status != Mailbox.Status.CLOSED])
    return [
        BalRow(b, people.get(b.pk, []), last.get(str(b.public_id)), sizes.get(b.address))
        for b in boxes
    ]


def mailbox_people(mailbox: Mailbox) -> list[MailboxAccess]:
    """Members or delegates of a BAL whose right is in force, by name."""
    return list(
        MailboxAccess.objects.filter(mailbox=mailbox)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .select_related("user", "granted_by")
        .order_by("user__last_name", "user__first_name")
    )


def console_access(mailbox: Mailbox, public_id: uuid.UUID | str) -> MailboxAccess:
    access = MailboxAccess.objects.filter(mailbox=mailbox, public_id=public_id).first()
    if access is None:
        raise Http404
    return access


def structure_people(structure: Structure) -> list[Membership]:
    """Everyone of the structure with their role, directors first, then by name."""
    return list(
        Membership.objects.filter(structure=structure)
        .select_related("user")
        .order_by("-role", "user__last_name", "user__first_name")
    )


def structure_membership(structure: Structure, public_id: uuid.UUID | str) -> Membership:
    key = _public_id(public_id)
    membership = (
        Membership.objects.filter(structure=structure, public_id=key).select_related("user").first()
    )
    if membership is None:
        raise Http404
    return membership


def structure_person(structure: Structure, public_id: uuid.UUID | str) -> User:
    """A person of the structure by their public id (form choices). Http404 otherwise."""
    key = _public_id(public_id)
    user = User.objects.filter(public_id=key, memberships__structure=structure).first()
    if user is None:
        raise Http404
    return user


def owned_mailbox(user: User, public_id: uuid.UUID | str) -> Mailbox:
    """A PER BAL the person holds (to manage its delegations). Http404 otherwise."""
    key = _public_id(public_id)
    box = Mailbox.objects.filter(
        public_id=key, kind=Mailbox.Kind.PER, owner=user, status__in=USABLE
    ).first()
    if box is None:
        raise Http404
    return box


@dataclass(frozen=True)
class Candidate:
    """A professional a PER BAL can be created for: a person of the structure, or someone the
    national directory knows by their national id."""

    national_id: str
    first_name: str
    last_name: str
    detail: str
    user: User | None
    has_per: bool
    member: bool = False


def professional_candidates(structure: Structure, text: str, limit: int = 10) -> list[Candidate]:
    """People matching ``text`` (a name, or a national id): the structure's own first, then
    the national directory's professionals (their BAL address elsewhere does not matter)."""
    text = " ".join(text.split())
    if len(text) < 2:
        return []
    holders = set(
        Mailbox.objects.filter(
            structure=structure, kind=Mailbox.Kind.PER, status__in=USABLE
        ).values_list("owner_id", flat=True)
    )
    members = User.objects.filter(memberships__structure=structure)
    if text.isdigit():
        members = members.filter(national_id=text)
    else:
        for word in text.split()[:3]:
            members = members.filter(Q(last_name__icontains=word) | Q(first_name__icontains=word))
    found: list[Candidate] = [
        Candidate(
            u.national_id or "",
            u.first_name,
            u.last_name,
            "Membre de la structure",
            u,
            u.pk in holders,
            True,
        )
        for u in members.order_by("last_name", "first_name")[:limit]
    ]
    seen = {c.national_id for c in found}
    entries = DirectoryEntry.objects.filter(bal_type="PER").exclude(pp_national_id="")
    if text.isdigit():
        entries = entries.filter(pp_national_id=text)
    else:
        addresses = [s.address for s in directory_suggest(text, limit=limit * 2)]
        entries = entries.filter(address__in=addresses)
    known = {
        u.national_id: u
        for u in User.objects.filter(national_id__in=entries.values("pp_national_id"))
    }
    for entry in entries.order_by("last_name", "first_name")[: limit * 2]:
        if entry.pp_national_id in seen or len(found) >= limit:
            continue
        seen.add(entry.pp_national_id)
        detail = " · ".join(
            p for p in (entry.profession_label, entry.structure_name or entry.town) if p
        )
        found.append(
            Candidate(
                entry.pp_national_id,
                entry.first_name.title(),
                entry.last_name.upper(),
                f"Annuaire Santé : {detail}" if detail else "Annuaire Santé",
                known.get(entry.pp_national_id),
                False,
            )
        )
    return found
