"""Who may do what on a BAL: the grants of a person (holder, member, delegate) and the
access check every BAL page and every webmail service goes through.

Rule (ARCHITECTURE.md): a BAL a person may not use answers 404 exactly like one that does not
exist; ``RightMissing`` (403, in French) only when they may read it but not do this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from django.db.models import F, FilteredRelation, Q
from django.http import Http404
from django.utils import timezone

from accounts.models import User
from mailboxes.errors import RightMissing
from mailboxes.models import Mailbox, MailboxAccess


class Access(StrEnum):
    """The four rights on a BAL. Reading is part of every grant; organise, send and manage
    are granted one by one (``MailboxAccess``); the holder of a PER BAL has all four."""

    READ = "read"  # lists, messages, attachments
    ORGANISE = "organise"  # flags (\Seen included), move, put in the Trash
    SEND = "send"  # write from the BAL, drafts, read receipts
    MANAGE = "manage"  # empty the Trash, delete for good, the BAL's delegations


MISSING = {
    Access.READ: "Vous ne pouvez pas lire cette boîte aux lettres.",
    Access.ORGANISE: (
        "Vous pouvez lire cette boîte aux lettres mais pas classer ses messages (marquer, "
        "déplacer, mettre à la corbeille) : demandez ce droit à son ou sa titulaire, ou à la "
        "direction de votre structure."
    ),
    Access.SEND: (
        "Vous pouvez lire cette boîte aux lettres mais pas écrire en son nom : demandez le "
        "droit d'envoi à son ou sa titulaire, ou à la direction de votre structure."
    ),
    Access.MANAGE: (
        "Seule une personne qui gère cette boîte aux lettres peut vider la corbeille, "
        "supprimer définitivement des messages ou gérer ses délégations."
    ),
}


@dataclass(frozen=True)
class Grant:
    mailbox: Mailbox
    read: bool
    organise: bool
    send: bool
    manage: bool
    relation: str  # "owner", "member", "delegate"
    until: datetime | None = None  # a delegation's end (MailboxAccess.expires_at)

    def allows(self, need: Access) -> bool:
        return {
            Access.READ: self.read,
            Access.ORGANISE: self.organise,
            Access.SEND: self.send,
            Access.MANAGE: self.manage,
        }[need]


def require(grant: Grant, need: Access) -> None:
    """Raise RightMissing (403, French message naming the right) unless ``grant`` holds
    ``need``. Every webmail service asks it before touching the store."""
    if not grant.allows(need):
        raise RightMissing(MISSING[need])


USABLE = [Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED]


def public_id_parse(value: uuid.UUID | str) -> uuid.UUID:
    """A public id from a URL or a form; Http404 when it is not one (like a missing object)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404 from None


def _grants(user: User) -> list[Grant]:
    """The person's grants, in one query: PER BALs they hold, and BALs where they have a
    right (member, delegate) that includes reading and has not reached its end date.

    A PER BAL whose holder has never signed in with Pro Santé Connect (created by a director
    from a national id) grants nothing to anyone else until that first sign-in."""
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
        .filter(
            Q(kind=Mailbox.Kind.PER, owner=user)
            | (
                Q(mine__can_read=True)
                & (~Q(kind=Mailbox.Kind.PER) | Q(owner__psc_refreshed_at__isnull=False))
            )
        )
        .annotate(
            access_kind=F("mine__kind"),
            access_organise=F("mine__can_organise"),
            access_send=F("mine__can_send"),
            access_manage=F("mine__can_manage"),
            access_until=F("mine__expires_at"),
        )
        .select_related("structure")
    )
    grants = []
    for box in boxes:
        if box.kind == Mailbox.Kind.PER and box.owner_id == user.pk:
            grants.append(Grant(box, True, True, True, True, "owner"))
        else:
            grants.append(
                Grant(
                    box,
                    read=True,
                    organise=bool(box.access_organise),
                    send=bool(box.access_send),
                    manage=bool(box.access_manage),
                    relation=box.access_kind,
                    until=box.access_until,
                )
            )
    return sorted(grants, key=lambda g: (g.mailbox.kind != Mailbox.Kind.PER, g.mailbox.address))


def _grant(user: User, public_id: uuid.UUID) -> Grant | None:
    """The person's grant on one BAL, by the rules of ``_grants``: one plain query for the
    holder of a PER BAL, a second one for anyone else (their right on it). Every BAL page asks
    this first, and Django builds these two plain queries in well under half the time of the
    filtered join that ``_grants`` needs to list every BAL at once."""
    if not user.is_authenticated:
        return None
    box = next(
        iter(
            Mailbox.objects.select_related("structure").filter(
                public_id=public_id, status__in=USABLE
            )
        ),
        None,
    )
    if box is None:
        return None
    if box.kind == Mailbox.Kind.PER and box.owner_id == user.pk:
        return Grant(box, True, True, True, True, "owner")
    rights = MailboxAccess.objects.filter(mailbox=box, user=user, can_read=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )
    if box.kind == Mailbox.Kind.PER:
        # Nobody else until its holder's first sign-in with Pro Santé Connect (``_grants``).
        rights = rights.filter(mailbox__owner__psc_refreshed_at__isnull=False)
    right = next(iter(rights), None)
    if right is None:
        return None
    return Grant(
        box,
        read=True,
        organise=right.can_organise,
        send=right.can_send,
        manage=right.can_manage,
        relation=right.kind,
        until=right.expires_at,
    )


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
    RightMissing when they may read it but not ``need``. ``among``: the person's grants
    already read by the caller (``usable_mailboxes``), to spare a query."""
    key = public_id_parse(public_id)
    if among is not None:
        grant = next((g for g in among if g.mailbox.public_id == key), None)
    else:
        grant = _grant(user, key)
    if grant is None:
        raise Http404
    require(grant, need)
    return grant


def grant_for(user: User, mailbox: Mailbox) -> Grant | None:
    """The person's grant on ``mailbox``, or None: what services ask before acting on a BAL
    for someone (its delegations)."""
    return _grant(user, mailbox.public_id)
