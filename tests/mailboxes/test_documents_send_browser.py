"""Sending a health document in Chromium: « Joindre un document de santé » in compose, the
PDF chosen from disk, the patient and the type typed; the Sent copy's page shows the panel our
reader builds from the archive we produced."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from mailboxes.models import OutboundMessage
from mailboxes.store.imap import DRAFTS, MailStore
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.xdm_build import tiny_pdf

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_doctor_sends_a_dlu_from_compose(
    dovecot, live_server, page: Page, tmp_path: Path
) -> None:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    colleague = make_mailbox(
        structure=box.structure, owner=make_professional(), local_part="paul.roux"
    )
    wait_provisioned(box.address, colleague.address)
    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    pdf = tmp_path / "dlu-mme-pat-trois.pdf"
    pdf.write_bytes(tiny_pdf("DLU"))

    page.goto(f"{live_server.url}/bal/{box.public_id}/ecrire/")
    page.get_by_role("textbox", name="À", exact=True).fill(colleague.address)
    page.get_by_label("Message", exact=True).fill(
        "Le DLU de Mme Pat-Trois, transférée aux urgences."
    )
    page.get_by_text("Joindre un document de santé").click()
    page.get_by_label("Document (PDF)").set_input_files(pdf)
    page.get_by_label("Type de document").select_option("74207-2")
    page.get_by_label("Date de l'acte").fill("2026-12-01")
    page.get_by_label("Matricule INS (patient concerné)").fill("2 79 03 51 215 189 89")
    page.get_by_label("Nom de naissance", exact=True).fill("Pat-Trois")
    page.get_by_label("Premier prénom de naissance").fill("Dominique")
    page.get_by_label("Date de naissance", exact=True).fill("1979-03-28")
    page.get_by_label("Sexe").select_option("F")
    page.get_by_label("Identité qualifiée").check()
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.get_by_text("Message envoyé.")).to_be_visible()
    assert OutboundMessage.objects.filter(mailbox=box).count() == 1

    # The Sent copy: subject without its XDM prefix, the panel from our own archive.
    row = page.get_by_role("link", name="Document de liaison d'urgence PAT-TROIS Dominique")
    expect(row.first).to_be_visible()
    row.first.click()
    expect(page.get_by_role("heading", level=1)).not_to_contain_text("XDM/1.0/DDM")
    panel = page.get_by_role("region", name="Documents de santé")
    expect(panel.get_by_text("279035121518989 (INS-NIR de test)")).to_be_visible()
    expect(panel.get_by_text("INS qualifiée annoncée (O)")).to_be_visible()
    expect(panel.get_by_text("Empreinte et taille conformes")).to_be_visible()
    with page.expect_response(lambda r: "/documents/1/pdf/" in r.url) as answered:
        panel.get_by_role("link", name="Afficher").first.click()
    served = answered.value
    assert served.status == 200 and served.headers["content-type"] == "application/pdf"
    assert errors == []


def test_a_document_saved_in_a_draft_is_shown_again_and_sent_from_it(
    dovecot, live_server, page: Page, tmp_path: Path
) -> None:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    colleague = make_mailbox(
        structure=box.structure, owner=make_professional(), local_part="paul.roux"
    )
    wait_provisioned(box.address, colleague.address)
    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    pdf = tmp_path / "dlu-mme-pat-trois.pdf"
    pdf.write_bytes(tiny_pdf("DLU"))

    page.goto(f"{live_server.url}/bal/{box.public_id}/ecrire/")
    page.get_by_role("textbox", name="À", exact=True).fill(colleague.address)
    page.get_by_text("Joindre un document de santé").click()
    page.get_by_label("Document (PDF)").set_input_files(pdf)
    page.get_by_label("Type de document").select_option("74207-2")
    page.get_by_label("Date de l'acte").fill("2026-12-01")
    page.get_by_label("Matricule INS (patient concerné)").fill("2 79 03 51 215 189 89")
    page.get_by_label("Nom de naissance", exact=True).fill("Pat-Trois")
    page.get_by_label("Premier prénom de naissance").fill("Dominique")
    page.get_by_label("Date de naissance", exact=True).fill("1979-03-28")
    page.get_by_label("Sexe").select_option("F")
    page.get_by_label("Identité qualifiée").check()
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    expect(page.get_by_text("Brouillon enregistré dans le dossier Brouillons.")).to_be_visible()

    # The draft reopened: the PDF kept, every field as typed.
    kept = page.get_by_label("Joindre le document de santé enregistré avec le brouillon")
    expect(kept).to_be_checked()
    expect(page.get_by_text("dlu-mme-pat-trois.pdf")).to_be_visible()
    expect(page.get_by_label("Matricule INS (patient concerné)")).to_have_value(
        "2 79 03 51 215 189 89"
    )
    expect(page.get_by_label("Nom de naissance", exact=True)).to_have_value("Pat-Trois")
    expect(page.get_by_label("Type de document")).to_have_value("74207-2")
    expect(page.get_by_label("Date de l'acte")).to_have_value("2026-12-01")
    expect(page.get_by_label("Identité qualifiée")).to_be_checked()

    # Sent from the draft, no subject typed and no question asked: the document names it.
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.get_by_text("Message envoyé.")).to_be_visible()
    assert OutboundMessage.objects.filter(mailbox=box).count() == 1
    row = page.get_by_role("link", name="Document de liaison d'urgence PAT-TROIS Dominique")
    row.first.click()
    panel = page.get_by_role("region", name="Documents de santé")
    expect(panel.get_by_text("279035121518989 (INS-NIR de test)")).to_be_visible()
    expect(panel.get_by_text("Empreinte et taille conformes")).to_be_visible()
    with MailStore(box.address) as store:  # the draft went with the send
        store.client.select_folder(DRAFTS, readonly=True)
        assert store.client.search(["ALL"]) == []
    assert errors == []
