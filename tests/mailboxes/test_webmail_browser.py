"""Reading mail in Chromium: the HTML body renders inside the sandboxed iframe, scripts never
run, remote images are not fetched until asked for."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Dialog, Page, Request, expect

from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)

HTML = """From: Centre d'imagerie <imagerie@cir.mssante.fr>\r
To: claire.martin@ehpad-les-tilleuls.mssante.fr\r
Subject: Compte rendu IRM\r
MIME-Version: 1.0\r
Content-Type: text/html; charset=utf-8\r
\r
<h2>Compte rendu d'IRM</h2><p>Examen du <b>20/11/2026</b> : pas d'anomalie.</p>\r
<img src="https://traceur.exemple/p.gif" alt="pixel"><script>alert("script")</script>\r
<a href="javascript:alert('lien')">piège</a>\r
"""


def test_html_mail_in_a_real_browser(dovecot, live_server, page: Page) -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    deliver(box.address, HTML.encode())
    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    dialogs: list[str] = []
    remote: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_request(request: Request) -> None:
        if "traceur.exemple" in request.url:
            remote.append(request.url)

    page.on("dialog", on_dialog)
    page.on("request", on_request)

    page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX")
    page.get_by_role("link", name=re.compile("Compte rendu IRM")).click()

    body = page.frame_locator("iframe.message-body")
    expect(body.get_by_role("heading", name="Compte rendu d'IRM")).to_be_visible()
    expect(body.get_by_text("pas d'anomalie")).to_be_visible()
    expect(page.get_by_text("1 image distante a été bloquée")).to_be_visible()
    page.wait_for_timeout(300)
    assert dialogs == [] and remote == []

    page.get_by_role("link", name="Afficher les images").click()
    expect(
        page.frame_locator("iframe.message-body").get_by_role("heading", name="Compte rendu d'IRM")
    ).to_be_visible()
    page.wait_for_timeout(300)
    assert dialogs == []
    assert any(
        "traceur.exemple/p.gif" in url for url in remote
    )  # asked for: now fetched (and fails offline)


LINKS = """From: Centre d'imagerie <imagerie@cir.mssante.fr>\r
To: claire.martin@ehpad-les-tilleuls.mssante.fr\r
Subject: Liens\r
MIME-Version: 1.0\r
Content-Type: text/html; charset=utf-8\r
\r
<p id="haut"><a href="/bal/">Portail</a> <a href="#haut">Haut</a>\r
<a href="//attacker.invalid/x">Sans schéma</a> <a href="https:bal/">Relatif</a>\r
<a href="https://exemple.invalid/reco">Recommandation</a></p>\r
"""


def test_only_absolute_links_open_and_in_a_new_tab(dovecot, live_server, page: Page) -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    deliver(box.address, LINKS.encode())
    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    page.context.route(
        re.compile(r"^https?://(exemple|attacker)\.invalid/.*"),
        lambda route: route.fulfill(body="page externe", content_type="text/plain"),
    )
    popups: list[Page] = []
    page.context.on("page", lambda popup: popups.append(popup))
    message_url = f"{live_server.url}/bal/{box.public_id}/messages/1/?dossier=INBOX"
    page.goto(message_url)
    body = page.frame_locator("iframe.message-body")

    for name in ("Portail", "Haut", "Sans schéma", "Relatif"):
        body.get_by_text(name).click()
    page.wait_for_timeout(500)
    assert popups == []  # relative and fragment links lead nowhere, no portal page opens
    assert page.url == message_url
    assert page.frames[1].url.endswith("/messages/1/contenu/?dossier=INBOX")

    with page.context.expect_page() as opened:
        body.get_by_role("link", name="Recommandation").click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == "https://exemple.invalid/reco"
    assert tab.evaluate("window.opener") is None
    assert page.url == message_url  # in a new tab: the message stays open


def test_new_mail_appears_without_reload_and_the_tab_title_counts_it(
    dovecot, live_server, page: Page, settings
) -> None:
    settings.WEBMAIL_POLL_SECONDS = 1
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    deliver(box.address, HTML.encode())
    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX")
    expect(page).to_have_title(re.compile(r"^Boîte de réception \(1\) · "))
    page.get_by_role("checkbox").first.check()  # a selection in progress is never swapped away

    deliver(box.address, HTML.replace("Compte rendu IRM", "Résultats de biologie").encode())

    expect(page.get_by_text("1 nouveau message")).to_be_visible(timeout=10_000)
    expect(page).to_have_title(re.compile(r"^Boîte de réception \(2\) · "))
    assert page.get_by_role("checkbox").first.is_checked()
    page.get_by_role("link", name="Afficher", exact=True).click()
    expect(page.get_by_role("link", name=re.compile("Résultats de biologie"))).to_be_visible()
