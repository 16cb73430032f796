"""Reads of the monthly usage indicators (rows written by mailboxes.console.services.usage).

Access checks are the caller's: these take a structure the user was already allowed to see,
and never return the figures of a BAL outside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Structure
from mailboxes.console.services.usage import TOP, month_after, month_start
from mailboxes.models import Mailbox, MailboxMonthlyUsage


@dataclass(frozen=True)
class UsageMonth:
    month: date  # first day of the month
    received: int = 0
    sent: int = 0
    # Summed over BALs when several are counted: the same partner of two BALs counts twice.
    correspondents: int = 0
    domains: dict[str, int] = field(default_factory=dict)  # largest first, at most TOP
    structures: dict[str, int] = field(default_factory=dict)  # largest first, at most TOP


def _months(count: int, until: date | None) -> list[date]:
    """``count`` first days of months, oldest first, ending with the month of ``until``."""
    if count < 1:
        raise ValueError("months must be at least 1")
    last = month_start(until or timezone.localdate())
    months = [last]
    for _i in range(count - 1):
        months.append(month_start(months[-1] - timedelta(days=1)))
    return months[::-1]


def _ranked(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP])


def usage_series(
    *,
    structure: Structure,
    mailbox: Mailbox | None = None,
    months: int = 12,
    until: date | None = None,
) -> list[UsageMonth]:
    """Usage per month, oldest first, over ``months`` months ending with the month of ``until``
    (default: this month, local time). For one BAL of ``structure``, or summed over all its BALs
    when ``mailbox`` is None; a BAL of another structure gives zeros. Months without data are
    present with zeros. Raises ValueError when ``months`` is below 1. One query."""
    wanted = _months(months, until)
    rows = MailboxMonthlyUsage.objects.filter(
        mailbox__structure=structure, month__gte=wanted[0], month__lte=wanted[-1]
    )
    if mailbox is not None:
        rows = rows.filter(mailbox=mailbox)
    totals: dict[date, list[int]] = {m: [0, 0, 0] for m in wanted}
    domains: dict[date, Counter[str]] = {m: Counter() for m in wanted}
    partners: dict[date, Counter[str]] = {m: Counter() for m in wanted}
    for month, received, sent, correspondents, by_domain, by_structure in rows.values_list(
        "month", "received", "sent", "correspondents", "domains", "structures"
    ):
        total = totals[month]
        total[0] += received
        total[1] += sent
        total[2] += correspondents
        domains[month].update(by_domain or {})
        partners[month].update(by_structure or {})
    return [
        UsageMonth(
            month=m,
            received=totals[m][0],
            sent=totals[m][1],
            correspondents=totals[m][2],
            domains=_ranked(domains[m]),
            structures=_ranked(partners[m]),
        )
        for m in wanted
    ]


def usage_computed_at(*, structure: Structure, mailbox: Mailbox | None = None) -> datetime | None:
    """When the figures shown were last computed (the newest monthly row), None before the
    first computation."""
    rows = MailboxMonthlyUsage.objects.filter(mailbox__structure=structure)
    if mailbox is not None:
        rows = rows.filter(mailbox=mailbox)
    return rows.aggregate(latest=Max("computed_at"))["latest"]


def _cell(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula (names come from the national
    directory, which we do not write)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _listing(counts: dict[str, int]) -> str:
    """« chu-reims.mssante.fr (12); medecin.mssante.fr (3) », largest first."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return _cell("; ".join(f"{name} ({n})" for name, n in ranked))


def _open_during(box: Mailbox, month: date) -> bool:
    if timezone.localdate(box.created_at) >= month_after(month):
        return False
    closed = box.status == Mailbox.Status.CLOSED and box.status_changed_at is not None
    return not (closed and timezone.localdate(box.status_changed_at) < month)


def usage_csv_rows(
    *, structure: Structure, months: int = 12, until: date | None = None
) -> Iterator[list[str]]:
    """The export of the structure's usage: a header row in French, then one row per BAL and
    month (oldest month first, BALs by address) over ``months`` months ending with the month of
    ``until`` (default: this month). A BAL appears for the months it was open, or had messages.
    Text cells that a spreadsheet would read as a formula get a leading apostrophe. Two queries,
    whatever the size. Raises ValueError when ``months`` is below 1."""
    wanted = _months(months, until)
    yield [
        _("Mois"),
        _("BAL"),
        _("Type"),
        _("Reçus"),
        _("Envoyés"),
        _("Correspondants distincts"),
        _("Principaux domaines partenaires"),
        _("Principales structures partenaires"),
    ]
    boxes = list(Mailbox.objects.filter(structure=structure).order_by("address"))
    usage = {
        (row.mailbox_id, row.month): row
        for row in MailboxMonthlyUsage.objects.filter(
            mailbox__structure=structure, month__gte=wanted[0], month__lte=wanted[-1]
        )
    }
    for month in wanted:
        for box in boxes:
            row = usage.get((box.pk, month))
            if row is None and not _open_during(box, month):
                continue
            yield [
                f"{month:%Y-%m}",
                box.address,
                str(box.get_kind_display()),
                str(row.received if row else 0),
                str(row.sent if row else 0),
                str(row.correspondents if row else 0),
                _listing(row.domains if row else {}),
                _listing(row.structures if row else {}),
            ]
