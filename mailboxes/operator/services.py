"""Writes of the operator's console: retry a message's queued deliveries now, or abandon them
with a bounce (RFC 3464 DSN) to the sender; both traced in the transaction that changes the
rows. A row a relay worker holds (``sending``) is left alone: the worker records its outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from accounts.audit import Action, TargetType, audit_record
from mailboxes.models import OutboundDelivery, OutboundMessage
from mailboxes.transport import dsn
from mailboxes.transport.relay import Recipient, message_enqueue, message_spool
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User

Status = OutboundDelivery.Status
# RFC 3463 §3.1 X.0.0 (other or undefined status): no code says "cancelled by the operator".
ABANDON_STATUS = "5.0.0"
ABANDON_REPLY = "Abandoned by the operator"


class NothingQueued(PortalError):
    user_message = (
        "Aucun destinataire de ce message n'est en attente : rien à relancer ni à abandonner "
        "(un envoi en cours se termine de lui-même)."
    )
    code = "operator.nothing_queued"
    http_status = 409


def _target_id(message: OutboundMessage) -> str:
    return message.message_id[:128] or str(message.public_id)


def _structure_id(message: OutboundMessage) -> int | None:
    return message.mailbox.structure_id if message.mailbox_id else None  # type: ignore[union-attr]


@transaction.atomic
def delivery_retry_now(
    *, message: OutboundMessage, actor: User, request: HttpRequest | None = None
) -> int:
    """Make every queued delivery of ``message`` due now and enqueue a relay task after
    commit; attempts and the message's lifetime are unchanged. Returns how many rows. Traced
    (``operator.delivery_retried``). Raises NothingQueued when no row waits."""
    rows = list(
        OutboundDelivery.objects.select_for_update()
        .filter(message=message, status=Status.QUEUED)
        .order_by("pk")
    )
    if not rows:
        raise NothingQueued()
    now = timezone.now()
    OutboundDelivery.objects.filter(pk__in=[r.pk for r in rows]).update(
        next_attempt_at=now, updated_at=now
    )
    audit_record(
        action=Action.DELIVERY_RETRIED,
        actor=actor,
        target_type=TargetType.MESSAGE,
        target_id=_target_id(message),
        structure_id=_structure_id(message),
        request=request,
        details={"recipients": len(rows), "domains": sorted({r.domain for r in rows})},
    )
    transaction.on_commit(lambda: message_enqueue(message))
    return len(rows)


def _wants_failure_report(notify: str) -> bool:
    """RFC 3461 §4.1: NOTIFY=NEVER asks for nothing; without NOTIFY, failures are reported."""
    return not notify or "FAILURE" in notify.upper().split(",")


@transaction.atomic
def delivery_abandon(
    *, message: OutboundMessage, actor: User, request: HttpRequest | None = None
) -> int:
    """Give up the queued deliveries of ``message``: they become failures (5.0.0, « abandoned by
    the operator », with their last reply), a bounce goes to the sender through the DSN path
    (mailboxes.transport.dsn, spooled like the relay's own bounces: none for the null sender
    nor for NOTIFY=NEVER), and the spool copy is cleared once no row is pending. Returns how
    many rows. Traced (``operator.delivery_abandoned``). Raises NothingQueued."""
    message = OutboundMessage.objects.select_for_update().get(pk=message.pk)
    rows = list(
        OutboundDelivery.objects.select_for_update()
        .filter(message=message, status=Status.QUEUED)
        .order_by("pk")
    )
    if not rows:
        raise NothingQueued()
    now = timezone.now()
    for row in rows:
        last = row.last_reply
        row.status = Status.FAILED
        row.last_reply = f"{ABANDON_REPLY}; last reply: {last}"[:500] if last else ABANDON_REPLY
        row.updated_at = now
    OutboundDelivery.objects.bulk_update(rows, ["status", "last_reply", "updated_at"])
    reported = [r for r in rows if _wants_failure_report(r.notify)]
    bounce = None
    if reported and message.envelope_from and bytes(message.content):
        report = dsn.Report(
            to=message.envelope_from,
            original=bytes(message.content),
            envid=message.envid,
            ret=message.ret,
            arrival=message.created_at,
            recipients=[
                dsn.ReportRecipient(
                    final_recipient=row.recipient,
                    action="failed",
                    status=ABANDON_STATUS,
                    diagnostic=row.last_reply,
                    original_recipient=row.orcpt,
                    remote_mta=row.remote_mta,
                )
                for row in reported
            ],
        )
        bounce = message_spool(
            origin=OutboundMessage.Origin.REPORT,
            envelope_from="",  # RFC 5321 §4.5.5: reports go from the null sender
            recipients=[Recipient(message.envelope_from)],
            content=dsn.build(report),
        )
    if not message.deliveries.exclude(status__in=OutboundDelivery.FINAL).exists():
        OutboundMessage.objects.filter(pk=message.pk).update(content=b"")
    audit_record(
        action=Action.DELIVERY_ABANDONED,
        actor=actor,
        target_type=TargetType.MESSAGE,
        target_id=_target_id(message),
        structure_id=_structure_id(message),
        request=request,
        details={
            "recipients": len(rows),
            "domains": sorted({r.domain for r in rows}),
            "bounce": str(bounce.public_id) if bounce else "",
        },
    )
    return len(rows)
