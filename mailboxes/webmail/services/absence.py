"""The absence message of a BAL (« Message d'absence »), set from the webmail by a person who
may write from the BAL: the reply speaks in the BAL's name, as a message they would send
(mailboxes/access.py, Access.SEND). The replies themselves: mailboxes/transport/absence.py."""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import Action, audit_record
from accounts.models import User
from mailboxes.access import Access, Grant, require
from mailboxes.models import Absence
from mailboxes.transport.absence import absence_watch_reset

MAX_DAYS = 366  # an absence is for leave or a course, not a permanent redirection of mail


def absence_of(*, grant: Grant) -> Absence | None:
    """The absence set for the BAL of ``grant`` (in force, to come or past), None if none."""
    return Absence.objects.filter(mailbox=grant.mailbox).first()


@transaction.atomic
def absence_set(
    *,
    grant: Grant,
    actor: User,
    starts_on: date,
    ends_on: date,
    text: str,
    request: HttpRequest | None = None,
) -> Absence:
    """Set the absence of the BAL of ``grant`` from ``starts_on`` to ``ends_on`` (included).
    Raises RightMissing without the send right, ValidationError (French) for dates in the
    past, reversed or too far apart. Traced; the gateways see it within 30 s (or at once in
    this process)."""
    require(grant, Access.SEND)
    if ends_on < starts_on:
        raise ValidationError("La date de fin précède la date de début.", code="absence_order")
    if ends_on < timezone.localdate():
        raise ValidationError("La date de fin est déjà passée.", code="absence_past")
    if (ends_on - starts_on).days >= MAX_DAYS:
        raise ValidationError("Une absence dure au plus un an.", code="absence_length")
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()
    absence, _created = Absence.objects.update_or_create(
        mailbox=grant.mailbox,
        defaults={"starts_on": starts_on, "ends_on": ends_on, "text": text, "set_by": actor},
    )
    audit_record(
        action=Action.ABSENCE_SET,
        actor=actor,
        target=grant.mailbox,
        structure_id=grant.mailbox.structure_id,
        request=request,
        details={"from": starts_on.isoformat(), "to": ends_on.isoformat()},
    )
    transaction.on_commit(absence_watch_reset)
    return absence


@transaction.atomic
def absence_clear(*, grant: Grant, actor: User, request: HttpRequest | None = None) -> bool:
    """Stop the absence of the BAL of ``grant``. False when there was none. Raises
    RightMissing without the send right. Traced."""
    require(grant, Access.SEND)
    deleted, _ = Absence.objects.filter(mailbox=grant.mailbox).delete()
    if not deleted:
        return False
    audit_record(
        action=Action.ABSENCE_CLEARED,
        actor=actor,
        target=grant.mailbox,
        structure_id=grant.mailbox.structure_id,
        request=request,
    )
    transaction.on_commit(absence_watch_reset)
    return True
