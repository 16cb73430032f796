"""The absence message in Chromium: the holder sets it from the webmail and sees it in force,
in French, then stops it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from annuaire.ins import MONTHS
from mailboxes.models import Absence
from tests.browser import sign_in
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "e2e-artifacts"


def test_the_holder_sets_an_absence_and_sees_it_active(dovecot, live_server, page: Page) -> None:
    holder = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), local_part="claire.martin", owner=holder)
    wait_provisioned(box.address)
    today = timezone.localdate()
    end = today + timedelta(days=7)

    sign_in(page, live_server.url, holder, recent=False)
    page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX")
    page.get_by_role("link", name="Message d'absence").click()
    expect(page.get_by_role("heading", name="Message d'absence")).to_be_visible()
    expect(page.get_by_text("Aucun message d'absence.")).to_be_visible()
    page.get_by_label("Du").fill(today.isoformat())
    page.get_by_label("Au (inclus)").fill(end.isoformat())
    page.get_by_label("Texte de la réponse").fill(
        "Je suis en congé. Pour une urgence, appelez le secrétariat au 04 00 00 00 00."
    )
    page.get_by_role("button", name="Activer le message d'absence").click()

    start_text, end_text = (f"{d.day} {MONTHS[d.month - 1]} {d.year}" for d in (today, end))
    expect(page.locator("#absence-state")).to_contain_text(
        f"Message d'absence actif du {start_text} au {end_text}."
    )
    assert Absence.objects.get(mailbox=box).ends_on == end
    # The form shows the absence in force, ready to be changed.
    expect(page.get_by_label("Au (inclus)")).to_have_value(end.isoformat())
    expect(page.get_by_role("button", name="Modifier le message d'absence")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "absence.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    # The page's own content fits a phone (the site header is the phone layout's work).
    card = page.locator("article.card").bounding_box()
    assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= 390
    page.screenshot(path=str(ARTIFACTS / "absence-phone.png"), full_page=True)

    page.get_by_role("button", name="Arrêter le message d'absence").click()
    expect(page.get_by_text("Message d'absence arrêté.")).to_be_visible()
    expect(page.get_by_text("Aucun message d'absence.")).to_be_visible()
    assert not Absence.objects.filter(mailbox=box).exists()
