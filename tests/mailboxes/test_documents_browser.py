"""Health documents in Chromium: the panel on the message page, the structured DLU rendered
as sections, the level-1 PDF served into its frame from our origin."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, Response, expect

from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.xdm_build import DLU, LEVEL1, mail_with_archive, sample, xdm

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_panel_and_both_documents_in_a_real_browser(dovecot, live_server, page: Page) -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    zipped = xdm([("DOC0001.XML", sample(LEVEL1)), ("DOC0002.XML", sample(DLU))])
    deliver(box.address, mail_with_archive(zipped, to=box.address))
    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/bal/{box.public_id}/messages/1/?dossier=INBOX")

    panel = page.get_by_role("region", name="Documents de santé")
    expect(panel).to_be_visible()
    expect(panel.get_by_text("279035121518989 (INS-NIR de test)")).to_be_visible()
    expect(panel.get_by_role("cell", name="Dossier de liaison d'urgence 74207-2")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).not_to_contain_text("XDM/1.0/DDM")

    # The structured DLU: its sections as headings and tables of our page.
    panel.get_by_role("link", name="Afficher").nth(1).click()
    expect(page.get_by_role("heading", name="Constantes du patient")).to_be_visible()
    expect(page.get_by_role("cell", name="Service des urgences du CHU de Nanterre")).to_be_visible()

    # The level-1 CDA: its PDF loaded into the document page's frame, from our origin.
    page.go_back()
    with page.expect_response(lambda r: "/documents/1/pdf/" in r.url) as answered:
        panel.get_by_role("link", name="Afficher").first.click()
    pdf: Response = answered.value
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.url.startswith(live_server.url)
    expect(page.locator("iframe.document-pdf")).to_be_visible()
    assert errors == []
