"""Who may do what on a BAL: the grants of a person (holder, member, delegate) and the
access check every BAL page and every webmail service goes through.

Rule (ARCHITECTURE.md): a BAL a person may not use answers 404 exactly like one that does not
exist; ``RightMissing`` (403, in French) only when they may read it but not do this.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models import F, FilteredRelation, Q
from django.http import Http404
from django.utils import timezone

from accounts.models import Structure, User
from mailboxes.errors import RightMissing
from mailboxes.models import Mailbox, MailboxAccess
from mssante_portal.sql import column

_M = TypeVar("_M", bound=models.Model)


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
    from a national id) grants nothing to anyone else until that first sign-in.

    ``_grant_one`` (ORM) and ``login_grant`` (SQL) ask this same rule for one BAL: change the
    three together."""
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
    grants = [
        _grant(box, user.pk, box.access_kind, box.access_organise, box.access_send,
               box.access_manage, box.access_until)
        for box in boxes
    ]  # fmt: skip
    return sorted(grants, key=lambda g: (g.mailbox.kind != Mailbox.Kind.PER, g.mailbox.address))


def _grant(
    box: Mailbox, user_pk: int, kind: str, organise: bool, send: bool, manage: bool,
    until: datetime | None,
) -> Grant:  # fmt: skip
    """The grant of a BAL the rule of ``_grants`` let through: the holder's of a PER BAL, else
    the one of the person's MailboxAccess row (``kind``, its rights, its end)."""
    if box.kind == Mailbox.Kind.PER and box.owner_id == user_pk:
        return Grant(box, True, True, True, True, "owner")
    return Grant(
        box, read=True, organise=bool(organise), send=bool(send), manage=bool(manage),
        relation=kind, until=until,
    )  # fmt: skip


def _grant_one(user: User, public_id: uuid.UUID) -> Grant | None:
    """The person's grant on one BAL, by the rules of ``_grants`` (and of ``login_grant``, in
    SQL: change the three together; tests/mailboxes/software/test_rights.py compares them):
    one plain query for the holder of a PER BAL, a second one for anyone else (their right on
    it). Every BAL page asks this first, and Django builds these two plain queries in well
    under half the time of the filtered join that ``_grants`` needs to list every BAL."""
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
        return _grant(box, user.pk, "", True, True, True, None)
    rights = MailboxAccess.objects.filter(mailbox=box, user=user, can_read=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )
    if box.kind == Mailbox.Kind.PER:
        # Nobody else until its holder's first sign-in with Pro Santé Connect (``_grants``).
        rights = rights.filter(mailbox__owner__psc_refreshed_at__isnull=False)
    right = next(iter(rights), None)
    if right is None:
        return None
    return _grant(
        box, user.pk, right.kind, right.can_organise, right.can_send, right.can_manage,
        right.expires_at,
    )  # fmt: skip


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
        grant = _grant_one(user, key)
    if grant is None:
        raise Http404
    require(grant, need)
    return grant


def grant_for(user: User, mailbox: Mailbox) -> Grant | None:
    """The person's grant on ``mailbox``, or None: what services ask before acting on a BAL
    for someone (its delegations)."""
    return _grant_one(user, mailbox.public_id)


@functools.cache
def _login_sql() -> str:
    """The query of ``login_grant`` (built once: names from the models' metadata)."""
    quote = connection.ops.quote_name
    access = MailboxAccess._meta

    def columns(model: type[models.Model], alias: str) -> str:
        return ", ".join(f"{alias}.{quote(str(f.column))}" for f in model._meta.concrete_fields)

    u, m, s, a = User, Mailbox, Structure, MailboxAccess
    usable = ", ".join(f"%(usable{n})s" for n in range(len(USABLE)))
    # The rule of ``_grants``, for one person and one BAL: a usable BAL, and either the PER
    # BAL they hold or a live MailboxAccess row that reads (on a PER BAL, only once its
    # holder has signed in with PSC). Names from the models; values go as parameters.
    return f"""
        SELECT {columns(u, "u")}, {columns(m, "m")}, {columns(s, "s")},
            a.{column(a, "kind")}, a.{column(a, "can_organise")}, a.{column(a, "can_send")},
            a.{column(a, "can_manage")}, a.{column(a, "expires_at")},
            (m.{column(m, "status")} IN ({usable}) AND (
                (m.{column(m, "kind")} = %(per)s AND m.{column(m, "owner")} = u.{column(u, "id")})
                OR (a.{column(a, "can_read")} AND (
                    m.{column(m, "kind")} <> %(per)s
                    OR o.{column(u, "psc_refreshed_at")} IS NOT NULL))
            )) IS TRUE
        FROM (SELECT 1) AS one
        LEFT JOIN {quote(u._meta.db_table)} u
            ON u.{column(u, "national_id")} = %(national_id)s AND u.{column(u, "is_active")}
        LEFT JOIN {quote(m._meta.db_table)} m ON m.{column(m, "address")} = %(address)s
        LEFT JOIN {quote(s._meta.db_table)} s ON s.{column(s, "id")} = m.{column(m, "structure")}
        LEFT JOIN {quote(access.db_table)} a
            ON a.{column(a, "mailbox")} = m.{column(m, "id")}
            AND a.{column(a, "user")} = u.{column(u, "id")}
            AND (a.{column(a, "expires_at")} IS NULL OR a.{column(a, "expires_at")} > %(now)s)
        LEFT JOIN {quote(u._meta.db_table)} o ON o.{column(u, "id")} = m.{column(m, "owner")}
    """  # noqa: S608


def _converted(field: models.Field[Any, Any], value: Any) -> Any:
    """A raw column's value as the ORM would give it (JSON decoded, SQLite's dates parsed)."""
    col = field.get_col(field.model._meta.db_table)
    for convert in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
        value = convert(value, col, connection)
    return value


def _row_instance(model: type[_M], values: tuple[Any, ...]) -> _M | None:
    """A model instance from its columns in a raw row (None when the LEFT JOIN found none)."""
    fields = model._meta.concrete_fields
    if values[fields.index(model._meta.pk)] is None:
        return None
    return model.from_db(
        connection.alias,
        [f.attname for f in fields],
        [_converted(f, v) for f, v in zip(fields, values, strict=True)],
    )


def login_grant(national_id: str, address: str) -> tuple[User | None, Mailbox | None, Grant | None]:
    """The active person with ``national_id``, the BAL ``address`` (its structure loaded) and
    that person's grant on it, each None when missing, in one query: what a software's login
    asks at every session (mailboxes.software.sessions), where ``grant_for`` after two lookups
    cost three ORM queries. The same rule as ``_grants`` (grant_for), which
    tests/mailboxes/software/test_rights.py walks against this one, relation by relation."""
    params: dict[str, Any] = {
        "national_id": national_id, "address": address, "now": timezone.now(),
        "per": str(Mailbox.Kind.PER), **{f"usable{n}": str(s) for n, s in enumerate(USABLE)},
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(_login_sql(), params)
        row = cursor.fetchone()
    assert row is not None  # FROM (SELECT 1): always one row
    widths = [len(model._meta.concrete_fields) for model in (User, Mailbox, Structure)]
    user = _row_instance(User, row[: widths[0]])
    mailbox = _row_instance(Mailbox, row[widths[0] : widths[0] + widths[1]])
    structure = _row_instance(Structure, row[widths[0] + widths[1] : sum(widths)])
    kind, organise, send, manage, until, granted = row[sum(widths) :]
    until = _converted(MailboxAccess._meta.get_field("expires_at"), until)
    if mailbox is not None:
        assert structure is not None  # a BAL always belongs to a structure
        Mailbox.structure.field.set_cached_value(mailbox, structure)
    if mailbox is None or user is None or not granted:
        return user, mailbox, None
    return user, mailbox, _grant(mailbox, user.pk, kind, organise, send, manage, until)
