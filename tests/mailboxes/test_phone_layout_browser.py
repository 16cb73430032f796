"""On a phone (390 x 844, issue 19): no webmail, console or operator page scrolls sideways.

Every page a persona reaches with GET under /bal/, /annuaire/, /console/ and /operateur/ is
opened in Chromium at phone width, with long content (a long subject, a long address), and the
document must be no wider than the viewport: wide tables scroll inside their own box or turn
into stacked rows, never the page. Each page is also photographed at desktop and phone size
into var/e2e-artifacts/phone/.

The routes come from tests/mailboxes/test_url_matrix.RULES (itself checked against the root
URLconf): a page added there without a decision here fails test_every_page_route_is_measured.
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, ViewportSize, expect

from accounts.models import User
from mailboxes.models import (
    AppCertificate,
    Mailbox,
    MailboxExport,
    MailboxJob,
    MailboxMonthlyUsage,
    OutboundMessage,
)
from mailboxes.transport.relay import Recipient, message_spool
from tests.browser import sign_in
from tests.factories import make_mailbox, make_message, make_professional
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.test_url_matrix import RULES
from tests.mailboxes.xdm_build import xdm
from tests.personas import make_cast

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "e2e-artifacts" / "phone"
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
LONG_SUBJECT = (
    "Compte rendu d'hospitalisation de Mme Marie-Thérèse Delacroix-Fontaine, service de "
    "médecine gériatrique, séjour du 12 au 19 novembre"
)

# Page -> the persona who opens it. "staff" is a professional of the operator's staff.
PAGES: dict[str, str] = {
    "bal/": "doctor",
    "bal/<uuid:public_id>/": "doctor",
    "bal/<uuid:public_id>/ecrire/": "doctor",
    "bal/<uuid:public_id>/signature/": "doctor",
    "bal/<uuid:public_id>/absence/": "doctor",
    "bal/<uuid:public_id>/delegations/": "doctor",
    "bal/<uuid:public_id>/corbeille/vider/": "doctor",
    "bal/<uuid:public_id>/dossiers/": "doctor",
    "bal/<uuid:public_id>/messages/<int:uid>/": "doctor",
    "bal/<uuid:public_id>/messages/<int:uid>/imprimer/": "doctor",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/": "doctor",
    "bal/<uuid:public_id>/logiciel/": "doctor",
    "annuaire/": "doctor",
    "console/": "director",
    "console/annuaire/": "director",
    "console/<uuid:structure_id>/": "director",
    "console/<uuid:structure_id>/bal/nouvelle/<slug:kind>/": "director",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/": "director",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/fermer/": "director",
    "console/<uuid:structure_id>/taches/<uuid:job_id>/": "director",
    "console/<uuid:structure_id>/documents-de-sante/": "director",
    "console/<uuid:structure_id>/personnes/": "director",
    "console/<uuid:structure_id>/cle/": "director",
    "console/<uuid:structure_id>/journal/": "director",
    "console/<uuid:structure_id>/indicateurs/": "director",
    "operateur/": "staff",
    "operateur/file/<uuid:message_id>/": "staff",
    "operateur/reception/": "staff",
    "operateur/confiance/": "staff",
    "operateur/annuaire/": "staff",
    "operateur/structures/": "staff",
    "operateur/structures/<uuid:structure_id>/": "staff",
}
# Routes under those prefixes that are not pages, and why.
NOT_PAGES = {
    "bal/selecteur/": "htmx fragment of the BAL switcher",
    "bal/ecrire/": "redirects to a BAL's compose page",
    "bal/console/annuaire/": "redirect to console/annuaire/",
    "bal/destinataires/suggestions/": "htmx fragment",
    "bal/destinataires/verifier/": "htmx fragment",
    "bal/<uuid:public_id>/nouveaux/": "htmx polling fragment",
    "bal/<uuid:public_id>/messages/<int:uid>/contenu/": "the sandboxed body inside the frame",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/": "a download",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/apercu/fichier/": "the file",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/apercu/": (
        "a frame sized to the viewport (test_reading_organising opens it)"
    ),
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/cda/": (
        "the CDA document itself, sandboxed"
    ),
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/pdf/": (
        "a PDF download"
    ),
    "annuaire/suggestions/": "htmx fragment",
    "console/<uuid:structure_id>/exports/<uuid:export_id>/": "a download",
    "console/<uuid:structure_id>/journal.csv": "CSV",
    "console/<uuid:structure_id>/indicateurs.csv": "CSV",
}
POST_ONLY = re.compile(
    r"(actions|annuler|accuse|prise-en-charge|retirer|accorder|relancer|abandonner|role|"
    r"modifier|droits|etat|notification|quota|exporter|certificats)/$"
)
SIGN_IN_PAGES = re.compile(r"^operateur/(connexion|deconnexion|double-authentification|reauth)")


def _world() -> tuple[dict[str, User], dict[str, Any]]:
    """The personas, with long content in every list: a message with a long subject and a
    health-document attachment, a finished export job, a message stuck in the queue."""
    cast = make_cast()
    staff = make_professional(first_name="Odile", last_name="Opératrice")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    wait_provisioned(cast.per.address, cast.soins.address)
    archive = base64.encodebytes(xdm()).decode()
    deliver(
        cast.per.address,
        (
            "From: Laboratoire d'analyses médicales du Grand Lyon "
            "<secretariat.laboratoire-analyses-medicales@laboratoire-grand-lyon.mssante.fr>\r\n"
            f"To: {cast.per.address}\r\nSubject: {LONG_SUBJECT}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\nRésultats en pièce jointe.\r\n--b\r\n"
            "Content-Type: application/zip\r\n"
            'Content-Disposition: attachment; filename="IHE_XDM.ZIP"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{archive}\r\n--b--\r\n"
        ).encode(),
    )
    deliver(cast.per.address, make_message(subject="Rendez-vous de contrôle"))
    export = MailboxExport.objects.create(
        mailbox=cast.soins, purpose="export", path="x", size=1, sha256="0" * 64, messages=0,
        folders=0, key_fingerprint="F" * 40,
    )  # fmt: skip
    job = MailboxJob.objects.create(
        mailbox=cast.soins, kind="export", state="termine", export=export
    )
    stuck = message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from=cast.per.address,
        recipients=[Recipient("secretariat.cardiologie-interventionnelle@chu-exemple.mssante.fr")],
        content=(
            f"From: {cast.per.address}\r\nTo: secretariat@chu-exemple.mssante.fr\r\n"
            f"Subject: {LONG_SUBJECT}\r\nMessage-ID: <long-1@ehpad-les-tilleuls.mssante.fr>"
            "\r\n\r\nBonjour\r\n"
        ).encode(),
        message_id="<long-1@ehpad-les-tilleuls.mssante.fr>",
    )
    people = {**cast.people(), "staff": staff}
    values = {
        "public_id": cast.per.public_id,
        "uid": 1,
        "index": 1,
        "doc": 1,
        "structure_id": cast.structure.public_id,
        "bal_id": cast.soins.public_id,
        "kind": "org",
        "job_id": job.public_id,
        "message_id": stuck.public_id,
    }
    return people, values


def _url(route: str, values: dict[str, Any]) -> str:
    url = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route)
    return url + ("?dossier=INBOX" if route.startswith("bal/<uuid:") else "")


def test_every_page_route_is_measured() -> None:
    prefixes = ("bal/", "annuaire/", "console/", "operateur/")
    routes = {r for r in RULES if r.startswith(prefixes) and not SIGN_IN_PAGES.match(r)} - {
        r for r in RULES if POST_ONLY.search(r)
    }
    assert routes == set(PAGES) | set(NOT_PAGES), (
        f"undecided {sorted(routes - set(PAGES) - set(NOT_PAGES))}; "
        f"stale {sorted((set(PAGES) | set(NOT_PAGES)) - routes)}"
    )


def _slug(route: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"<[^>]+>", "x", route)).strip("-") or "accueil"


@pytest.mark.parametrize("route", sorted(PAGES))
def test_nothing_scrolls_sideways_at_390px(
    route: str, dovecot: Any, live_server: Any, page: Page
) -> None:
    people, values = _world()
    persona = PAGES[route]
    sign_in(page, live_server.url, people[persona])
    url = live_server.url + _url(route, values)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page.set_viewport_size(DESKTOP)
    response = page.goto(url)
    assert response is not None and response.status == 200, (route, response and response.status)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ARTIFACTS / f"{_slug(route)}-desktop.png"), full_page=True)

    page.set_viewport_size(PHONE)
    page.goto(url)
    page.wait_for_load_state("networkidle")
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    page.screenshot(path=str(ARTIFACTS / f"{_slug(route)}-phone.png"), full_page=True)
    if widths[0] > widths[1]:
        culprits = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' +
                                 Math.round(e.getBoundingClientRect().right))"""
        )
        pytest.fail(f"{route}: {widths[0]} px wide at {widths[1]} px; widest: {culprits}")


def test_the_webmail_on_a_phone_folds_its_menus_and_lists_one_message_per_block(
    dovecot: Any, live_server: Any, page: Page
) -> None:
    people, values = _world()
    sign_in(page, live_server.url, people["doctor"])
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/bal/{values['public_id']}/?dossier=INBOX")

    # The BAL switcher and the folders are one menu, folded; so is the search.
    switcher = page.get_by_role("navigation", name="Changer de boîte aux lettres")
    expect(switcher).to_be_hidden()
    page.locator("summary", has_text="claire.martin@").click()
    expect(switcher).to_be_visible()
    expect(page.get_by_role("navigation", name="Dossiers")).to_be_visible()
    search = page.get_by_role("searchbox")
    expect(search).to_be_hidden()
    page.locator("summary", has_text="Rechercher").click()
    expect(search).to_be_visible()

    # One column: each message is a block holding sender, date and subject, the long subject
    # wrapping inside the screen; no column headers.
    row = page.locator("#message-list tbody tr", has_text="Compte rendu d'hospitalisation")
    box = row.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    sender = row.locator(".sender").bounding_box()
    subject = row.locator(".subject").bounding_box()
    assert sender and subject and subject["y"] > sender["y"]  # subject under the sender
    expect(page.locator("#message-list thead th").first).not_to_be_in_viewport()

    # The same page on a desktop: both menus open, the table has its headers.
    page.set_viewport_size(DESKTOP)
    page.goto(f"{live_server.url}/bal/{values['public_id']}/?dossier=INBOX")
    expect(switcher).to_be_visible()
    expect(page.get_by_role("searchbox")).to_be_visible()
    expect(page.get_by_role("columnheader", name="Objet")).to_be_visible()


def test_indicator_charts_stay_readable_on_a_phone(
    dovecot: Any, live_server: Any, page: Page
) -> None:
    people, values = _world()
    MailboxMonthlyUsage.objects.create(
        mailbox=Mailbox.objects.get(public_id=values["bal_id"]),
        month=timezone.localdate().replace(day=1),
        received=12,
        sent=5,
        correspondents=3,
        domains={"chu-exemple.mssante.fr": 9},
        structures={"CHU Exemple": 9},
    )
    sign_in(page, live_server.url, people["director"])
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        page.goto(f"{live_server.url}/console/{values['structure_id']}/indicateurs/")
        expect(
            page.get_by_text(re.compile(r"Calculé le \d{1,2} \S+ \d{4} à \d\d:\d\d"))
        ).to_be_visible()
        for caption in (
            "Messages reçus et envoyés par mois",
            "Principaux domaines partenaires",
            "Principales structures partenaires",
        ):
            expect(page.locator("figcaption", has_text=caption)).to_be_visible()
        # Each label is drawn at 12 px in a chart never shrunk below its drawn width.
        smallest = page.evaluate(
            """() => Math.min(...[...document.querySelectorAll('svg.chart')].map(svg => {
                const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                const label = svg.querySelector('.chart-label');
                return scale * parseFloat(getComputedStyle(label).fontSize);
            }))"""
        )
        assert smallest >= 12, (size, smallest)
        widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], (size, widths)


def test_an_app_bals_software_certificates_fit_a_phone(
    dovecot: Any, live_server: Any, page: Page
) -> None:
    """The console's « Logiciels autorisés »: a long CN and a 64-digit fingerprint wrap."""
    people, values = _world()
    structure = Mailbox.objects.get(public_id=values["bal_id"]).structure
    dui = make_mailbox(
        structure=structure, kind="APP", local_part="dui-transmissions-automatiques",
        responsible=people["director"],
    )  # fmt: skip
    AppCertificate.objects.create(
        mailbox=dui, fingerprint="ab" * 32, subject="x", issuer="x", serial="1", pem="x",
        common_name="logiciel-dossier-usager-informatise.ehpad-les-tilleuls-de-la-vallee.fr",
        not_after=timezone.now() + timedelta(days=365),
    )  # fmt: skip
    sign_in(page, live_server.url, people["director"])
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/console/{values['structure_id']}/bal/{dui.public_id}/")
    expect(page.get_by_role("heading", name="Logiciels autorisés (certificats)")).to_be_visible()
    expect(page.get_by_text("AB" * 32)).to_be_visible()
    expect(page.get_by_role("button", name="Autoriser ce certificat")).to_be_visible()
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
