"""The outbound spool and the relay (ARCHITECTURE.md, data flow 2; mssante-spec §1.4, §3.5).

``message_spool`` writes a message and one ``OutboundDelivery`` per recipient in one
transaction and, after commit, enqueues a relay task unless one is already waiting (the
kick flag: that task will take this message too). ``message_relay`` (the Celery task's only
call) claims the due rows of one message atomically, in one statement, with those of other
due messages when asked (a backlog drains in batches, each task enqueuing the next), delivers
them (LMTP for the BALs we host, SMTP over mutual TLS for the others, one transaction per
message and peer: the domains a peer serves share it, each domain's whitelist entry checked
on its certificate) and records each outcome: delivered/relayed, retry with exponential
backoff, or failure with a DSN (RFC 3464) spooled back to the sender in the same
transaction. ``relay_sweep`` re-queues what a lost task or a killed worker left behind. The
row is the truth; a task may run twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Min, Q
from django.utils import timezone

from accounts.audit import Action, TargetType, audit_event, audit_record_many
from accounts.models import StructureDomain, User
from annuaire.selectors import whitelist_dn_keys
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store import lmtp
from mailboxes.store.imap import inboxes_holding
from mailboxes.transport import dsn, quota, smtp
from mailboxes.transport.absence import absence_arrived
from mailboxes.transport.delivery_reports import is_report, report_apply
from mailboxes.transport.notices import mail_arrived

logger = logging.getLogger(__name__)
Status = OutboundDelivery.Status
RELAY_TASK = "mailboxes.tasks.relay_message"
T = TypeVar("T")
R = TypeVar("R")
Envelope = smtp.Envelope


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


# The kick flag: one relay task waits in the queue for new messages, not one per message. A
# spool enqueues a task only when it sets this flag; the task clears it before it claims, so
# whatever was committed before the flag was seen set is claimed by that task (with up to
# BATCH_MESSAGES others), and a task that claimed something enqueues the next one before it
# sends, so that a backlog drains in parallel batches. The flag is no state to keep: lost
# (cache flushed), tasks are only more; stale (its task lost with Redis), it lapses after
# KICK_SECONDS and the sweep re-queues what was overdue meanwhile.
KICK_SECONDS = 30


def _kick_key() -> str:
    # Named after the database: two portals that share a cache never skip each other's task.
    return f"relay:task-waiting:{connection.settings_dict['NAME']}"


def _kick(message: OutboundMessage) -> None:
    if cache.add(_kick_key(), 1, KICK_SECONDS):
        _enqueue(message)


def message_enqueue(message: OutboundMessage) -> None:
    """A relay task for ``message`` now (the operator's « Relancer maintenant », after its
    rows were made due): the task claims what is due, so an extra one is harmless."""
    _enqueue(message)


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
    transaction.on_commit(lambda: _kick(message))
    return message


# A task also takes other due rows, so that a backlog drains in batches: one claim, the messages
# read together, each peer's sessions shared by the batch, outcomes recorded in a few statements.
BATCH_MESSAGES = 200  # messages in one batch at most (a batch of one-recipient messages)
# Due rows looked at for other messages (their messages are taken whole): enough for a full
# batch of messages to 50 recipients. At 1,000, such a batch held 20 messages, and its fixed
# statements (claim, whitelist, outcomes, traces) were paid per 20: 445 -> 816 msg/s
# (bench/relay_vs_postfix.py, 1,000 messages to 50 recipients).
BATCH_ROWS = BATCH_MESSAGES * 50
BATCH_BYTES = 32 * 1024 * 1024  # content a batch holds in memory, its first message apart
SESSIONS_PER_PEER = 8  # parallel sessions to one peer within a batch (Postfix: up to 20)
# Replies after which a local delivery may or may not have been stored: the next attempt
# searches the INBOX first (_deliver_local).
STORE_LOST = "Mail store"  # a local attempt whose LMTP session broke
INTERRUPTED = "Attempt interrupted (relay worker stopped), resumed"  # set by relay_sweep
UNCERTAIN_REPLIES = (STORE_LOST, INTERRUPTED)


@dataclass(frozen=True)
class Claimed:
    """A delivery row this worker holds (status ``sending`` under its claim token)."""

    token: uuid.UUID
    pk: int
    message_id: int
    recipient: str
    domain: str
    local: bool
    notify: str
    orcpt: str
    attempts: int
    last_reply: str = ""


Outcomes = dict[tuple[int, str], smtp.Result]  # (message pk, recipient) -> outcome
_CLAIMED_FIELDS = ("pk", "message_id", "recipient", "domain", "local", "notify", "orcpt",
                   "attempts", "last_reply")  # fmt: skip

# The claim in one statement (PostgreSQL): the message asked for, then whole messages among
# the ``also_due`` rows due first, up to BATCH_MESSAGES and BATCH_BYTES; their due rows are
# locked with SKIP LOCKED and marked ``sending`` under the token, and returned.
_CLAIM_SQL = """
WITH target AS (
    SELECT id FROM mailboxes_outboundmessage WHERE public_id = %(public_id)s
), due AS (
    SELECT message_id, next_attempt_at FROM mailboxes_outbounddelivery
    WHERE status = 'queued' AND next_attempt_at <= %(now)s
    ORDER BY next_attempt_at LIMIT %(also_due)s
), others AS (
    SELECT m.id, m.size, min(due.next_attempt_at) AS first
    FROM due JOIN mailboxes_outboundmessage m ON m.id = due.message_id
    WHERE m.id NOT IN (SELECT id FROM target)
    GROUP BY m.id, m.size
), ranked AS (
    SELECT id, sum(size) OVER (ORDER BY first, id) AS held,
           row_number() OVER (ORDER BY first, id) AS n
    FROM others
), picked AS (
    SELECT id FROM target
    UNION ALL
    SELECT id FROM ranked WHERE n < %(messages)s AND held <= %(bytes)s
)
UPDATE mailboxes_outbounddelivery AS d
SET status = 'sending', claim_token = %(token)s, claimed_until = %(until)s
WHERE d.id IN (
    SELECT id FROM mailboxes_outbounddelivery
    WHERE message_id IN (SELECT id FROM picked) AND status = 'queued'
      AND next_attempt_at <= %(now)s
    FOR UPDATE SKIP LOCKED
)
RETURNING d.id, d.message_id, d.recipient, d.domain, d.local, d.notify, d.orcpt, d.attempts,
          d.last_reply
"""


def _claim(public_id: str, also_due: int) -> list[Claimed]:
    """Take the due rows of the message ``public_id`` and, when ``also_due``, those of other
    messages with due rows (among the ``also_due`` due first, whole messages, BATCH_MESSAGES
    and BATCH_BYTES at most): a conditional UPDATE with a token, rows locked with SKIP LOCKED
    on PostgreSQL, so that two workers never send the same row (STYLE.md: atomic claim)."""
    token = uuid.uuid4()
    now = timezone.now()
    until = now + timedelta(seconds=settings.RELAY_CLAIM_SECONDS)
    if connection.vendor != "postgresql":
        return _claim_orm(public_id, also_due, token, now, until)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"public_id": public_id, "now": now, "also_due": also_due,
                                    "messages": BATCH_MESSAGES, "bytes": BATCH_BYTES,
                                    "token": token, "until": until})  # fmt: skip
        rows = cursor.fetchall()
    return sorted((Claimed(token, *values) for values in rows), key=lambda r: r.pk)


def _claim_orm(
    public_id: str, also_due: int, token: uuid.UUID, now: datetime, until: datetime
) -> list[Claimed]:
    """``_claim`` for the embedded SQLite database (one writer at a time: no row locks)."""
    pk = OutboundMessage.objects.filter(public_id=public_id).values_list("pk", flat=True).first()
    due = OutboundDelivery.objects.select_for_update(skip_locked=True).filter(
        status=Status.QUEUED, next_attempt_at__lte=now
    )
    with transaction.atomic():
        ids = [] if pk is None else [pk]
        if also_due:
            for other in due.order_by("next_attempt_at").values_list("message_id", flat=True)[
                :also_due
            ]:
                if len(ids) >= BATCH_MESSAGES:
                    break
                if other not in ids:
                    ids.append(other)
        if not ids:
            return []
        locked = due.filter(message_id__in=ids).values("pk")  # FOR UPDATE SKIP LOCKED
        OutboundDelivery.objects.filter(pk__in=locked, status=Status.QUEUED).update(
            status=Status.SENDING, claim_token=token, claimed_until=until
        )
    return [
        Claimed(token, *values)
        for values in OutboundDelivery.objects.filter(message_id__in=ids, claim_token=token)
        .order_by("pk")
        .values_list(*_CLAIMED_FIELDS)
    ]


def _deliver_local(
    message: OutboundMessage, rows: list[Claimed], content: bytes
) -> dict[str, smtp.Result]:
    statuses = dict(
        Mailbox.objects.filter(
            address__in=[r.recipient for r in rows],
            status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED],
        ).values_list("address", "status")
    )
    # A suspended BAL takes no new mail (temporary: delivered if reactivated in time).
    results = {
        r.recipient: smtp.Result(
            "temporary", "4.2.1", "Mailbox temporarily suspended", settings.RELAY_HOSTNAME
        )
        for r in rows
        if statuses.get(r.recipient) == Mailbox.Status.SUSPENDED
    }
    rows = [r for r in rows if r.recipient not in results]
    # A BAL at or over its quota takes no new mail either (RFC 3463 X.2.2, temporary).
    for address in quota.full_addresses([r.recipient for r in rows]):
        results[address] = smtp.Result(
            "temporary", "4.2.2", quota.FULL_RESULT, settings.RELAY_HOSTNAME
        )
    rows = [r for r in rows if r.recipient not in results]
    # An attempt cut short (worker killed, store lost mid-delivery) may have stored the
    # message: those BALs are searched first, so a resumed attempt never stores it twice. The
    # gateway's rule (issue 15): this very text from this sender, found by the Message-ID of
    # its header; a message without one, or a namesake in the INBOX, is delivered.
    uncertain = {r.recipient for r in rows if r.last_reply.startswith(UNCERTAIN_REPLIES)}
    if uncertain:
        held = inboxes_holding(uncertain, sender=message.envelope_from, content=content)
        for address in held:
            results[address] = smtp.Result(
                "delivered", "2.0.0", "Already in the mailbox", settings.RELAY_HOSTNAME
            )
        rows = [r for r in rows if r.recipient not in results]
    if not rows:
        return results
    try:
        outcomes = lmtp.deliver(message.envelope_from, [r.recipient for r in rows], content)
    except lmtp.StoreUnreachable as exc:
        return results | {
            r.recipient: smtp.Result("temporary", "4.3.0", f"{STORE_LOST}: {exc}") for r in rows
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
        results[row.recipient] = smtp.Result(kind, status, outcome.reply(), settings.RELAY_HOSTNAME)
    arrived = [a for a, r in results.items() if r.kind == "delivered"]
    mail_arrived(arrived)
    # Absence messages between two of our BALs, as for mail from outside (RFC 3834).
    absence_arrived(arrived, message.envelope_from, content)
    if any(r.kind == "delivered" for r in results.values()) and is_report(content):
        # A DSN or MDN between two of our BALs updates statuses as one from outside would.
        report_apply(content)
    return results


_EXECUTOR: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """Threads for the peers of a batch (created in the worker process, after fork)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="relay")
    return _EXECUTOR


def _in_threads(function: Callable[[T], R], items: list[T]) -> list[R]:
    if len(items) == 1:  # no hop to another thread (its own pool of sessions)
        return [function(items[0])]
    return list(_executor().map(function, items))


def _deliver_remote(
    messages: dict[int, OutboundMessage], rows: list[Claimed], deadline: float | None = None
) -> Outcomes:
    """One SMTP transaction per message and peer: the domains routed to the same peers share
    it (each domain's whitelist entry checked on the session's certificate), the peers in
    parallel threads, several sessions per peer for a batch. The whitelist is read here,
    before, in this thread; the threads never touch the database."""
    allowed = whitelist_dn_keys(sorted({r.domain for r in rows}))
    domains = list(allowed)
    routes = _in_threads(lambda d: smtp.route(d, allowed[d]), domains)
    plans = dict(zip(domains, routes, strict=True))
    results: Outcomes = {}
    by_route: dict[smtp.Route, dict[str, frozenset[str]]] = defaultdict(dict)
    for row in rows:
        plan = plans[row.domain]
        if isinstance(plan, smtp.Result):  # nobody to try: outside the trust space, no MX
            results[(row.message_id, row.recipient)] = plan
        else:
            by_route[plan][row.domain] = allowed[row.domain]
    by_message: dict[int, list[Claimed]] = defaultdict(list)
    for row in rows:
        by_message[row.message_id].append(row)
    work: list[tuple[smtp.Route, dict[str, frozenset[str]], list[tuple[int, Envelope]]]] = []
    for peers, served in by_route.items():
        envelopes: list[tuple[int, Envelope]] = []
        for pk, message in messages.items():
            rcpts = [
                smtp.Rcpt(r.recipient, r.notify, r.orcpt)
                for r in by_message.get(pk, ())
                if r.domain in served
            ]
            if rcpts:
                envelopes.append(
                    (
                        pk,
                        Envelope(
                            message.envelope_from,
                            rcpts,
                            bytes(message.content),
                            message.ret,
                            message.envid,
                        ),
                    )
                )
        sessions = min(SESSIONS_PER_PEER, len(envelopes))
        work += [(peers, served, envelopes[i::sessions]) for i in range(sessions)]

    def one(item: tuple[smtp.Route, dict[str, frozenset[str]], list[tuple[int, Envelope]]]):
        peers, served, envelopes = item
        outcomes = smtp.deliver(peers, served, [e for _, e in envelopes], deadline=deadline)
        return [(pk, o) for (pk, _), o in zip(envelopes, outcomes, strict=True)]

    if work:
        for batch in _in_threads(one, work):
            for pk, outcome in batch:
                results.update(((pk, address), r) for address, r in outcome.items())
    return results


def backoff(attempts: int) -> timedelta:
    """Exponential backoff: base * 2^(attempts-1), capped."""
    seconds = settings.RELAY_RETRY_BASE_SECONDS * 2 ** max(0, min(attempts - 1, 20))
    return timedelta(seconds=min(seconds, settings.RELAY_RETRY_MAX_SECONDS))


def _wants(row: Claimed, what: str) -> bool:
    """RFC 3461 §4.1: NOTIFY=NEVER asks for nothing; without NOTIFY, failures are reported."""
    notify = row.notify.upper()
    if not notify:
        return what == "FAILURE"
    return what in notify.split(",")


def _report(message: OutboundMessage, rows: list[tuple[Claimed, smtp.Result, str]]) -> None:
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
def _record(messages: dict[int, OutboundMessage], rows: list[Claimed], results: Outcomes) -> None:
    """Store every outcome of a batch: one UPDATE per distinct outcome (all the rows a peer
    accepted, usually), one trace per message, domain and outcome, the DSNs asked for, then
    clear the content of messages that are done or schedule their next attempt."""
    now = timezone.now()
    reports: dict[int, tuple[list, list]] = defaultdict(lambda: ([], []))  # failures, successes
    traced: dict[tuple[int, str, str, str], list] = {}
    groups: dict[tuple[int, str, str, str, datetime | None, datetime | None], list[int]] = {}
    for row in rows:
        message = messages[row.message_id]
        result = results.get((row.message_id, row.recipient)) or smtp.Result(
            "temporary", "4.4.1", "No outcome recorded"
        )
        attempts = row.attempts + 1
        status: str
        delivered_at: datetime | None = None
        next_attempt_at: datetime | None = None
        if result.kind in ("delivered", "relayed"):
            status = Status.DELIVERED if result.kind == "delivered" else Status.RELAYED
            delivered_at = now
            # A local delivery is final: we report it ourselves when asked (RFC 3461 §6.2.2);
            # a relayed one is reported by the next operator.
            if result.kind == "delivered" and _wants(row, "SUCCESS"):
                reports[row.message_id][1].append((row, result, "delivered"))
        elif result.reply == smtp.NOT_ATTEMPTED and now < message.expires_at:
            # Left by a batch out of time (_send_deadline): no attempt made, due again now.
            status, attempts, next_attempt_at = Status.QUEUED, row.attempts, now
        elif result.kind == "temporary" and now < message.expires_at:
            status = Status.QUEUED
            next_attempt_at = now + backoff(attempts)
        else:
            if result.kind == "temporary":  # lifetime over: RFC 3463 4.4.7 becomes final
                result = smtp.Result(
                    "permanent",
                    "4.4.7",
                    f"Delivery time expired; last error: {result.reply}"[:500],
                    result.remote_mta,
                )
            status = Status.FAILED
            if _wants(row, "FAILURE"):
                reports[row.message_id][0].append((row, result, "failed"))
        key = (attempts, result.reply[:500], result.remote_mta[:255], status, delivered_at,
               next_attempt_at)  # fmt: skip
        groups.setdefault(key, []).append(row.pk)
        outcome = (
            row.message_id,
            row.domain,
            status,
            "" if status != Status.FAILED else result.status,
        )
        traced.setdefault(outcome, [0, result.reply[:200], attempts])[0] += 1
    # Rows with the same outcome in one UPDATE; the most common outcome (every recipient a peer
    # accepted, over the whole batch, usually) last, found by the claim token that the UPDATEs
    # before it cleared on the other rows (no list of 500 ids to send and parse).
    ordered = sorted(groups.items(), key=lambda item: len(item[1]))
    for index, ((tries, reply, mta, final, delivered, next_at), pks) in enumerate(ordered):
        changes = {"attempts": tries, "last_reply": reply, "remote_mta": mta, "status": final,
                   "claim_token": None, "claimed_until": None, "updated_at": now}  # fmt: skip
        if delivered is not None:
            changes["delivered_at"] = delivered
        if next_at is not None:
            changes["next_attempt_at"] = next_at
        if index == len(ordered) - 1:
            claimed = OutboundDelivery.objects.filter(
                message_id__in=messages, claim_token__in={row.token for row in rows}
            )
        else:
            claimed = OutboundDelivery.objects.filter(pk__in=pks)
        claimed.update(**changes)
    # One trace per message, domain and outcome (never the addresses), with how many recipients.
    audit_record_many(
        [
            audit_event(
                action=Action(f"relay.{status}"),
                actor_label="relais",
                target_type=TargetType.MESSAGE,
                target_id=messages[pk].message_id[:128] or str(messages[pk].public_id),
                structure_id=messages[pk].mailbox.structure_id if messages[pk].mailbox_id else None,  # type: ignore[union-attr]
                success=status != Status.FAILED,
                error_code=error_code,
                details={
                    "domain": domain,
                    "recipients": count,
                    "attempt": attempt,
                    "reply": reply,
                    "origin": messages[pk].origin,
                },
            )
            for (pk, domain, status, error_code), (count, reply, attempt) in traced.items()
        ]
    )
    for pk, (failures, successes) in reports.items():
        _report(messages[pk], failures)
        _report(messages[pk], successes)
    pending = dict(
        OutboundDelivery.objects.filter(message_id__in=messages)
        .exclude(status__in=OutboundDelivery.FINAL)
        .values("message_id")
        .annotate(at=Min("next_attempt_at", filter=Q(status=Status.QUEUED)))
        .values_list("message_id", "at")
    )
    # Every recipient has a final outcome: the spool copy is no longer needed.
    done = [pk for pk in messages if pk not in pending]
    if done:
        OutboundMessage.objects.filter(pk__in=done).update(content=b"")
    for pk, at in pending.items():
        if at is not None:
            delay = max(1.0, (at - now).total_seconds())
            transaction.on_commit(partial(_enqueue, messages[pk], countdown=delay))


# What the relay reads of a message: all of it but its BAL, of which only the structure (the
# traces'); a whole Mailbox per message was a fifth of the worker's CPU for a batch.
MESSAGE_FIELDS = tuple(f.name for f in OutboundMessage._meta.concrete_fields)


def _send_deadline() -> float:
    """When a batch starts no more SMTP transactions (time.monotonic()): half its claim time,
    so that a transaction begun before it ends before the sweep may take the rows back
    (RELAY_CLAIM_SECONDS); what is left goes back to the queue for the next task."""
    return time.monotonic() + settings.RELAY_CLAIM_SECONDS / 2


def message_relay(*, public_id: str, also_due: int = 0) -> int:
    """Deliver what is due for the spooled message ``public_id`` and, when ``also_due``, for
    other messages with due rows (see ``_claim``): the Celery task passes ``BATCH_ROWS`` so that
    a backlog drains in batches. Returns how many rows were handled. Safe to run twice and
    concurrently: rows are claimed before anything is sent. Raises what recording raised
    (the rows it could not record stay claimed until the sweep)."""
    if also_due:
        cache.delete(_kick_key())  # from now on, a new message enqueues a new task
    rows = _claim(public_id, also_due)
    if not rows:
        return 0
    deadline = _send_deadline()
    if also_due:
        # What is left of a backlog goes to the next task, in another worker process (when
        # nothing is left, it claims nothing and ends the chain).
        _kick(OutboundMessage(public_id=public_id))
    messages = (
        OutboundMessage.objects.select_related("mailbox")
        .only(*MESSAGE_FIELDS, "mailbox__structure")  # of the BAL, only its structure
        .in_bulk({r.message_id for r in rows})
    )
    rows = [r for r in rows if r.message_id in messages]  # a message deleted meanwhile
    results: Outcomes = {}
    local: dict[int, list[Claimed]] = defaultdict(list)
    for row in rows:
        if row.local:
            local[row.message_id].append(row)
    for pk, mine in local.items():
        outcomes = _deliver_local(messages[pk], mine, bytes(messages[pk].content))
        results.update(((pk, address), r) for address, r in outcomes.items())
    remote = [r for r in rows if not r.local]
    if remote:
        results.update(_deliver_remote(messages, remote, deadline))
    try:
        _record(messages, rows, results)
    except Exception:
        if len(messages) == 1:
            raise
        # One message whose outcome cannot be stored must not leave the others of the batch
        # claimed (the sweep would send them again): each in its own transaction, then raise.
        logger.exception("relay: recording a batch failed; recording message by message")
        failed = None
        for pk, message in messages.items():
            try:
                _record({pk: message}, [r for r in rows if r.message_id == pk], results)
            except Exception as exc:  # raised below, after the others
                failed = exc
        if failed is not None:
            raise failed from None
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
        last_reply=INTERRUPTED,  # a local delivery may have happened: _deliver_local checks
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
