"""The outbound spool and the relay (ARCHITECTURE.md, data flow 2; mssante-spec §1.4, §3.5).

``message_spool`` writes a message and one ``OutboundDelivery`` per recipient in one
transaction and enqueues the relay task after commit. ``message_relay`` (the Celery task's
only call) claims the due rows of one message atomically, delivers them (LMTP for the BALs we
host, SMTP over mutual TLS for the others, one transaction per destination domain) and
records each outcome: delivered/relayed, retry with exponential backoff, or failure with a
DSN (RFC 3464) spooled back to the sender in the same transaction. ``relay_sweep`` re-queues
what a lost task or a killed worker left behind. The row is the truth; a task may run twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import StructureDomain, User
from annuaire.selectors import whitelist_dn_keys
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.relay import dsn, transport
from mailboxes.services.notices import mail_arrived
from mailboxes.services.reports import is_report, report_apply
from mailboxes.store import lmtp

logger = logging.getLogger(__name__)
Status = OutboundDelivery.Status
RELAY_TASK = "mailboxes.tasks.relay_message"


@dataclass(frozen=True)
class Recipient:
    address: str
    notify: str = ""  # RFC 3461 NOTIFY (e.g. "SUCCESS,FAILURE"; "" = our default)
    orcpt: str = ""


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _enqueue(message: OutboundMessage, countdown: float = 0) -> None:
    current_app.send_task(
        RELAY_TASK, args=[str(message.public_id)], queue="relay", countdown=countdown or None
    )


@transaction.atomic
def message_spool(
    *,
    origin: str,
    envelope_from: str,
    recipients: list[Recipient],
    content: bytes,
    message_id: str = "",
    mailbox: Mailbox | None = None,
    author: User | None = None,
    ret: str = "",
    envid: str = "",
) -> OutboundMessage:
    """Accept ``content`` for delivery to ``recipients``: durable when this returns (the
    caller's transaction, or ours, commits the message with its rows); the relay task is
    enqueued after commit. Recipients in a domain we host are delivered over LMTP."""
    now = timezone.now()
    message = OutboundMessage.objects.create(
        origin=origin,
        mailbox=mailbox,
        author=author,
        envelope_from=envelope_from,
        message_id=message_id[:255],
        content=content,
        size=len(content),
        ret=ret,
        envid=envid[:100],
        expires_at=now + timedelta(hours=settings.RELAY_LIFETIME_HOURS),
    )
    domains = {_domain(r.address) for r in recipients}
    hosted = set(
        StructureDomain.objects.filter(domain__in=domains).values_list("domain", flat=True)
    )
    OutboundDelivery.objects.bulk_create(
        OutboundDelivery(
            message=message,
            recipient=r.address.lower(),
            domain=_domain(r.address),
            local=_domain(r.address) in hosted,
            notify=r.notify,
            orcpt=r.orcpt[:400],
            next_attempt_at=now,
        )
        for r in {r.address.lower(): r for r in recipients}.values()
    )
    transaction.on_commit(lambda: _enqueue(message))
    return message


def _claim(message: OutboundMessage) -> list[OutboundDelivery]:
    """Take the due rows of ``message`` for this worker: a conditional UPDATE with a token, so
    that two workers never send the same row (STYLE.md: atomic claim)."""
    token = uuid.uuid4()
    now = timezone.now()
    with transaction.atomic():
        due = list(
            OutboundDelivery.objects.select_for_update(skip_locked=True)
            .filter(message=message, status=Status.QUEUED, next_attempt_at__lte=now)
            .values_list("pk", flat=True)
        )
        OutboundDelivery.objects.filter(pk__in=due, status=Status.QUEUED).update(
            status=Status.SENDING,
            claim_token=token,
            claimed_until=now + timedelta(seconds=settings.RELAY_CLAIM_SECONDS),
        )
    return list(OutboundDelivery.objects.filter(claim_token=token, status=Status.SENDING))


def _deliver_local(
    message: OutboundMessage, rows: list[OutboundDelivery], content: bytes
) -> dict[str, transport.Result]:
    statuses = dict(
        Mailbox.objects.filter(
            address__in=[r.recipient for r in rows],
            status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED],
        ).values_list("address", "status")
    )
    # A suspended BAL takes no new mail (temporary: delivered if reactivated in time).
    results = {
        r.recipient: transport.Result(
            "temporary", "4.2.1", "Mailbox temporarily suspended", settings.RELAY_HOSTNAME
        )
        for r in rows
        if statuses.get(r.recipient) == Mailbox.Status.SUSPENDED
    }
    rows = [r for r in rows if r.recipient not in results]
    if not rows:
        return results
    try:
        outcomes = lmtp.deliver(message.envelope_from, [r.recipient for r in rows], content)
    except lmtp.StoreUnreachable as exc:
        return results | {
            r.recipient: transport.Result("temporary", "4.3.0", f"Mail store: {exc}") for r in rows
        }
    # A BAL that exists here but that Dovecot refuses is not provisioned yet (or is being
    # restored): temporary, bounded by the message lifetime.
    known = set(statuses)
    for row in rows:
        outcome = outcomes[row.recipient]
        kind = "delivered" if outcome.delivered else "temporary"
        if outcome.permanent and row.recipient not in known:
            kind = "permanent"
        status = {"delivered": "2.0.0", "permanent": "5.1.1", "temporary": "4.3.0"}[kind]
        results[row.recipient] = transport.Result(
            kind, status, outcome.reply(), settings.RELAY_HOSTNAME
        )
    mail_arrived([a for a, r in results.items() if r.kind == "delivered"])
    if any(r.kind == "delivered" for r in results.values()) and is_report(content):
        # A DSN or MDN between two of our BALs updates statuses as one from outside would.
        report_apply(content)
    return results


_EXECUTOR: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """Threads for the domains of one message (created in the worker process, after fork)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="relay")
    return _EXECUTOR


def _deliver_remote(
    message: OutboundMessage, rows: list[OutboundDelivery], content: bytes
) -> dict[str, transport.Result]:
    """One SMTP transaction per destination domain, the domains in parallel (each thread
    keeps its own verified sessions); the whitelist is read here, before, in this thread."""
    by_domain: dict[str, list[OutboundDelivery]] = defaultdict(list)
    for row in rows:
        by_domain[row.domain].append(row)

    def one(domain: str, allowed: frozenset[str]) -> dict[str, transport.Result]:
        return transport.deliver(
            domain,
            allowed,
            mail_from=message.envelope_from,
            rcpts=[transport.Rcpt(r.recipient, r.notify, r.orcpt) for r in by_domain[domain]],
            content=content,
            ret=message.ret,
            envid=message.envid,
        )

    work = [(domain, whitelist_dn_keys(domain)) for domain in by_domain]
    if len(work) == 1:
        return one(*work[0])
    results: dict[str, transport.Result] = {}
    for outcome in _executor().map(lambda item: one(*item), work):
        results.update(outcome)
    return results


def backoff(attempts: int) -> timedelta:
    """Exponential backoff: base * 2^(attempts-1), capped."""
    seconds = settings.RELAY_RETRY_BASE_SECONDS * 2 ** max(0, min(attempts - 1, 20))
    return timedelta(seconds=min(seconds, settings.RELAY_RETRY_MAX_SECONDS))


def _wants(row: OutboundDelivery, what: str) -> bool:
    """RFC 3461 §4.1: NOTIFY=NEVER asks for nothing; without NOTIFY, failures are reported."""
    notify = row.notify.upper()
    if not notify:
        return what == "FAILURE"
    return what in notify.split(",")


def _report(
    message: OutboundMessage, rows: list[tuple[OutboundDelivery, transport.Result, str]]
) -> None:
    """Spool one DSN to the sender for ``rows`` (delivery, result, RFC 3464 action), unless
    the message had the null sender (never answer a report with a report, RFC 5321 §4.5.5)."""
    if not rows or not message.envelope_from:
        return
    report = dsn.Report(
        to=message.envelope_from,
        original=bytes(message.content),
        envid=message.envid,
        ret=message.ret,
        arrival=message.created_at,
        recipients=[
            dsn.ReportRecipient(
                final_recipient=row.recipient,
                action=action,
                status=result.status,
                diagnostic=f"smtp; {result.reply}" if result.reply[:1].isdigit() else result.reply,
                original_recipient=row.orcpt,
                remote_mta=result.remote_mta,
            )
            for row, result, action in rows
        ],
    )
    message_spool(
        origin=OutboundMessage.Origin.REPORT,
        envelope_from="",
        recipients=[Recipient(message.envelope_from)],
        content=dsn.build(report),
    )


@transaction.atomic
def _record(
    message: OutboundMessage, rows: list[OutboundDelivery], results: dict[str, transport.Result]
) -> None:
    now = timezone.now()
    failures: list[tuple[OutboundDelivery, transport.Result, str]] = []
    successes: list[tuple[OutboundDelivery, transport.Result, str]] = []
    traced: dict[tuple[str, str, str], list] = {}
    for row in rows:
        result = results.get(row.recipient) or transport.Result(
            "temporary", "4.4.1", "No outcome recorded"
        )
        row.attempts += 1
        row.last_reply = result.reply[:500]
        row.remote_mta = result.remote_mta[:255]
        row.claim_token = None
        row.claimed_until = None
        if result.kind in ("delivered", "relayed"):
            row.status = Status.DELIVERED if result.kind == "delivered" else Status.RELAYED
            row.delivered_at = now
            # A local delivery is final: we report it ourselves when asked (RFC 3461 §6.2.2);
            # a relayed one is reported by the next operator.
            if result.kind == "delivered" and _wants(row, "SUCCESS"):
                successes.append((row, result, "delivered"))
        elif result.kind == "temporary" and now < message.expires_at:
            row.status = Status.QUEUED
            row.next_attempt_at = now + backoff(row.attempts)
        else:
            if result.kind == "temporary":  # lifetime over: RFC 3463 4.4.7 becomes final
                result = transport.Result(
                    "permanent",
                    "4.4.7",
                    f"Delivery time expired; last error: {result.reply}"[:500],
                    result.remote_mta,
                )
                row.last_reply = result.reply[:500]
            row.status = Status.FAILED
            if _wants(row, "FAILURE"):
                failures.append((row, result, "failed"))
        outcome = (row.domain, row.status, "" if row.status != Status.FAILED else result.status)
        traced.setdefault(outcome, [0, result.reply[:200], row.attempts])[0] += 1
    # Rows with the same outcome (a domain's recipients, usually) in one UPDATE each.
    groups: dict[tuple[object, ...], list[int]] = {}
    for row in rows:
        key = (row.attempts, row.last_reply, row.remote_mta, row.status, row.delivered_at,
               row.next_attempt_at)  # fmt: skip
        groups.setdefault(key, []).append(row.pk)
    for (attempts, reply, mta, status, delivered_at, next_at), pks in groups.items():
        OutboundDelivery.objects.filter(pk__in=pks).update(
            attempts=attempts, last_reply=reply, remote_mta=mta, status=status,
            delivered_at=delivered_at, next_attempt_at=next_at, claim_token=None,
            claimed_until=None, updated_at=now,
        )  # fmt: skip
    # One trace per domain and outcome (never the addresses), with how many recipients.
    for (domain, status, error_code), (count, reply, attempt) in traced.items():
        audit_record(
            action=f"relay.{status}",
            actor_label="relais",
            target_type="message",
            target_id=message.message_id[:128] or str(message.public_id),
            structure_id=message.mailbox.structure_id if message.mailbox_id else None,  # type: ignore[union-attr]
            success=status != Status.FAILED,
            error_code=error_code,
            details={
                "domain": domain,
                "recipients": count,
                "attempt": attempt,
                "reply": reply,
                "origin": message.origin,
            },
        )
    _report(message, failures)
    _report(message, successes)
    if not message.deliveries.exclude(status__in=OutboundDelivery.FINAL).exists():
        # Every recipient has a final outcome: the spool copy is no longer needed.
        OutboundMessage.objects.filter(pk=message.pk).update(content=b"")
    else:
        due = message.deliveries.filter(status=Status.QUEUED).aggregate(at=Min("next_attempt_at"))
        if due["at"] is not None:
            delay = max(1.0, (due["at"] - now).total_seconds())
            transaction.on_commit(lambda: _enqueue(message, countdown=delay))


def message_relay(*, public_id: str) -> int:
    """Deliver what is due for one spooled message; returns how many rows were handled.
    Safe to run twice and concurrently: rows are claimed before anything is sent."""
    message = OutboundMessage.objects.filter(public_id=public_id).select_related("mailbox").first()
    if message is None:
        return 0
    rows = _claim(message)
    if not rows:
        return 0
    content = bytes(message.content)
    results = {}
    local = [r for r in rows if r.local]
    remote = [r for r in rows if not r.local]
    if local:
        results.update(_deliver_local(message, local, content))
    if remote:
        results.update(_deliver_remote(message, remote, content))
    _record(message, rows, results)
    return len(rows)


def relay_sweep(*, now: datetime | None = None, grace_seconds: int = 120) -> int:
    """Re-queue what was left behind: rows claimed by a worker that died (claim expired) go
    back to the queue, and messages with rows overdue by more than ``grace_seconds`` (their
    task was lost: Redis flushed, worker killed) get a new task. Returns messages re-queued."""
    now = now or timezone.now()
    stale = OutboundDelivery.objects.filter(status=Status.SENDING, claimed_until__lt=now)
    ids = set(stale.values_list("message_id", flat=True))
    stale.update(
        status=Status.QUEUED,
        claim_token=None,
        claimed_until=None,
        next_attempt_at=min(now, timezone.now()),
    )
    ids.update(
        OutboundDelivery.objects.filter(
            status=Status.QUEUED, next_attempt_at__lte=now - timedelta(seconds=grace_seconds)
        )
        .values_list("message_id", flat=True)
        .distinct()[:1000]
    )
    overdue = OutboundMessage.objects.filter(pk__in=ids).order_by("created_at")
    count = 0
    for message in overdue:
        _enqueue(message)
        count += 1
    if count:
        logger.warning("relay sweep re-queued %d messages", count)
    return count
