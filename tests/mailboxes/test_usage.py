"""Monthly usage per BAL (ANS usage indicators): rebuilt from the gateway traces and the spool
rows, partner structures from our domains and the national directory; the SVG charts and the
CSV rows the console shows and exports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.audit import audit_event
from accounts.models import Structure
from annuaire.extraction import COLUMNS
from annuaire.services import directory_import
from mailboxes.console.charts import top_bars_svg, usage_bars_svg
from mailboxes.console.services.lifecycle import mailbox_create
from mailboxes.console.services.usage import usage_compute
from mailboxes.console.usage_selectors import usage_csv_rows, usage_series
from mailboxes.models import Mailbox, MailboxMonthlyUsage, OutboundDelivery, OutboundMessage
from mailboxes.transport.relay import Recipient, message_spool
from tests.factories import SHARED, make_professional, make_structure

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
HEADER = (
    SHARED / "samples/annuaire/Extraction_Correspondance_MSSante__HEADER_31cols_reconstructed.txt"
)
MARCH = date(2026, 3, 1)
CHU = "cardio@chu-reims.mssante.fr"  # listed in the directory
CLINIC_UNLISTED = "accueil@clinique-du-parc.mssante.fr"  # not listed; its domain is one clinic
SHARED_UNLISTED = "dr.x@medecin.mssante.fr"  # not listed; its domain has many structures


# --- Data through the real writers ------------------------------------------------------------


def _box(structure: Structure, local_part: str) -> Mailbox:
    # The service itself; Dovecot is provisioned on commit, which a test transaction never does.
    return mailbox_create(
        structure=structure,
        kind="PER",
        local_part=local_part,
        display_name=local_part,
        owner=make_professional(),
        actor=None,
    )


def _at(day: date, hour: int = 10) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hour)), timezone.get_current_timezone())


def _received(sender: str, to: list[str], *, when: datetime | None = None, ok: bool = True) -> None:
    """What the gateway writes after DATA (mailboxes.transport.gateway.policy._trace)."""
    reply = "250 2.0.0 Message delivered" if ok else "550 5.1.1 Unknown user"
    event = audit_event(
        action="gateway.received",
        actor_label="CN=smtp.operateur-test.mssante.fr",
        target_type="message",
        target_id="<1@operateur-test.mssante.fr>",
        success=ok,
        error_code="" if ok else "550",
        details={
            "tls": "TLSv1.3",
            "cipher": "TLS_AES_256_GCM_SHA384",
            "from": sender,
            "to": to,
            "size": 1234,
            "reply": reply,
            "dsn": {},
        },
    )
    if when is not None:  # traces are append-only: an old one is written old
        event.occurred_at = when
    event.save(force_insert=True)


def _sent(
    box: Mailbox, to: list[str], *, when: datetime | None = None, origin: str = "webmail"
) -> OutboundMessage:
    """A webmail message in the spool (as compose writes it); local rows delivered, as the relay
    marks them after LMTP."""
    message = message_spool(
        origin=origin,
        envelope_from=box.address,
        recipients=[Recipient(a) for a in to],
        content=b"Subject: secret\r\n\r\nbody",
        message_id="<m@ehpad-les-tilleuls.mssante.fr>",
        mailbox=box if origin == OutboundMessage.Origin.WEBMAIL else None,
    )
    OutboundDelivery.objects.filter(message=message, local=True).update(
        status=OutboundDelivery.Status.DELIVERED, delivered_at=timezone.now()
    )
    OutboundDelivery.objects.filter(message=message, local=False).update(
        status=OutboundDelivery.Status.RELAYED
    )
    OutboundMessage.objects.filter(pk=message.pk).update(content=b"")  # cleared after delivery
    if when is not None:
        OutboundMessage.objects.filter(pk=message.pk).update(created_at=when)
    return message


def _directory(tmp_path: Path, entries: list[tuple[str, str, str]]) -> None:
    """Load a small national extraction through the importer: (type, address, structure)."""
    lines = []
    for bal_type, address, structure_name in entries:
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            {
                "Type de BAL": bal_type,
                "Adresse BAL": address,
                "Raison Sociale structure BAL": structure_name,
            }
        )
        lines.append("|".join(row[c] for c in COLUMNS) + "\n")
    path = tmp_path / "Extraction_Correspondance_MSSante_202603010300.txt"
    path.write_text(
        HEADER.read_text(encoding="utf-8").rstrip("\n") + "\n" + "".join(lines), encoding="utf-8"
    )
    assert directory_import(path=path).result == "success"


@pytest.fixture
def ehpad() -> Structure:
    return make_structure()


@pytest.fixture
def claire(ehpad: Structure) -> Mailbox:
    return _box(ehpad, "claire.martin")


@pytest.fixture
def paul(ehpad: Structure) -> Mailbox:
    return _box(ehpad, "paul.durand")


@pytest.fixture
def directory(tmp_path: Path) -> None:
    _directory(
        tmp_path,
        [
            ("PER", CHU, "CENTRE HOSPITALIER DE REIMS"),
            ("ORG", "secretariat@clinique-du-parc.mssante.fr", "CLINIQUE DU PARC"),
            ("PER", "dr.a@clinique-du-parc.mssante.fr", "CLINIQUE DU PARC"),
            ("PER", "dr.b@clinique-du-parc.mssante.fr", "SCM IMAGERIE DU PARC"),
            ("PER", "dr.c@medecin.mssante.fr", "CABINET DU DR C"),
            ("PER", "dr.d@medecin.mssante.fr", "CABINET DU DR D"),
            ("PER", "dr.e@medecin.mssante.fr", ""),
        ],
    )


@pytest.fixture
def march(claire: Mailbox, paul: Mailbox, directory: None) -> None:
    """A month of exchanges of two BALs of the EHPAD."""
    day = _at(MARCH + timedelta(days=9))
    _received(CHU, [claire.address, paul.address], when=day)
    _received(CHU, [claire.address], when=day)
    _received(CLINIC_UNLISTED, [claire.address], when=day)
    _received(CHU, [claire.address], when=day, ok=False)  # refused: not received
    _received(CHU, ["parti@ehpad-les-tilleuls.mssante.fr"], when=day)  # not a BAL of ours
    _sent(claire, [CHU, SHARED_UNLISTED, paul.address], when=day)  # paul: a local delivery
    # A gateway retry of a local delivery is already counted by its gateway trace.
    _sent(paul, [claire.address], when=day, origin=OutboundMessage.Origin.GATEWAY)


def _usage(box: Mailbox, month: date = MARCH) -> MailboxMonthlyUsage:
    return MailboxMonthlyUsage.objects.get(mailbox=box, month=month)


# --- Computation --------------------------------------------------------------------------------


def test_received_sent_and_distinct_correspondents_per_bal(
    march: None, claire: Mailbox, paul: Mailbox
) -> None:
    usage_compute(month=MARCH)

    mine = _usage(claire)
    assert (mine.received, mine.sent, mine.correspondents) == (3, 1, 4)
    assert mine.domains == {
        "chu-reims.mssante.fr": 3,
        "clinique-du-parc.mssante.fr": 1,
        "ehpad-les-tilleuls.mssante.fr": 1,
        "medecin.mssante.fr": 1,
    }


def test_a_local_delivery_counts_as_sent_by_one_bal_and_received_by_the_other(
    march: None, claire: Mailbox, paul: Mailbox
) -> None:
    usage_compute(month=MARCH)

    his = _usage(paul)
    assert (his.received, his.sent, his.correspondents) == (2, 0, 2)
    assert his.domains == {"chu-reims.mssante.fr": 1, "ehpad-les-tilleuls.mssante.fr": 1}
    assert his.structures == {"CENTRE HOSPITALIER DE REIMS": 1, "EHPAD Les Tilleuls": 1}


def test_partner_structures_from_our_domains_the_directory_and_a_one_structure_domain(
    march: None, claire: Mailbox
) -> None:
    usage_compute(month=MARCH)

    # medecin.mssante.fr has many structures: an unlisted address there gets none.
    assert _usage(claire).structures == {
        "CENTRE HOSPITALIER DE REIMS": 3,
        "CLINIQUE DU PARC": 1,
        "EHPAD Les Tilleuls": 1,
    }


def test_recomputing_gives_the_same_rows_and_stores_no_content(
    march: None, claire: Mailbox, paul: Mailbox
) -> None:
    assert usage_compute(month=MARCH) == 2
    first = {(u.mailbox_id, u.received, u.sent) for u in MailboxMonthlyUsage.objects.all()}
    assert usage_compute(month=date(2026, 3, 17)) == 2  # any day names its month

    assert MailboxMonthlyUsage.objects.count() == 2
    assert {(u.mailbox_id, u.received, u.sent) for u in MailboxMonthlyUsage.objects.all()} == first
    stored = str(list(MailboxMonthlyUsage.objects.values("domains", "structures")))
    assert "secret" not in stored


def test_months_follow_paris_time_and_a_message_stays_in_its_month(claire: Mailbox) -> None:
    # 23:30 in Paris on the last day of February, then 00:30 on the 1st of March (UTC: both on
    # the last day of February).
    _received(CHU, [claire.address], when=_at(date(2026, 2, 28), 23) + timedelta(minutes=30))
    _received(CHU, [claire.address], when=_at(MARCH, 0) + timedelta(minutes=30))
    _sent(claire, [CHU], when=_at(date(2026, 2, 10)))

    usage_compute(month=date(2026, 2, 1))
    usage_compute(month=MARCH)

    february = _usage(claire, date(2026, 2, 1))
    assert (february.received, february.sent) == (1, 1)
    assert (_usage(claire).received, _usage(claire).sent) == (1, 0)


def test_by_default_this_month_and_the_previous_one_are_rebuilt(claire: Mailbox) -> None:
    this_month = timezone.localdate().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    _received(CHU, [claire.address])
    _received(CHU, [claire.address], when=_at(last_month + timedelta(days=14)))
    _received(CHU, [claire.address], when=_at(last_month + timedelta(days=14)))

    assert usage_compute() == 2

    assert _usage(claire, this_month).received == 1
    assert _usage(claire, last_month).received == 2


def test_the_periodic_task_runs_the_computation(claire: Mailbox) -> None:
    from mailboxes.tasks import compute_usage

    _received(CHU, [claire.address])

    assert compute_usage() == 1
    assert _usage(claire, timezone.localdate().replace(day=1)).received == 1


# --- Reading: series and CSV ------------------------------------------------------------------


def test_the_series_sums_the_structure_bals_and_shows_empty_months(
    march: None, ehpad: Structure, claire: Mailbox
) -> None:
    usage_compute(month=MARCH)

    series = usage_series(structure=ehpad, months=3, until=date(2026, 4, 20))

    assert [m.month for m in series] == [date(2026, 2, 1), MARCH, date(2026, 4, 1)]
    assert [(m.received, m.sent) for m in series] == [(0, 0), (5, 1), (0, 0)]
    assert series[1].domains["chu-reims.mssante.fr"] == 4
    assert next(iter(series[1].structures)) == "CENTRE HOSPITALIER DE REIMS"  # largest first
    one = usage_series(structure=ehpad, mailbox=claire, months=1, until=MARCH)
    assert (one[0].received, one[0].sent, one[0].correspondents) == (3, 1, 4)


def test_the_series_never_shows_a_bal_of_another_structure(march: None, claire: Mailbox) -> None:
    usage_compute(month=MARCH)
    other = make_structure(name="Autre", finess="690009999", domain="autre.mssante.fr")

    [month] = usage_series(structure=other, mailbox=claire, months=1, until=MARCH)

    assert (month.received, month.sent) == (0, 0)


def test_csv_rows_one_per_bal_and_month_with_partners(
    march: None, ehpad: Structure, claire: Mailbox, paul: Mailbox
) -> None:
    usage_compute(month=MARCH)
    Mailbox.objects.filter(pk=paul.pk).update(created_at=_at(date(2026, 1, 15)))

    rows = list(usage_csv_rows(structure=ehpad, months=2, until=MARCH))

    assert rows[0] == [
        "Mois",
        "BAL",
        "Type",
        "Reçus",
        "Envoyés",
        "Correspondants distincts",
        "Principaux domaines partenaires",
        "Principales structures partenaires",
    ]
    assert [
        "2026-03",
        claire.address,
        "Personnelle",
        "3",
        "1",
        "4",
        "chu-reims.mssante.fr (3); clinique-du-parc.mssante.fr (1); "
        "ehpad-les-tilleuls.mssante.fr (1); medecin.mssante.fr (1)",
        "CENTRE HOSPITALIER DE REIMS (3); CLINIQUE DU PARC (1); EHPAD Les Tilleuls (1)",
    ] in rows
    # Open in February without messages: present with zeros; not open yet: absent.
    assert ["2026-02", paul.address, "Personnelle", "0", "0", "0", "", ""] in rows
    assert [r[:2] for r in rows[1:]] == [
        ["2026-02", paul.address],
        ["2026-03", claire.address],
        ["2026-03", paul.address],
    ]


def test_csv_cells_from_the_directory_cannot_become_formulas(
    tmp_path: Path, ehpad: Structure, claire: Mailbox
) -> None:
    _directory(tmp_path, [("ORG", "x@piege.mssante.fr", '=HYPERLINK("http://x")')])
    _received("x@piege.mssante.fr", [claire.address])
    usage_compute()

    [row] = [r for r in usage_csv_rows(structure=ehpad) if r[1] == claire.address and r[3] == "1"]

    assert row[7] == '\'=HYPERLINK("http://x") (1)'


# --- Charts -------------------------------------------------------------------------------------


def _svg(markup: str) -> ET.Element:
    assert "style=" not in markup
    assert "<script" not in markup.lower()
    return ET.fromstring(markup)  # noqa: S314 -- our own output


def _texts(root: ET.Element, tag: str) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(SVG + tag)]


def test_monthly_bars_with_french_months_round_ticks_and_tooltips() -> None:
    months = [date(2025, m, 1) for m in range(4, 13)] + [date(2026, m, 1) for m in (1, 2, 3)]
    points = [(m, 0, 0) for m in months[:-1]] + [(MARCH, 12, 1)]

    root = _svg(usage_bars_svg(points, title="Usage de claire.martin"))

    assert root.get("role") == "img"
    assert root.find(SVG + "title") is not None and root.find(SVG + "desc") is not None
    labels = _texts(root, "text")
    assert {"avr. 2025", "déc. 2025", "janv. 2026", "févr. 2026", "mars 2026"} <= set(labels)
    assert {"Reçus", "Envoyés"} <= set(labels)
    assert [t for t in labels if t.isdigit()] == ["0", "5", "10", "15"]
    tips = _texts(root, "title")
    assert "12 messages reçus en mars 2026" in tips
    assert "1 message envoyé en mars 2026" in tips
    assert {e.get("class") for e in root.iter(SVG + "rect")} == {"chart-received", "chart-sent"}


def test_a_single_month_and_an_empty_period() -> None:
    one = _svg(usage_bars_svg([(MARCH, 3, 2)], title="Mars"))
    assert "mars 2026" in _texts(one, "text")

    for points in ([], [(MARCH, 0, 0)]):
        empty = _svg(usage_bars_svg(points, title="Rien"))
        assert "Aucun message sur la période" in _texts(empty, "text")
    assert "Aucun message sur la période" in _texts(_svg(top_bars_svg([], title="x")), "text")


def test_partner_bars_escape_hostile_names() -> None:
    hostile = '<script>alert("x")</script>&Cie'

    markup = top_bars_svg([(hostile, 7), ("chu-reims.mssante.fr", 2)], title=f"Top {hostile}")
    root = _svg(markup)

    assert "&lt;script&gt;" in markup
    assert hostile in _texts(root, "text")  # shown as text, not markup
    assert f"{hostile} : 7 messages" in _texts(root, "title")
    assert "chu-reims.mssante.fr : 2 messages" in _texts(root, "title")
    assert root.find(SVG + "title").text == f"Top {hostile}"  # type: ignore[union-attr]


def test_long_partner_names_are_cut_with_the_full_name_in_the_tooltip() -> None:
    name = "CENTRE HOSPITALIER UNIVERSITAIRE DE REIMS - CARDIOLOGIE"

    root = _svg(top_bars_svg([(name, 4)], title="Structures"))

    assert "CENTRE HOSPITALIER UNIVERSITAIR…" in _texts(root, "text")
    assert f"{name} : 4 messages" in _texts(root, "title")
