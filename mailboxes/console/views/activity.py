"""The console's journal (functional traces, CSV) and usage indicators (SVG charts, CSV)."""

from __future__ import annotations

import csv
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.decorators import professional_required
from accounts.journal import (
    ACTION_LABELS,
    JournalFilter,
    JournalRow,
    action_label,
    journal_csv_rows,
    journal_events,
    journal_rows,
    message_history,
)
from accounts.models import Structure, User
from mailboxes.console.charts import top_bars_svg, usage_bars_svg
from mailboxes.console.forms import IndicatorsForm, JournalForm, set_choices
from mailboxes.console.selectors import console_mailbox, console_structure, journal_subjects
from mailboxes.console.usage_selectors import usage_computed_at, usage_csv_rows, usage_series
from mailboxes.models import Mailbox

PAGE_SIZE = 50
# Message-IDs shown in one row's detail (a move of 200 messages names them all in its trace).
DETAIL_MESSAGES = 3


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _boxes(structure: Structure) -> dict[str, str]:
    return {
        str(pid): address
        for pid, address in Mailbox.objects.filter(structure=structure)
        .order_by("address")
        .values_list("public_id", "address")
    }


def _journal_query(
    request: HttpRequest, structure: Structure
) -> tuple[JournalForm, JournalFilter, dict[str, str]]:
    boxes = _boxes(structure)
    form = JournalForm(request.GET or None)
    set_choices(form, "bal", [("", "Toutes"), *boxes.items()])
    set_choices(
        form,
        "action",
        [
            ("", "Toutes"),
            ("message.", "Messages (toutes actions)"),
            ("mailbox.", "BAL (toutes actions)"),
            ("membership.", "Personnes (toutes actions)"),
            *sorted(((k, v) for k, v in ACTION_LABELS.items()), key=lambda kv: kv[1]),
        ],
    )
    flt = JournalFilter()
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        flt = JournalFilter(
            mailbox_ids=[data["bal"]] if data["bal"] else None,
            person=data["personne"].strip(),
            action=data["action"],
            start=data["du"],
            end=data["au"],
            result=data["resultat"],
            message_id=data["message_id"].strip(),
        )
    return form, flt, boxes


@professional_required
@require_GET
def journal(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponse:
    """The structure's traces, filterable; with a BAL and a Message-ID, the history of one
    message: who read, moved, deleted or sent it."""
    current = console_structure(_user(request), structure_id)
    form, flt, boxes = _journal_query(request, current)
    status = 200 if not form.is_bound or form.is_valid() else 400
    events = journal_events(structure_id=current.pk, mailbox_ids=list(boxes), flt=flt)
    page = Paginator(events, PAGE_SIZE).get_page(
        form.cleaned_data.get("page") if status == 200 and form.is_bound else 1
    )
    history = None
    if flt.message_id and flt.mailbox_ids:
        box = console_mailbox(current, flt.mailbox_ids[0])
        history = message_history(mailbox_id=str(box.public_id), message_id=flt.message_id)
    rows = journal_rows(page)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "console/journal.html",
        {
            "structure": current,
            "form": form,
            "page": page,
            "rows": _detailed(_user(request), rows, boxes),
            "history": [(e, action_label(e.action)) for e in history]
            if history is not None
            else None,
            "query": query.urlencode(),
        },
        status=status,
    )


def _detailed(user: User, rows: list[JournalRow], boxes: dict[str, str]) -> list[dict[str, object]]:
    """Each row with its BAL's address and its messages: Message-ID, the subject when the
    person may read that BAL (journal_subjects), and the link to the message's history."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        if row.mailbox_id in boxes:
            wanted.setdefault(row.mailbox_id, set()).update(row.message_ids[:DETAIL_MESSAGES])
    subjects = journal_subjects(user, wanted)
    detailed = []
    for row in rows:
        messages = [
            {
                "message_id": mid,
                "subject": subjects.get((row.mailbox_id, mid)),
                "history": urlencode({"bal": row.mailbox_id, "message_id": mid})
                if row.mailbox_id in boxes
                else "",
            }
            for mid in row.message_ids[:DETAIL_MESSAGES]
        ]
        detailed.append(
            {
                "event": row.event,
                "label": row.label,
                "bal": boxes.get(row.mailbox_id, ""),
                "messages": messages,
                "more": max(0, len(row.message_ids) - DETAIL_MESSAGES),
                "person": row.person,
                "details": row.details,
            }
        )
    return detailed


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_response(rows: Iterable[list[str]], filename: str) -> StreamingHttpResponse:
    """Streamed CSV for a French spreadsheet: UTF-8 with BOM, semicolons."""
    writer = csv.writer(_Echo(), delimiter=";")

    def lines() -> Iterator[str]:
        yield "\ufeff"
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@professional_required
@require_GET
def journal_csv(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponseBase:
    current = console_structure(_user(request), structure_id)
    form, flt, boxes = _journal_query(request, current)
    if form.is_bound and not form.is_valid():
        return HttpResponse("Filtres invalides.", status=400, content_type="text/plain")
    events = journal_events(structure_id=current.pk, mailbox_ids=list(boxes), flt=flt)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    return _csv_response(journal_csv_rows(events, mailboxes=boxes), f"journal-{stamp}.csv")


@professional_required
@require_GET
def indicators(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponse:
    """Messages received and sent per month, distinct correspondents, main partner domains
    and structures; for the whole structure or one BAL."""
    current = console_structure(_user(request), structure_id)
    boxes = _boxes(current)
    form = IndicatorsForm(request.GET or None)
    set_choices(form, "bal", [("", "Toute la structure"), *boxes.items()])
    months, box = 12, None
    if form.is_bound and form.is_valid():
        months = form.cleaned_data["mois"] or 12
        if form.cleaned_data["bal"]:
            box = console_mailbox(current, form.cleaned_data["bal"])
    series = usage_series(structure=current, mailbox=box, months=months)
    domains: Counter[str] = Counter()
    structures: Counter[str] = Counter()
    for month in series:
        domains.update(month.domains)
        structures.update(month.structures)
    scope = box.address if box else current.name
    return render(
        request,
        "console/indicators.html",
        {
            "structure": current,
            "form": form,
            "box": box,
            "series": series,
            "total_received": sum(m.received for m in series),
            "total_sent": sum(m.sent for m in series),
            "computed_at": usage_computed_at(structure=current, mailbox=box),
            "volume_chart": usage_bars_svg(
                [(m.month, m.received, m.sent) for m in series],
                title=f"Messages reçus et envoyés par mois — {scope}",
            ),
            "domains_chart": top_bars_svg(
                domains.most_common(10), title="Principaux domaines partenaires"
            ),
            "structures_chart": top_bars_svg(
                structures.most_common(10), title="Principales structures partenaires"
            ),
        },
    )


@professional_required
@require_GET
def indicators_csv(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponseBase:
    current = console_structure(_user(request), structure_id)
    form = IndicatorsForm(request.GET or None)
    months = 12
    if form.is_bound and form.is_valid():
        months = form.cleaned_data["mois"] or 12
    stamp = timezone.localtime().strftime("%Y%m")
    return _csv_response(
        usage_csv_rows(structure=current, months=months), f"indicateurs-{stamp}.csv"
    )
