"""The audit trail's reads (journal filters, CSV) and its six-month purge."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from accounts.audit import Action, audit_event
from accounts.journal import (
    ACTION_LABELS,
    CSV_HEADER,
    HISTORY_ACTIONS,
    MAILBOX_TARGET,
    JournalFilter,
    action_label,
    journal_csv_rows,
    journal_events,
)
from accounts.models import AuditEvent, Structure, User
from accounts.services import audit_purge
from accounts.tasks import purge_audit
from mailboxes.models import OutboundDelivery
from tests.factories import make_professional, make_structure

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")


@dataclass
class World:
    ehpad: Structure
    ime: Structure
    doctor: User
    nurse: User
    soins: str  # public ids of BALs, as the console passes them
    claire: str
    ime_box: str


@pytest.fixture
def world() -> World:
    return World(
        ehpad=make_structure(),
        ime=make_structure(
            name="IME Les Coquelicots", finess="690002001", domain="ime-les-coquelicots.mssante.fr"
        ),
        doctor=make_professional(first_name="Claire", last_name="Martin"),
        nurse=make_professional(first_name="Julien", last_name="Bernard", profession="60"),
        soins=str(uuid.uuid4()),
        claire=str(uuid.uuid4()),
        ime_box=str(uuid.uuid4()),
    )


def _event(
    action: str,
    *,
    structure: Structure | None = None,
    box: str = "",
    actor: User | None = None,
    actor_label: str = "",
    at: datetime | None = None,
    success: bool = True,
    error_code: str = "",
    target_type: str = "",
    target_id: str = "",
    details: dict[str, object] | None = None,
) -> AuditEvent:
    event = audit_event(
        action=action,
        actor=actor,
        actor_label=actor_label,
        structure=structure,
        target_type=MAILBOX_TARGET if box else target_type,
        target_id=box or target_id,
        success=success,
        error_code=error_code,
        details=details,
    )
    if at is not None:  # traces are append-only: an old one is written old
        event.occurred_at = at
    event.save(force_insert=True)
    return event


def _journal(world: World, **filters: object) -> list[AuditEvent]:
    return list(
        journal_events(
            structure_id=world.ehpad.pk,
            mailbox_ids=[world.soins, world.claire],
            flt=JournalFilter(**filters),  # type: ignore[arg-type]
        )
    )


def test_every_action_has_a_french_label_and_the_relay_statuses_are_actions() -> None:
    assert [a for a in Action if not str(a.label)] == []
    assert [a.value for a in Action if ACTION_LABELS[a.value] == a.value] == []
    assert {f"relay.{status}" for status in OutboundDelivery.Status.values} <= set(ACTION_LABELS)
    assert set(HISTORY_ACTIONS) <= set(ACTION_LABELS)
    assert action_label("message.read") == "Lecture d'un message"
    assert action_label("mailbox.closed") == "Fermeture de la BAL"
    assert action_label("inconnu.nouveau") == "inconnu.nouveau"


def test_a_director_sees_only_their_structures_traces_newest_first(world: World) -> None:
    now = timezone.now()
    own = [
        _event("membership.added", structure=world.ehpad, at=now - timedelta(hours=3)),
        _event("message.read", structure=world.ehpad, box=world.soins, at=now - timedelta(hours=2)),
        # A trace on one of the structure's BALs that carries no structure still belongs to it.
        _event("annuaire.bal_published", box=world.claire, at=now - timedelta(hours=1)),
    ]
    _event("membership.added", structure=world.ime)
    _event("message.read", structure=world.ime, box=world.ime_box, actor=world.doctor)
    _event("mailbox.suspended", box=world.ime_box)
    _event(Action.LOGIN, actor=world.doctor)

    everything = _journal(world)
    asked_for_another_bal = _journal(world, mailbox_ids=[world.ime_box])

    assert [e.pk for e in everything] == [e.pk for e in reversed(own)]
    assert asked_for_another_bal == []


def test_filter_by_bal(world: World) -> None:
    on_soins = _event("message.read", structure=world.ehpad, box=world.soins)
    _event("message.read", structure=world.ehpad, box=world.claire)
    _event("membership.added", structure=world.ehpad)

    assert [e.pk for e in _journal(world, mailbox_ids=[world.soins])] == [on_soins.pk]
    assert len(_journal(world, mailbox_ids=[world.soins, world.claire])) == 2


def test_filter_by_person_name_national_id_or_label(world: World) -> None:
    by_nurse = _event("message.read", structure=world.ehpad, box=world.soins, actor=world.nurse)
    by_doctor = _event("message.move", structure=world.ehpad, box=world.soins, actor=world.doctor)
    by_relay = _event("relay.failed", structure=world.ehpad, actor_label="relais",
                      target_type="message", target_id="<9.x@autre.mssante.fr>")  # fmt: skip

    def people(person: str) -> list[int]:
        return [e.pk for e in _journal(world, person=person)]

    assert people("julien") == [by_nurse.pk]
    assert people("BERNARD Julien") == [by_nurse.pk]
    assert people(world.doctor.national_id or "") == [by_doctor.pk]
    assert people("Relais") == [by_relay.pk]
    assert people("Personne") == []


def test_filter_by_exact_action_or_family(world: World) -> None:
    read = _event("message.read", structure=world.ehpad, box=world.soins)
    move = _event("message.move", structure=world.ehpad, box=world.soins)
    _event("mailbox.suspended", structure=world.ehpad, box=world.soins)

    assert [e.pk for e in _journal(world, action="message.read")] == [read.pk]
    assert {e.pk for e in _journal(world, action="message.")} == {read.pk, move.pk}
    assert _journal(world, action="message") == []


def test_filter_by_paris_days_both_included(world: World) -> None:
    def at(day: int, hour: int, minute: int) -> datetime:
        return datetime(2026, 11, day, hour, minute, tzinfo=PARIS)

    _event("message.read", structure=world.ehpad, at=at(9, 23, 50))
    first = _event("message.read", structure=world.ehpad, at=at(10, 0, 10))  # 9 Nov in UTC
    last = _event("message.read", structure=world.ehpad, at=at(12, 23, 50))
    _event("message.read", structure=world.ehpad, at=at(13, 0, 5))

    found = _journal(world, start=date(2026, 11, 10), end=date(2026, 11, 12))
    since = _journal(world, start=date(2026, 11, 12))
    until = _journal(world, end=date(2026, 11, 10))

    assert [e.pk for e in found] == [last.pk, first.pk]
    assert len(since) == 2 and len(until) == 2


def test_filter_by_result(world: World) -> None:
    ok = _event("message.read", structure=world.ehpad, box=world.soins)
    failed = _event("message.delete", structure=world.ehpad, box=world.soins, success=False,
                    error_code="mailbox_suspended")  # fmt: skip

    assert [e.pk for e in _journal(world, result="failure")] == [failed.pk]
    assert [e.pk for e in _journal(world, result="success")] == [ok.pk]
    assert len(_journal(world, result="")) == 2


def test_filter_by_message_id_finds_it_in_reads_lists_and_relay_traces(world: World) -> None:
    mid = "<1.test@chu-exemple.mssante.fr>"
    read = _event("message.read", structure=world.ehpad, box=world.soins,
                  details={"folder": "INBOX", "uid": 1, "message_id": mid})  # fmt: skip
    move = _event("message.move", structure=world.ehpad, box=world.soins,
                  details={"uids": [1, 2], "message_ids": ["<2.test@x.fr>", mid]})  # fmt: skip
    relay = _event("relay.relayed", structure=world.ehpad, actor_label="relais",
                   target_type="message", target_id=mid)  # fmt: skip
    _event("message.flag", structure=world.ehpad, box=world.soins,
           details={"message_ids": ["<11.test@chu-exemple.mssante.fr>"]})  # fmt: skip
    _event("message.read", structure=world.ime, box=world.ime_box, details={"message_id": mid})

    with_brackets = _journal(world, message_id=mid)
    without = _journal(world, message_id=" 1.test@chu-exemple.mssante.fr ")

    assert {e.pk for e in with_brackets} == {read.pk, move.pk, relay.pk}
    assert {e.pk for e in without} == {read.pk, move.pk, relay.pk}


def _csv(world: World, **filters: object) -> list[list[str]]:
    events = journal_events(
        structure_id=world.ehpad.pk,
        mailbox_ids=[world.soins],
        flt=JournalFilter(**filters),  # type: ignore[arg-type]
    )
    return list(journal_csv_rows(events, mailboxes={world.soins: "soins@ehpad.mssante.fr"}))


def test_csv_has_a_french_header_and_paris_dates(world: World) -> None:
    _event(
        "message.read",
        structure=world.ehpad,
        box=world.soins,
        actor=world.doctor,
        at=datetime(2026, 11, 16, 8, 30, 5, tzinfo=ZoneInfo("UTC")),
        details={"folder": "INBOX", "uid": 1, "message_id": "<1.test@x.fr>"},
    )

    header, row = _csv(world)

    assert header == CSV_HEADER
    assert header[:3] == ["Date", "Heure", "Auteur"] and header[-1] == "Détails"
    assert row == [
        "16/11/2026",
        "09:30:05",
        "Claire Martin",
        world.doctor.national_id,
        "Lecture d'un message",
        "soins@ehpad.mssante.fr",
        "Succès",
        "",
        "",
        "folder=INBOX message_id=<1.test@x.fr> uid=1",
    ]


def test_csv_neutralises_spreadsheet_formulas(world: World) -> None:
    _event(
        "message.delete",
        structure=world.ehpad,
        actor_label='=HYPERLINK("http://pirate.example","clic")',
        success=False,
        error_code="@SUM(A1)",
        details={"-x": "+1"},
    )

    _header, row = _csv(world)

    assert row[2] == '\'=HYPERLINK("http://pirate.example","clic")'
    assert row[6] == "Échec"
    assert row[7] == "'@SUM(A1)"
    assert row[9] == "'-x=+1"
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)


def test_purge_deletes_only_traces_past_retention_and_traces_itself(
    world: World, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.AUDIT_RETENTION_DAYS = 30
    monkeypatch.setattr("accounts.services.AUDIT_PURGE_BATCH", 2)  # several batches
    now = timezone.now()
    old = [
        _event("message.read", structure=world.ehpad, at=now - timedelta(days=days))
        for days in (31, 90, 200, 400, 500)
    ]
    kept = [
        _event("message.read", structure=world.ehpad, at=now - timedelta(days=29)),
        _event("message.read", structure=world.ehpad),
    ]

    deleted = audit_purge()

    assert deleted == len(old)
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old]).exists()
    assert AuditEvent.objects.filter(pk__in=[e.pk for e in kept]).count() == 2
    trace = AuditEvent.objects.get(action="audit.purged")
    assert trace.details["deleted"] == 5 and trace.details["retention_days"] == 30
    cutoff = datetime.fromisoformat(trace.details["cutoff"])
    assert abs(cutoff - (now - timedelta(days=30))) < timedelta(minutes=1)

    assert purge_audit() == 0  # the daily task: a second run finds nothing, keeps the trace
    assert AuditEvent.objects.filter(action="audit.purged").count() == 2


def test_purge_with_an_explicit_age(world: World) -> None:
    now = timezone.now()
    older = _event("message.read", structure=world.ehpad, at=now - timedelta(days=10))
    newer = _event("message.read", structure=world.ehpad, at=now - timedelta(days=5))

    assert audit_purge(older_than_days=7) == 1
    assert not AuditEvent.objects.filter(pk=older.pk).exists()
    assert AuditEvent.objects.filter(pk=newer.pk).exists()


def test_details_in_french_words_and_never_content(world: World) -> None:
    from accounts.journal import detail_lines

    move = _event(
        "message.move",
        box=world.soins,
        details={"folder": "INBOX", "uids": [4, 5, 6], "target": "Archives"},
    )
    assert detail_lines(move) == ["Dossier : Boîte de réception", "Vers le dossier : Archives",
                                  "3 messages"]  # fmt: skip
    sent = _event(
        "message.sent",
        box=world.soins,
        details={"message_id": "<a@b>", "recipients": 2, "patients": 1, "size": 2048,
                 "attachments": 1, "health_documents": ["11488-4"], "body": "secret"},
    )  # fmt: skip
    lines = detail_lines(sent)
    assert lines == ["2 destinataires", "1 patient concerné", "1 pièce jointe",
                     "1 document de santé", "Taille : 2\xa0Ko"]  # fmt: skip
    assert not any("secret" in line for line in lines)
    failed = _event(
        "software.login_failed", box=world.soins, success=False, error_code="token_expired",
        details={"service": "imap", "reason": "token_expired"},
    )  # fmt: skip
    assert detail_lines(failed) == ["Service : IMAP", "Motif de l'échec : jeton expiré"]
    odd = _event("mailbox.closed", box=world.soins, success=False, error_code="x_42")
    assert detail_lines(odd) == ["Motif de l'échec : x_42"]
    grant = _event(
        "mailbox.access_granted", box=world.claire,
        details={"kind": "delegate", "organise": True, "send": True, "manage": False,
                 "until": "2026-12-01T00:00:00+00:00"},
    )  # fmt: skip
    assert detail_lines(grant) == ["Accès : délégation", "Droits : lire, classer, envoyer",
                                   "Jusqu'au 1er décembre 2026"]  # fmt: skip
