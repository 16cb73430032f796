"""Per-BAL monthly usage (the ANS usage indicators): messages received and sent, distinct
correspondents, partner domains and structures. Rebuilt from what already records every
exchange, so it can always be recomputed and adds nothing to the delivery path:

- from other operators: the gateway's ``gateway.received`` traces (envelope sender, accepted
  recipients), written in the transaction that answers the SMTP DATA;
- from the webmail: the outbound spool rows (``OutboundMessage`` origin webmail and its
  ``OutboundDelivery`` rows), kept after delivery with their content cleared;
- between two BALs we host: the local deliveries of those spool rows, which never cross the
  gateway and are counted as received by the recipient BAL.

Only addresses and counts are read and stored, never a subject or a body.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import groupby
from operator import itemgetter

from django.db import transaction
from django.utils import timezone

from accounts.models import AuditEvent, StructureDomain
from annuaire.selectors import directory_domain_structures, directory_structure_names
from mailboxes.models import Mailbox, MailboxMonthlyUsage, OutboundDelivery, OutboundMessage

TOP = 20  # partner domains / structures kept per BAL and month
_CHUNK = 500  # values per IN (...): SQLite's default limit on query parameters is low


@dataclass
class _Tally:
    received: int = 0
    sent: int = 0
    # Messages per set of partner addresses: one message counts once per partner domain and
    # per partner structure, even when it has several recipients there.
    exchanges: Counter[tuple[str, ...]] = field(default_factory=Counter)


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_after(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def _bounds(month: date) -> tuple[datetime, datetime]:
    """Start and end of ``month`` in local time (Europe/Paris), as aware datetimes."""
    tz = timezone.get_current_timezone()
    start = timezone.make_aware(datetime.combine(month, time.min), tz)
    end = timezone.make_aware(datetime.combine(month_after(month), time.min), tz)
    return start, end


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    items = sorted(values)
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def _partners(addresses: Iterable[str], own: str) -> tuple[str, ...]:
    # A BAL writing to itself has no correspondent in that; "" is the null sender (a report).
    return tuple(sorted({a for a in addresses if a and a != own}))


def _inbound(start: datetime, end: datetime) -> Iterator[tuple[str, str]]:
    """(recipient, sender) of every message accepted from another operator, streamed."""
    traces = AuditEvent.objects.filter(
        action="gateway.received",
        result=AuditEvent.Result.SUCCESS,
        occurred_at__gte=start,
        occurred_at__lt=end,
    ).values_list("details", flat=True)
    for details in traces.iterator(chunk_size=2000):
        # JSON read in Python, not with database JSON lookups (SQLite, embedded mode).
        recipients = details.get("to") if isinstance(details, dict) else None
        if not isinstance(recipients, list):
            continue
        sender = str(details.get("from") or "").strip().lower()  # "" = null sender (a report)
        for recipient in {str(r).strip().lower() for r in recipients}:
            yield recipient, sender


@dataclass
class _Sent:
    mailbox_id: int
    sender: str
    recipients: list[str]
    local_delivered: list[str]  # recipients we host that have it in their BAL


def _outbound(start: datetime, end: datetime) -> Iterator[_Sent]:
    """Messages written in the webmail during the month, streamed one at a time. Gateway retries
    are left out (their gateway trace already counts them), and so are the operator's reports."""
    rows = (
        OutboundDelivery.objects.filter(
            message__origin=OutboundMessage.Origin.WEBMAIL,
            message__mailbox__isnull=False,
            message__created_at__gte=start,
            message__created_at__lt=end,
        )
        .order_by("message_id")
        .values_list(
            "message_id",
            "message__mailbox_id",
            "message__envelope_from",
            "message__mailbox__address",
            "recipient",
            "local",
            "status",
        )
    )
    for _message_id, deliveries in groupby(rows.iterator(chunk_size=2000), key=itemgetter(0)):
        sent: _Sent | None = None
        for _id, mailbox_id, envelope_from, address, recipient, local, status in deliveries:
            if sent is None:
                sender = (envelope_from or address).strip().lower()
                sent = _Sent(
                    mailbox_id=mailbox_id, sender=sender, recipients=[], local_delivered=[]
                )
            sent.recipients.append(recipient.strip().lower())
            if local and status == OutboundDelivery.Status.DELIVERED:
                sent.local_delivered.append(recipient.strip().lower())
        if sent is not None:
            yield sent


def _tally(month: date) -> dict[int, _Tally]:
    start, end = _bounds(month)
    # Every BAL we host, by address: far fewer than a month's messages, and one query.
    boxes = {a.lower(): pk for pk, a in Mailbox.objects.values_list("pk", "address")}
    addresses = {pk: a for a, pk in boxes.items()}
    tallies: dict[int, _Tally] = defaultdict(_Tally)
    for recipient, sender in _inbound(start, end):
        pk = boxes.get(recipient)
        if pk is None:
            continue  # a recipient we do not host (any more)
        tallies[pk].received += 1
        tallies[pk].exchanges[_partners([sender], recipient)] += 1
    for message in _outbound(start, end):
        tally = tallies[message.mailbox_id]
        tally.sent += 1
        tally.exchanges[_partners(message.recipients, addresses[message.mailbox_id])] += 1
        for recipient in set(message.local_delivered):
            pk = boxes.get(recipient)
            if pk is not None:
                tallies[pk].received += 1
                tallies[pk].exchanges[_partners([message.sender], recipient)] += 1
    return tallies


def _structures_of(addresses: Iterable[str]) -> dict[str, str]:
    """The partner structure of each address that has one, in a few queries whatever their
    number: our own domains name their structure; other addresses are looked up in the national
    directory; an address it does not list takes the structure most of its domain's entries
    belong to (a shared domain such as an Ordre's, where no structure dominates, gives none)."""
    addresses = {a for a in addresses if a}
    domains = {_domain(a) for a in addresses}
    ours: dict[str, str] = {}
    for chunk in _chunks(domains):
        ours.update(
            StructureDomain.objects.filter(domain__in=chunk).values_list(
                "domain", "structure__name"
            )
        )
    result = {a: ours[_domain(a)] for a in addresses if _domain(a) in ours}

    others = addresses - result.keys()
    listed: dict[str, str] = {}
    for chunk in _chunks(others):
        listed.update(directory_structure_names(chunk))
    result.update({a: name.strip() for a, name in listed.items() if name.strip()})

    unknown = others - listed.keys()
    by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    for chunk in _chunks({_domain(a) for a in unknown}):
        for domain, name, n in directory_domain_structures(chunk):
            by_domain[domain][name.strip()] += n
    dominant = {}
    for domain, names in by_domain.items():
        # Most common first, ties by name so that a rebuild gives the same answer.
        name, n = min(names.items(), key=lambda item: (-item[1], item[0]))
        if name and n * 2 > sum(names.values()):
            dominant[domain] = name
    result.update({a: dominant[_domain(a)] for a in unknown if _domain(a) in dominant})
    return result


def _top(counts: Counter[str]) -> dict[str, int]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:TOP])


def _rows(
    month: date, tallies: dict[int, _Tally], structures: dict[str, str]
) -> list[MailboxMonthlyUsage]:
    rows = []
    for mailbox_id, tally in sorted(tallies.items()):
        correspondents: set[str] = set()
        domains: Counter[str] = Counter()
        partners: Counter[str] = Counter()
        for addresses, n in tally.exchanges.items():
            correspondents.update(addresses)
            for domain in {_domain(a) for a in addresses}:
                domains[domain] += n
            for name in {structures[a] for a in addresses if a in structures}:
                partners[name] += n
        rows.append(
            MailboxMonthlyUsage(
                mailbox_id=mailbox_id,
                month=month,
                received=tally.received,
                sent=tally.sent,
                correspondents=len(correspondents),
                domains=_top(domains),
                structures=_top(partners),
            )
        )
    return rows


@transaction.atomic
def usage_compute(*, month: date | None = None) -> int:
    """Rebuild the monthly usage rows of ``month`` (any day of it; default: the current month
    and the previous one, in local time, so that the last hours of a month are counted once it
    is over). A BAL with no message that month gets no row (readers show zeros).

    Replaces the month's rows in one transaction: safe to run twice, and concurrent readers see
    the old rows or the new ones. Returns the number of rows written. Raises nothing of its own.
    """
    if month is not None:
        months = [month_start(month)]
    else:
        current = month_start(timezone.localdate())
        months = [current, month_start(current - timedelta(days=1))]
    written = 0
    for current in months:
        tallies = _tally(current)
        addresses = {a for t in tallies.values() for group in t.exchanges for a in group}
        rows = _rows(current, tallies, _structures_of(addresses))
        MailboxMonthlyUsage.objects.filter(month=current).delete()
        MailboxMonthlyUsage.objects.bulk_create(rows, batch_size=500)
        written += len(rows)
    return written
