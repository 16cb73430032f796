"""The whole sign-in in Chromium: from the portal button to the signed-in home page."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.factories import make_structure

pytestmark = pytest.mark.django_db(transaction=True)


def test_doctor_signs_in_with_cps_card_in_a_browser(psc_live: str, page: Page) -> None:
    make_structure(name="EHPAD Les Tilleuls", finess="690001235")
    csp_violations: list[str] = []
    page.on(
        "console",
        lambda msg: (
            csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None
        ),
    )

    page.goto(f"{psc_live}/")
    expect(page).to_have_url(re.compile(r"/connexion/"))
    page.get_by_role("button", name="Se connecter avec Pro Santé Connect").click()

    # The PSC mock: pick Dr Claire Martin and the physical card.
    expect(page).to_have_url(re.compile(r"/_dev/psc/wallet/auth"))
    page.get_by_label(re.compile(r"MARTIN", re.IGNORECASE)).first.check()
    page.get_by_label(re.compile(r"Carte CPS")).check()
    page.get_by_role("button", name="Se connecter").click()

    expect(page).to_have_url(f"{psc_live}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        re.compile("Martin", re.IGNORECASE)
    )
    expect(page.get_by_text("Médecine générale")).to_be_visible()
    expect(page.get_by_text("Structure cliente du portail")).to_be_visible()
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "home.png"), full_page=True)
    assert User.objects.filter(national_id="899700120019").exists()
    assert csp_violations == []

    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_role("heading", name="Vous êtes déconnecté")).to_be_visible()
