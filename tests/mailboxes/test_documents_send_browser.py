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
