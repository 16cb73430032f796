"""Reads of the operator's console: the outbound queue, the gateway's sessions and refusals
(from the traces), the trust material in force, the directory imports, structures and their
BALs. Access is checked by the views' guard (mailboxes.operator.guard): everything here is
the operator's whole view, never a structure's."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.http import Http404
from django.utils import timezone

from accounts.audit import Action
from accounts.models import AuditEvent, Structure
from annuaire.selectors import (
    WhitelistDiff,
    directory_entries,
    directory_imports,
    whitelist_current,
    whitelist_diff,
    whitelist_entries,
    whitelist_previous,
    whitelist_sync_runs,
)
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.transport import crl
from mailboxes.transport.quota import Usage, usages

Status = OutboundDelivery.Status
PENDING = (Status.QUEUED, Status.SENDING)
RECENT = dt.timedelta(hours=24)  # final outcomes counted in the queue's table
CERT_WARNING_DAYS = 30


# --- The outbound queue -------------------------------------------------------------------


@dataclass
class DomainRow:
    domain: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.counts.get(Status.QUEUED, 0) + self.counts.get(Status.SENDING, 0)


def queue_by_domain(*, now: dt.datetime | None = None) -> list[DomainRow]:
    """Deliveries by peer domain and state: every row still pending, and the final outcomes of
    the last 24 hours; domains with the most pending first."""
    since = (now or timezone.now()) - RECENT
    rows = (
        OutboundDelivery.objects.filter(Q(status__in=PENDING) | Q(updated_at__gte=since))
        .values("domain", "status")
        .annotate(n=Count("pk"))
    )
    table: dict[str, DomainRow] = {}
    for row in rows:
        table.setdefault(row["domain"], DomainRow(row["domain"])).counts[row["status"]] = row["n"]
    return sorted(table.values(), key=lambda r: (-r.pending, r.domain))


def queue_totals() -> dict[str, int]:
    """Rows pending per state (queued, sending) over the whole queue."""
    counts = dict(
        OutboundDelivery.objects.filter(status__in=PENDING)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {str(status): counts.get(status, 0) for status in PENDING}


def oldest_due(limit: int = 20) -> list[OutboundDelivery]:
    """The queued deliveries due first (the oldest next attempt), with their message."""
    return list(
        OutboundDelivery.objects.filter(status=Status.QUEUED)
        .select_related("message")
        .order_by("next_attempt_at", "pk")[:limit]
    )


def message_search(text: str, limit: int = 50) -> list[OutboundMessage]:
    """Spooled messages whose Message-ID, envelope sender or a recipient contains ``text``
    (case-insensitive), newest first."""
    text = text.strip()
    if not text:
        return []
    matches = (
        OutboundMessage.objects.filter(
            Q(message_id__icontains=text)
            | Q(envelope_from__icontains=text)
            | Q(deliveries__recipient__icontains=text)
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    return list(
        OutboundMessage.objects.filter(pk__in=matches)
        .annotate(
            recipients=Count("deliveries"),
            pending=Count("deliveries", filter=Q(deliveries__status__in=PENDING)),
        )
        .order_by("-created_at")[:limit]
    )


def queued_message(public_id: str) -> OutboundMessage:
    """A spooled message by its public id (404 when there is none)."""
    message = OutboundMessage.objects.select_related("mailbox").filter(public_id=public_id).first()
    if message is None:
        raise Http404
    return message


def message_deliveries(message: OutboundMessage) -> QuerySet[OutboundDelivery]:
    return message.deliveries.order_by("recipient")


def hourly_traffic(
    *, hours: int = 24, now: dt.datetime | None = None
) -> list[tuple[dt.datetime, int, int]]:
    """Messages per hour over the last ``hours``, oldest first: (hour, received, sent).
    Received: messages the gateway accepted (its success traces). Sent: recipients delivered
    or relayed by the relay (BALs we host included), by the hour of their outcome."""
    end = (now or timezone.now()).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=hours)
    received = dict(
        AuditEvent.objects.filter(
            action=Action.GATEWAY_RECEIVED,
            result=AuditEvent.Result.SUCCESS,
            occurred_at__gte=start,
            occurred_at__lt=end,
        )
        .annotate(hour=TruncHour("occurred_at", tzinfo=dt.UTC))
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    sent = dict(
        OutboundDelivery.objects.filter(
            status__in=[Status.DELIVERED, Status.RELAYED],
            delivered_at__gte=start,
            delivered_at__lt=end,
        )
        .annotate(hour=TruncHour("delivered_at", tzinfo=dt.UTC))
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    return [(h, received.get(h, 0), sent.get(h, 0)) for h in slots]


# --- The gateway: sessions and refusals ---------------------------------------------------

REASONS = {
    "whitelist": "Liste blanche",
    "certificate": "Certificat",
    "unknown": "BAL inconnue ou fermée",
    "size": "Taille",
    "quota": "BAL pleine (quota)",
    "suspended": "BAL suspendue",
    "store": "Stockage indisponible",
    "other": "Autre",
}


def refusal_reason(reply: str) -> str:
    """The reason of a refusal, from the SMTP reply the gateway sent (policy.py's texts)."""
    code = reply[:3]
    if "4.2.2" in reply:
        return "quota"
    if "4.2.1" in reply:
        return "suspended"
    if code == "530" or "5.7.0" in reply:  # no client certificate
        return "certificate"
    if "whitelist" in reply.lower() or "5.7.1" in reply:
        return "whitelist"
    if "5.1.1" in reply or "5.1.3" in reply:
        return "unknown"
    if code == "552" or "5.3.4" in reply or "size" in reply.lower():
        return "size"
    if code in ("451", "452") or "4.3.0" in reply:
        return "store"
    return "other"


@dataclass(frozen=True)
class Session:
    at: dt.datetime
    peer: str
    sender: str
    recipients: int
    size: int | None
    reply: str
    success: bool
    reason: str  # "" for a success


@dataclass
class InboundView:
    sessions: list[Session]
    delivered: int
    refused: int
    by_peer_reason: list[tuple[str, str, int]]  # (peer DN, reason label, refusals)
    by_reason: list[tuple[str, int]]


def inbound(*, hours: int = 24, limit: int = 50, now: dt.datetime | None = None) -> InboundView:
    """The gateway's transactions (``gateway.received``) and refused senders or recipients
    (``gateway.refused``) of the last ``hours``: the latest ``limit``, and refusals counted
    by peer certificate and reason."""
    since = (now or timezone.now()) - dt.timedelta(hours=hours)
    traces = AuditEvent.objects.filter(
        action__in=[Action.GATEWAY_RECEIVED, Action.GATEWAY_REFUSED], occurred_at__gte=since
    )
    counts = Counter(
        dict(traces.values_list("result").annotate(n=Count("pk")).values_list("result", "n"))
    )
    sessions = []
    for event in traces.order_by("-occurred_at")[:limit]:
        details = event.details or {}
        to = details.get("to", [])
        reply = str(details.get("reply", ""))
        success = event.result == AuditEvent.Result.SUCCESS
        sessions.append(
            Session(
                at=event.occurred_at,
                peer=event.actor_label,
                sender=str(details.get("from", "")),
                recipients=len(to) if isinstance(to, list) else int(bool(to)),
                size=details.get("size"),
                reply=reply,
                success=success,
                reason="" if success else REASONS[refusal_reason(reply)],
            )
        )
    tally: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    for peer, details in traces.filter(result=AuditEvent.Result.FAILURE).values_list(
        "actor_label", "details"
    ):
        reason = REASONS[refusal_reason(str((details or {}).get("reply", "")))]
        tally[(peer, reason)] += 1
        reasons[reason] += 1
    return InboundView(
        sessions=sessions,
        delivered=counts.get(AuditEvent.Result.SUCCESS, 0),
        refused=counts.get(AuditEvent.Result.FAILURE, 0),
        by_peer_reason=[(p, r, n) for (p, r), n in tally.most_common()],
        by_reason=reasons.most_common(),
    )


# --- Trust: whitelist, CRL, our certificates ------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    role: str
    path: str
    subject: str = ""
    issuer: str = ""
    not_after: dt.datetime | None = None
    days_left: int | None = None
    error: str = ""

    @property
    def warning(self) -> bool:
        return self.days_left is not None and self.days_left <= CERT_WARNING_DAYS


def _certificate(role: str, path: str, now: dt.datetime) -> Certificate:
    if not path:
        return Certificate(role, path, error="Aucun fichier configuré.")
    try:
        data = Path(path).read_bytes()
        cert = x509.load_pem_x509_certificates(data)[0]
    except OSError as exc:
        return Certificate(role, path, error=f"Lecture impossible : {exc.strerror}.")
    except (ValueError, IndexError):
        return Certificate(role, path, error="Le fichier n'est pas un certificat PEM lisible.")
    not_after = cert.not_valid_after_utc
    return Certificate(
        role,
        path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=not_after,
        days_left=(not_after - now).days,
    )


def our_certificates(*, now: dt.datetime | None = None) -> list[Certificate]:
    """The certificates we present: the gateway's (to peers connecting to our MX) and the
    relay's (as a client to other operators), read from the configured files."""
    now = now or timezone.now()
    return [
        _certificate("Passerelle (MX entrant)", settings.GATEWAY_CERT, now),
        _certificate("Relais (envoi vers les autres opérateurs)", settings.RELAY_CERT, now),
    ]


@dataclass
class CrlView:
    path: str
    crls: list[crl.CrlInfo]
    error: str = ""
    last_sync: AuditEvent | None = None


def crl_in_force() -> CrlView:
    """The CRLs in the file the gateway and the relay load, and the last sync's trace."""
    path = settings.TLS_CRL_FILE
    last = AuditEvent.objects.filter(action=Action.CRL_SYNC).order_by("-occurred_at").first()
    try:
        return CrlView(path, crl.read_in_force(path), last_sync=last)
    except crl.CrlError as exc:
        return CrlView(path, [], error=str(exc), last_sync=last)


@dataclass
class WhitelistView:
    current: object | None
    entries: list
    runs: list
    diff: WhitelistDiff | None


def whitelist_in_force() -> WhitelistView:
    current = whitelist_current()
    previous = whitelist_previous()
    return WhitelistView(
        current=current,
        entries=whitelist_entries(current) if current else [],
        runs=whitelist_sync_runs(),
        diff=whitelist_diff(current, previous) if current and previous else None,
    )


# --- The directory --------------------------------------------------------------------------


@dataclass
class PublicationView:
    total: int
    listed: int
    missing: list[str]  # our active BALs not (yet) in the extraction
    red_list: int
    last_published: AuditEvent | None


def publication() -> PublicationView:
    """How our open BALs appear in the last imported extraction of the national directory."""
    boxes = list(
        Mailbox.objects.exclude(status=Mailbox.Status.CLOSED).values_list("address", "liste_rouge")
    )
    addresses = [address for address, _ in boxes]
    found = directory_entries(addresses)
    last = AuditEvent.objects.filter(action=Action.BAL_PUBLISHED).order_by("-occurred_at").first()
    return PublicationView(
        total=len(boxes),
        listed=sum(1 for a in addresses if a in found),
        missing=sorted(a for a in addresses if a not in found)[:100],
        red_list=sum(1 for _, red in boxes if red),
        last_published=last,
    )


def imports(limit: int = 10) -> list:
    return directory_imports(limit)


# --- Structures, BALs, sizes and quotas -----------------------------------------------------


@dataclass(frozen=True)
class StructureRow:
    structure: Structure
    boxes: int
    used: int
    full: int
    warned: int


def structures() -> list[StructureRow]:
    """Every structure with its open BALs, the mail they hold and how many are near or at
    their quota."""
    boxes_by_structure: dict[int, list[Mailbox]] = defaultdict(list)
    boxes = list(Mailbox.objects.exclude(status=Mailbox.Status.CLOSED))
    for box in boxes:
        boxes_by_structure[box.structure_id].append(box)
    used = usages(boxes)
    rows = []
    for structure in Structure.objects.order_by("name"):
        mine = boxes_by_structure.get(structure.pk, [])
        rows.append(
            StructureRow(
                structure=structure,
                boxes=len(mine),
                used=sum(used[b.address].used or 0 for b in mine),
                full=sum(1 for b in mine if used[b.address].full),
                warned=sum(1 for b in mine if used[b.address].warn),
            )
        )
    return rows


def structure_of(public_id: str) -> Structure:
    structure = Structure.objects.filter(public_id=public_id).first()
    if structure is None:
        raise Http404
    return structure


def structure_boxes(structure: Structure) -> list[tuple[Mailbox, Usage]]:
    """The structure's BALs (closed ones last) with their usage against their quota."""
    boxes = list(structure.mailboxes.order_by("status", "address"))
    used = usages(boxes)
    return [(box, used[box.address]) for box in boxes]


def mailbox_of(public_id: str) -> Mailbox:
    box = Mailbox.objects.select_related("structure").filter(public_id=public_id).first()
    if box is None:
        raise Http404
    return box
