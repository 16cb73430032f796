"""A team BAL between shifts: who sent a message, who opened it, and who took it in charge
(« Je m'en occupe », « Terminé », « Rendre »), seen by the whole team, filtered, traced."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.test import Client

from accounts.models import AuditEvent, User
from mailboxes.models import Mailbox, MessageHandling
from mailboxes.store.imap import MailStore
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db


@dataclass
class Team:
    nurse: User
    doctor: User
    reader: User
    org: Mailbox
    per: Mailbox


@pytest.fixture
def team(dovecot) -> Team:
    ssiad = make_structure()
    nurse = make_professional(first_name="Julien", last_name="Bernard", profession="60")
    doctor = make_professional(first_name="Claire", last_name="Martin")
    reader = make_professional(first_name="Sophie", last_name="Petit", profession="")
    org = make_mailbox(
        structure=ssiad, kind="ORG", local_part="soins", responsible=doctor, display_name="Soins"
    )
    per = make_mailbox(structure=ssiad, local_part="claire.martin", owner=doctor)
    grant(org, nurse, can_organise=True, can_send=True)
    grant(org, doctor, can_organise=True, can_send=True, can_manage=True)
    grant(org, reader)  # reads only
    wait_provisioned(org.address, per.address)
    return Team(nurse, doctor, reader, org, per)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _uid(address: str, subject: str) -> int:
    with MailStore(address) as store:
        page = store.page("INBOX")
    return next(m.uid for m in page.messages if m.subject == subject)


def _subjects(client: Client, box: Mailbox, query: str = "") -> list[str]:
    html = client.get(f"/bal/{box.public_id}/?dossier=INBOX{query}").content.decode()
    return re.findall(
        r'<td class="subject"><a href="[^"]*">(?:<span[^>]*>[^<]*</span> )?([^<]*)</a>', html
    )


def _step(client: Client, box: Mailbox, uid: int, step: str):
    return client.post(
        f"/bal/{box.public_id}/messages/{uid}/prise-en-charge/",
        {"dossier": "INBOX", "etape": step},
        follow=True,
    )


def test_a_message_taken_in_charge_is_seen_by_the_team_filtered_and_traced(team: Team) -> None:
    deliver(team.org.address, make_message(subject="Passage de 18 h : M. Durand"))
    deliver(team.org.address, make_message(subject="Ordonnance Mme Leroy"))
    uid = _uid(team.org.address, "Passage de 18 h : M. Durand")
    nurse, doctor = _client(team.nurse), _client(team.doctor)

    page = nurse.get(f"/bal/{team.org.public_id}/messages/{uid}/?dossier=INBOX").content.decode()
    assert "À traiter : personne ne l'a encore pris en charge." in page
    answer = _step(nurse, team.org, uid, "prendre")

    assert "Vous avez pris ce message en charge" in answer.content.decode()
    # The doctor of the next shift sees who and when, on the list and on the message.
    listing = doctor.get(f"/bal/{team.org.public_id}/?dossier=INBOX").content.decode()
    assert re.search(r"Pris en charge par Julien Bernard le \d\d/\d\d à \d\d:\d\d", listing)
    message = doctor.get(
        f"/bal/{team.org.public_id}/messages/{uid}/?dossier=INBOX"
    ).content.decode()
    assert "Pris en charge par Julien Bernard" in message
    assert re.search(r"Ouvert par Julien Bernard \(\d\d/\d\d à \d\d:\d\d\), Claire Martin", message)
    # The filters: « à traiter » leaves it out; « pris en charge par moi » is the nurse's only.
    assert _subjects(doctor, team.org, "&suivi=a-traiter") == ["Ordonnance Mme Leroy"]
    assert _subjects(nurse, team.org, "&suivi=moi") == ["Passage de 18 h : M. Durand"]
    assert _subjects(doctor, team.org, "&suivi=moi") == []

    _step(nurse, team.org, uid, "terminer")

    assert _subjects(doctor, team.org, "&suivi=termines") == ["Passage de 18 h : M. Durand"]
    assert _subjects(nurse, team.org, "&suivi=moi") == []
    row = MessageHandling.objects.get(mailbox=team.org)
    assert (row.state, row.by) == ("done", team.nurse)
    traces = AuditEvent.objects.filter(action__in=["message.taken", "message.done"]).order_by("id")
    assert [(t.action, t.actor, t.result) for t in traces] == [
        ("message.taken", team.nurse, "success"),
        ("message.done", team.nurse, "success"),
    ]
    assert traces[0].details["message_id"] == row.message_id
    assert "Passage" not in str(traces[0].details)  # never content in the journal


def test_taking_over_a_colleagues_message_names_them_in_the_journal(team: Team) -> None:
    deliver(team.org.address, make_message(subject="Pansement à refaire"))
    uid = _uid(team.org.address, "Pansement à refaire")
    _step(_client(team.nurse), team.org, uid, "prendre")

    page = _step(_client(team.doctor), team.org, uid, "prendre").content.decode()

    assert "Pris en charge par Claire Martin" in page
    trace = AuditEvent.objects.filter(action="message.taken", actor=team.doctor).get()
    assert trace.details["previous_by"] == "Julien Bernard"
    _step(_client(team.doctor), team.org, uid, "rendre")
    assert not MessageHandling.objects.exists()
    assert _subjects(_client(team.nurse), team.org, "&suivi=a-traiter") == ["Pansement à refaire"]


def test_who_only_reads_cannot_take_in_charge_and_nothing_changes(team: Team) -> None:
    deliver(team.org.address, make_message(subject="Résultats"))
    uid = _uid(team.org.address, "Résultats")
    reader = _client(team.reader)

    page = reader.get(f"/bal/{team.org.public_id}/messages/{uid}/?dossier=INBOX").content.decode()
    answer = reader.post(
        f"/bal/{team.org.public_id}/messages/{uid}/prise-en-charge/",
        {"dossier": "INBOX", "etape": "prendre"},
    )

    assert "Je m'en occupe" not in page
    assert answer.status_code == 403
    assert not MessageHandling.objects.exists()
    with MailStore(team.org.address) as store:
        assert not store.page("INBOX").messages[0].taken
    assert AuditEvent.objects.get(action="message.taken").result == "failure"


def test_a_personal_bal_has_no_handover(team: Team) -> None:
    deliver(team.per.address, make_message(subject="Perso"))
    uid = _uid(team.per.address, "Perso")
    doctor = _client(team.doctor)

    page = doctor.get(f"/bal/{team.per.public_id}/messages/{uid}/?dossier=INBOX").content.decode()
    answer = _step(doctor, team.per, uid, "prendre").content.decode()

    assert "Je m'en occupe" not in page
    assert (
        "La prise en charge n&#x27;existe que pour les messages d&#x27;une BAL d&#x27;équipe"
        in answer
    )
    assert not MessageHandling.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        {"dossier": "INBOX", "etape": "supprimer"},
        {"dossier": "INBOX"},
        {"dossier": "INBOX\r\nA1 LOGOUT", "etape": "prendre"},
    ],
    ids=["unknown-step", "no-step", "crlf-folder"],
)
def test_garbage_steps_are_refused_and_change_nothing(team: Team, data: dict[str, str]) -> None:
    deliver(team.org.address, make_message(subject="X"))
    uid = _uid(team.org.address, "X")
    answer = _client(team.nurse).post(
        f"/bal/{team.org.public_id}/messages/{uid}/prise-en-charge/", data
    )
    assert answer.status_code == 400
    assert not MessageHandling.objects.exists()


def test_a_missing_message_is_404(team: Team) -> None:
    answer = _client(team.nurse).post(
        f"/bal/{team.org.public_id}/messages/999/prise-en-charge/",
        {"dossier": "INBOX", "etape": "prendre"},
    )
    assert answer.status_code == 404
