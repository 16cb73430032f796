"""Operator indicators (mssante-spec §5.2: Ref#1 defines indicators and their deposit; the
formats are not public). Counts per day are derived from the functional traces, which are
written in the same transaction as what they describe: the indicators can always be rebuilt,
and computing them adds nothing to the delivery path."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import AuditEvent
from mailboxes.models import DailyIndicator

COUNTED = ("gateway.received", "relay.delivered", "relay.relayed", "relay.failed")


def _counts(day: date) -> Counter[tuple[str, str]]:
    tz = timezone.get_current_timezone()
    start = timezone.make_aware(datetime.combine(day, time.min), tz)
    events = AuditEvent.objects.filter(
        occurred_at__gte=start, occurred_at__lt=start + timedelta(days=1), action__in=COUNTED
    ).values_list("action", "result", "details")
    counts: Counter[tuple[str, str]] = Counter()
    for action, result, details in events.iterator(chunk_size=2000):
        if action == "gateway.received":
            sender = str(details.get("from") or "")
            key = sender.rpartition("@")[2].lower() or "<>"
            name = "inbound.delivered" if result == AuditEvent.Result.SUCCESS else "inbound.refused"
            counts[(name, key)] += 1
            if result == AuditEvent.Result.SUCCESS:
                counts[("inbound.recipients", key)] += len(details.get("to") or [])
        else:
            counts[("outbound." + action.split(".", 1)[1], str(details.get("domain") or ""))] += (
                int(details.get("recipients") or 1)
            )
    return counts


@transaction.atomic
def indicators_compute(*, day: date | None = None) -> int:
    """Rebuild the counters of ``day`` (default: today and yesterday, so that the last hours
    of a day are counted once it is over). Returns the number of counters written."""
    days = [day] if day else [timezone.localdate(), timezone.localdate() - timedelta(days=1)]
    written = 0
    for current in days:
        counts = _counts(current)
        DailyIndicator.objects.filter(day=current).delete()
        DailyIndicator.objects.bulk_create(
            DailyIndicator(day=current, name=name, key=key[:255], count=n)
            for (name, key), n in counts.items()
        )
        written += len(counts)
    return written
