"""Reads of the director's console: the structures a person administers, their BALs with
people, activity and size, their people, the professionals a PER BAL can be created for.

Like every read of a BAL (``mailboxes.access``), whatever is not the director's answers 404.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, Q
from django.http import Http404
from django.utils import timezone

from accounts.audit import TargetType
from accounts.models import AuditEvent, Membership, Structure, User
from accounts.selectors import administered_structures
from annuaire.selectors import directory_per_entries
from mailboxes.access import USABLE, public_id_parse, usable_mailboxes
from mailboxes.errors import StoreUnavailable
from mailboxes.models import AppCertificate, Mailbox, MailboxAccess
from mailboxes.store.imap import MailStore
from mailboxes.store.sizes import home_sizes


def console_structures(user: User) -> list[Structure]:
    """The structures this person administers (``accounts.selectors.administered_structures``:
    the webmail asks it too, to link a message to its history)."""
    return administered_structures(user)


def console_structure(user: User, public_id: uuid.UUID | str) -> Structure:
    """A structure the person administers. Http404 for any other, exactly like a missing one."""
    for structure in console_structures(user):
        if str(structure.public_id) == str(public_id):
            return structure
    raise Http404


def console_mailbox(structure: Structure, public_id: uuid.UUID | str) -> Mailbox:
    """A BAL of this structure (closed ones too). Http404 for any other."""
    key = public_id_parse(public_id)
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


def console_certificate(mailbox: Mailbox, public_id: uuid.UUID | str) -> AppCertificate:
    """A software certificate bound to this BAL. Http404 for any other."""
    found = AppCertificate.objects.filter(
        mailbox=mailbox, public_id=public_id_parse(public_id)
    ).first()
    if found is None:
        raise Http404
    return found


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
            target_type=TargetType.MAILBOX, target_id__in=[str(b.public_id) for b in boxes]
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


def existing_access(mailbox: Mailbox, user: User) -> MailboxAccess | None:
    """The rights ``user`` already holds on ``mailbox`` (a new grant would replace them)."""
    return MailboxAccess.objects.filter(mailbox=mailbox, user=user).first()


def structure_people(structure: Structure) -> list[Membership]:
    """Everyone of the structure with their role, directors first, then by name."""
    return list(
        Membership.objects.filter(structure=structure)
        .select_related("user")
        .order_by("-role", "user__last_name", "user__first_name")
    )


def structure_membership(structure: Structure, public_id: uuid.UUID | str) -> Membership:
    key = public_id_parse(public_id)
    membership = (
        Membership.objects.filter(structure=structure, public_id=key).select_related("user").first()
    )
    if membership is None:
        raise Http404
    return membership


def structure_person(structure: Structure, public_id: uuid.UUID | str) -> User:
    """A person of the structure by their public id (form choices). Http404 otherwise."""
    key = public_id_parse(public_id)
    user = User.objects.filter(public_id=key, memberships__structure=structure).first()
    if user is None:
        raise Http404
    return user


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
    entries = directory_per_entries(text, limit=limit * 2)
    known = {
        u.national_id: u
        for u in User.objects.filter(national_id__in=[e.pp_national_id for e in entries])
    }
    for entry in entries:
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


def journal_subjects(user: User, wanted: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """The subjects of the messages the journal names, keyed by (BAL public id, Message-ID),
    only on the BALs this person may read themselves: a director sees who read what, not
    what the mail of a BAL they may not read is about. ``wanted``: BAL public id -> the
    Message-IDs of its traces. One IMAP session per BAL; a BAL whose store does not answer
    simply shows no subject."""
    readable = {str(g.mailbox.public_id): g.mailbox for g in usable_mailboxes(user)}
    found: dict[tuple[str, str], str] = {}
    for box_id, message_ids in wanted.items():
        box = readable.get(box_id)
        if box is None or not message_ids:
            continue
        try:
            with MailStore(box.address) as store:
                subjects = store.subjects(message_ids)
        except StoreUnavailable:
            continue
        found.update({(box_id, mid): subject for mid, subject in subjects.items()})
    return found
