"""Who may do what on a BAL: the grants of a person (holder, member, delegate) and the
access check every BAL page goes through.

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
from django.utils import timezone

from accounts.models import User
from mailboxes.models import Mailbox


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


def public_id_parse(value: uuid.UUID | str) -> uuid.UUID:
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
    key = public_id_parse(public_id)
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


def owned_mailbox(user: User, public_id: uuid.UUID | str) -> Mailbox:
    """A PER BAL the person holds (to manage its delegations). Http404 otherwise."""
    key = public_id_parse(public_id)
    box = Mailbox.objects.filter(
        public_id=key, kind=Mailbox.Kind.PER, owner=user, status__in=USABLE
    ).first()
    if box is None:
        raise Http404
    return box
