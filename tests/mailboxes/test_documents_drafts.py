"""A health document kept in a draft (issue 20 leftovers): « Enregistrer le brouillon » with a
health document keeps the PDF and the fields as typed; reopening the draft shows them; sending
from the draft builds and sends the document; a refused send keeps it too."""

from __future__ import annotations

import email
import email.policy
import html
import re
from email.message import EmailMessage

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from mailboxes.documents.xdm import read_archive
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store.imap import DRAFTS, MailStore
from mailboxes.transport.relay import message_relay
from tests.mailboxes.test_documents_send import _form, _inbox, two_boxes  # noqa: F401
from tests.mailboxes.xdm_build import tiny_pdf

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "d" * 32


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _compose_url(box: Mailbox) -> str:
    return reverse("mailboxes:compose", args=[box.public_id])


def _page(response) -> str:
    return html.unescape(response.content.decode())


def _drafts(box: Mailbox) -> list[EmailMessage]:
    with MailStore(box.address) as store:
        store.client.select_folder(DRAFTS, readonly=True)
        uids = store.client.search(["ALL"])
        fetched = store.client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    found = []
    for uid in uids:
        message = email.message_from_bytes(fetched[uid][b"BODY[]"], policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def _save_draft(user: User, box: Mailbox, to: str, **changes: object) -> int:
    payload = {"de": str(box.public_id), "a": to, "brouillon": TOKEN, "action": "brouillon"}
    response = _client(user).post(_compose_url(box), {**payload, **_form(**changes)})
    assert response.status_code == 302, _page(response)
    found = re.search(r"brouillon=(\d+)", response["Location"])
    assert found is not None
    return int(found.group(1))


def _relay_all() -> None:
    for spooled in OutboundMessage.objects.all():
        message_relay(public_id=str(spooled.public_id))


def _sent_document(other: Mailbox) -> tuple[EmailMessage, bytes]:
    _relay_all()
    received = _inbox(other)
    [archive] = [
        p.get_payload(decode=True)
        for p in received.iter_attachments()
        if p.get_filename() == "IHE_XDM.ZIP"
    ]
    assert isinstance(archive, bytes)
    return received, archive


def test_a_draft_keeps_the_pdf_and_the_fields_and_shows_them_again(two_boxes) -> None:  # noqa: F811
    doctor, box, _nurse, other = two_boxes
    uid = _save_draft(doctor, box, other.address, doc_nom="Pat-Trois Élise")

    [draft] = _drafts(box)
    parts = {p.get_filename(): p for p in draft.iter_attachments()}
    assert parts["dlu.pdf"].get_payload(decode=True) == tiny_pdf()
    assert str(parts["dlu.pdf"]["X-MSS-Portal-Document"]) == "pdf"
    assert "document-de-sante.json" in parts

    page = _page(_client(doctor).get(_compose_url(box), {"brouillon": uid}))
    assert "Joindre le document de santé enregistré avec le brouillon : dlu.pdf" in page
    assert re.search(r'name="doc_du_brouillon"[^>]* checked', page)
    assert 'value="2 79 03 51 215 189 89"' in page  # the INS as typed
    assert 'value="Pat-Trois Élise"' in page and 'value="Dominique"' in page
    assert 'value="2026-12-01"' in page and 'value="1979-03-28"' in page
    assert re.search(r'<option value="74207-2" selected>', page)
    assert re.search(r'name="doc_qualifiee"[^>]* checked', page)
    # The PDF of the document is not one of the message's ordinary attachments.
    assert "Pièces jointes du brouillon" not in page


def test_sending_from_the_draft_sends_the_document_and_removes_the_draft(two_boxes) -> None:  # noqa: F811
    doctor, box, _nurse, other = two_boxes
    uid = _save_draft(doctor, box, other.address)

    payload = {
        "de": str(box.public_id), "a": other.address, "brouillon": TOKEN,
        "brouillon_uid": str(uid), "doc_du_brouillon": "on", "action": "envoyer",
        **_form(doc_pdf=None),
    }  # fmt: skip
    response = _client(doctor).post(_compose_url(box), payload)

    assert response.status_code == 302, _page(response)
    received, archive = _sent_document(other)
    assert str(received["Subject"]).strip().startswith("XDM/1.0/DDM+Document de liaison d'urgence")
    assert str(received["X-MSS-CODECDA"]) == "74207-2" and str(received["X-MSS-INS"]) == "O"
    opened = read_archive(archive)
    assert opened.problems == []
    [patient] = opened.patients
    assert (patient.ins, patient.family) == ("279035121518989", "Pat-Trois")
    [doc] = opened.documents
    assert doc.cda is not None and doc.cda.embedded.startswith(b"%PDF-")
    assert not any(
        p.get_filename() == "document-de-sante.json" for p in received.iter_attachments()
    )
    assert _drafts(box) == []


def test_unticking_the_drafts_document_sends_the_message_without_it(two_boxes) -> None:  # noqa: F811
    doctor, box, _nurse, other = two_boxes
    uid = _save_draft(doctor, box, other.address)

    payload = {
        "de": str(box.public_id), "a": other.address, "brouillon": TOKEN,
        "brouillon_uid": str(uid), "action": "envoyer", "objet": "Sans le DLU",
        "corps": "Le DLU suivra.",
    }  # fmt: skip
    response = _client(doctor).post(_compose_url(box), payload)

    assert response.status_code == 302, _page(response)
    _relay_all()
    received = _inbox(other)
    assert str(received["Subject"]).strip() == "Sans le DLU" and received["X-MSS-CODECDA"] is None
    assert [p.get_filename() for p in received.iter_attachments()] == []


def test_a_refused_send_keeps_the_document_in_its_draft(two_boxes) -> None:  # noqa: F811
    doctor, box, _nurse, other = two_boxes
    client = _client(doctor)
    unknown = "personne@ehpad-les-tilleuls.mssante.fr"  # our domain, no such BAL
    payload = {"de": str(box.public_id), "a": unknown, "brouillon": TOKEN, "action": "envoyer"}

    refused = client.post(_compose_url(box), {**payload, **_form()})

    assert refused.status_code == 400
    page = _page(refused)
    assert "Aucune BAL de ce nom chez nous." in page
    assert "Joindre le document de santé enregistré avec le brouillon : dlu.pdf" in page
    found = re.search(r'name="brouillon_uid" value="(\d+)"', page)
    assert found is not None
    assert OutboundMessage.objects.count() == 0
    # The person corrects the address and sends: the document leaves with the message.
    again = {
        **payload, "a": other.address, "brouillon_uid": found.group(1),
        "doc_du_brouillon": "on", **_form(doc_pdf=None),
    }  # fmt: skip
    assert client.post(_compose_url(box), again).status_code == 302
    _received, archive = _sent_document(other)
    assert [d.type_code for d in read_archive(archive).documents] == ["74207-2"]


def test_the_drafts_fields_are_checked_again_before_sending(two_boxes) -> None:  # noqa: F811
    doctor, box, _nurse, other = two_boxes
    uid = _save_draft(doctor, box, other.address, doc_ins="2 79 03 51 215 189 88")  # bad key

    payload = {
        "de": str(box.public_id), "a": other.address, "brouillon": TOKEN,
        "brouillon_uid": str(uid), "doc_du_brouillon": "on", "action": "envoyer",
        **_form(doc_pdf=None, doc_ins="2 79 03 51 215 189 88"),
    }  # fmt: skip
    response = _client(doctor).post(_compose_url(box), payload)

    assert response.status_code == 400 and OutboundMessage.objects.count() == 0
    assert "Joindre le document de santé enregistré avec le brouillon" in _page(response)
