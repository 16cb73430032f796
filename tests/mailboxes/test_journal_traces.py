"""Every read of content is traced (the body frame, drafts, export downloads), publication
traces reach the structure's journal, the journal names the message and the person of each
trace, and a message page leads to that message's history for those who may see it. Real
Dovecot, real HTTP (Django's test client and a local FHIR endpoint)."""

from __future__ import annotations

import email
import html
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.journal import message_history
from accounts.models import AuditEvent, Membership, Structure, User
from mailboxes.access import access_mailbox
from mailboxes.console.services.export import mailbox_export
from mailboxes.console.services.publication import publication_plan, publication_send
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.models import Mailbox
from mailboxes.webmail.services.compose import Draft
from mailboxes.webmail.services.drafts import draft_save
from tests.factories import (
    grant,
    make_mailbox,
    make_membership,
    make_message,
    make_professional,
    make_structure,
)
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.pgp import Keys

pytestmark = pytest.mark.django_db


@dataclass
class Ehpad:
    structure: Structure
    director: User  # a member of soins too
    doctor: User  # holds claire.martin@, which the director may not read
    nurse: User  # a member of soins
    per: Mailbox
    soins: Mailbox


@pytest.fixture
def ehpad(dovecot) -> Ehpad:
    structure = make_structure()
    director = make_professional(first_name="Marc", last_name="Lefebvre")
    doctor = make_professional(first_name="Claire", last_name="Martin")
    nurse = make_professional(first_name="Julien", last_name="Bernard", profession="60")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    per = make_mailbox(structure=structure, owner=doctor)
    soins = make_mailbox(
        structure=structure, kind="ORG", local_part="soins", responsible=director,
        display_name="Soins",
    )  # fmt: skip
    grant(soins, director, can_send=True)
    grant(soins, nurse, can_send=True)
    wait_provisioned(per.address, soins.address)
    return Ehpad(structure, director, doctor, nurse, per, soins)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time())
    session.save()
    return client


def text(response: Any) -> str:
    return html.unescape(response.content.decode())


def _deliver(box: Mailbox, subject: str) -> str:
    raw = make_message(to=box.address, subject=subject)
    deliver(box.address, raw)
    return str(email.message_from_bytes(raw)["Message-ID"])


def _journal(client: Client, structure: Structure, **query: str) -> str:
    response = client.get(reverse("console:journal", args=[structure.public_id]), query)
    assert response.status_code == 200
    return text(response)


# --- Reads of content ----------------------------------------------------------------------------


def test_the_body_frame_is_traced_even_when_fetched_without_the_message_page(
    ehpad: Ehpad,
) -> None:
    mid = _deliver(ehpad.soins, "Relève de nuit")
    url = reverse("mailboxes:message_body", args=[ehpad.soins.public_id, 1])

    response = signed_in(ehpad.nurse).get(url, {"dossier": "INBOX"})

    assert response.status_code == 200
    trace = AuditEvent.objects.get(action="message.body_read")
    assert trace.actor == ehpad.nurse and trace.result == "success"
    assert trace.target_id == str(ehpad.soins.public_id)
    assert trace.details["message_id"] == mid
    assert "Relève" not in json.dumps(trace.details, ensure_ascii=False)
    history = message_history(mailbox_id=str(ehpad.soins.public_id), message_id=mid)
    assert [(e.action, e.actor) for e in history] == [("message.body_read", ehpad.nurse)]


def test_a_missing_body_is_traced_as_a_failed_read(ehpad: Ehpad) -> None:
    url = reverse("mailboxes:message_body", args=[ehpad.soins.public_id, 42])

    assert signed_in(ehpad.nurse).get(url, {"dossier": "INBOX"}).status_code == 404

    trace = AuditEvent.objects.get(action="message.body_read")
    assert (trace.result, trace.error_code, trace.actor) == ("failure", "not_found", ehpad.nurse)


def test_opening_a_draft_is_traced(ehpad: Ehpad) -> None:
    as_doctor = access_mailbox(ehpad.doctor, ehpad.per.public_id)
    draft = Draft(to=["paul.durand@chu-exemple.mssante.fr"], subject="Courrier de sortie",
                  body="Patient sorti ce jour.")  # fmt: skip
    uid = draft_save(grant=as_doctor, actor=ehpad.doctor, draft=draft, token="a" * 32)
    saved = AuditEvent.objects.get(action="message.draft_saved")

    page = signed_in(ehpad.doctor).get(
        reverse("mailboxes:compose", args=[ehpad.per.public_id]), {"brouillon": uid}
    )

    assert page.status_code == 200 and "Patient sorti ce jour." in text(page)
    opened = AuditEvent.objects.get(action="message.draft_opened")
    assert opened.actor == ehpad.doctor and opened.result == "success"
    assert opened.details["purpose"] == "resume" and opened.details["uid"] == uid
    assert opened.details["message_id"] == saved.details["message_id"] != ""
    history = message_history(
        mailbox_id=str(ehpad.per.public_id), message_id=saved.details["message_id"]
    )
    assert [e.action for e in history] == ["message.draft_saved", "message.draft_opened"]


def test_downloading_an_export_is_traced(
    ehpad: Ehpad, keys: Keys, settings: Any, tmp_path: Path
) -> None:
    settings.EXPORT_DIR = tmp_path / "exports"
    recovery_key_set(structure=ehpad.structure, armored=keys.public, actor=None)
    _deliver(ehpad.soins, "Bilan")
    export = mailbox_export(mailbox=ehpad.soins, actor=ehpad.director)
    url = reverse("console:export_download", args=[ehpad.structure.public_id, export.public_id])

    response = signed_in(ehpad.director).get(url)

    assert response.status_code == 200
    assert b"".join(response.streaming_content)  # type: ignore[attr-defined]
    trace = AuditEvent.objects.get(action="mailbox.export_downloaded")
    assert trace.actor == ehpad.director and trace.target_id == str(ehpad.soins.public_id)
    assert trace.details["export"] == str(export.public_id)
    journal = _journal(signed_in(ehpad.director), ehpad.structure)
    assert "Téléchargement d'un export de la BAL" in journal


# --- Publication traces reach the journal -------------------------------------------------------


class _Fhir(BaseHTTPRequestHandler):
    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fhir(settings: Any) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ANNUAIRE_PUBLICATION_URL = f"http://127.0.0.1:{server.server_port}/fhir"
    yield settings.ANNUAIRE_PUBLICATION_URL
    server.shutdown()
    server.server_close()


def test_publication_traces_reach_the_structures_journal(ehpad: Ehpad, fhir: str) -> None:
    sent = publication_send(publications=publication_plan(structures=[ehpad.structure]))
    assert sent and all(s.status == 200 for s in sent)

    page = _journal(signed_in(ehpad.director), ehpad.structure, action="annuaire.bal_published")

    assert page.count("Publication de la BAL dans l'annuaire") >= 2  # one row per BAL
    assert ehpad.soins.address in page and ehpad.per.address in page
    trace = AuditEvent.objects.get(action="annuaire.bal_published", target_id=ehpad.soins.public_id)
    assert trace.structure_id == ehpad.structure.pk


# --- The journal's detail column and the message's history -----------------------------------


def _row(page: str, needle: str) -> str:
    rows = re.findall(r"<tr>.*?</tr>", page, flags=re.S)
    found = [r for r in rows if needle in r]
    assert found, f"no row with {needle!r}"
    return found[0]


def test_the_detail_names_the_message_with_its_subject_only_where_the_reader_may_read(
    ehpad: Ehpad,
) -> None:
    on_soins = _deliver(ehpad.soins, "Relève de nuit")
    on_per = _deliver(ehpad.per, "Résultats de Mme Dupont")
    signed_in(ehpad.nurse).get(
        reverse("mailboxes:message", args=[ehpad.soins.public_id, 1]), {"dossier": "INBOX"}
    )
    signed_in(ehpad.doctor).get(
        reverse("mailboxes:message", args=[ehpad.per.public_id, 1]), {"dossier": "INBOX"}
    )

    page = _journal(signed_in(ehpad.director), ehpad.structure, action="message.read")

    soins_row = _row(page, on_soins)
    assert "Julien Bernard" in soins_row and "« Relève de nuit »" in soins_row
    per_row = _row(page, on_per)
    assert "Claire Martin" in per_row
    assert "Dupont" not in page  # the director may not read the doctor's BAL


def test_the_detail_names_the_person_a_right_was_given_to(ehpad: Ehpad) -> None:
    page = _journal(signed_in(ehpad.director), ehpad.structure, action="mailbox.access_granted")

    row = _row(page, "Julien Bernard")
    assert "Personne : Julien Bernard" in row
    assert str(ehpad.nurse.national_id) in row


def test_a_message_page_leads_to_its_history_for_those_who_may_see_the_journal(
    ehpad: Ehpad,
) -> None:
    mid = _deliver(ehpad.soins, "Relève de nuit")
    url = reverse("mailboxes:message", args=[ehpad.soins.public_id, 1])
    nurse_page = text(signed_in(ehpad.nurse).get(url, {"dossier": "INBOX"}))
    director = signed_in(ehpad.director)

    director_page = text(director.get(url, {"dossier": "INBOX"}))

    assert "Historique de ce message" not in nurse_page
    link = re.search(r'href="([^"]*)">Historique de ce message', director_page)
    assert link is not None
    history = text(director.get(link.group(1)))
    assert "Historique du message" in history
    story = history.split("Historique du message", 1)[1].split("</ol>", 1)[0]
    assert "Julien Bernard" in story and "Marc Lefebvre" in story
    assert "Lecture d'un message" in story
    assert mid in history
