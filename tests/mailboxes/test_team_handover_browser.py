"""The handover of a team BAL in Chromium: the nurse of the morning takes a message in charge,
the colleague of the afternoon sees it, filters what is left, and closes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import sign_in
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "e2e-artifacts"


def test_a_shift_hands_a_message_over_to_the_next(dovecot, live_server, page: Page) -> None:
    ssiad = make_structure()
    morning = make_professional(first_name="Julien", last_name="Bernard", profession="60")
    afternoon = make_professional(first_name="Claire", last_name="Martin")
    team = make_mailbox(
        structure=ssiad, kind="ORG", local_part="soins", responsible=afternoon, display_name="Soins"
    )
    grant(team, morning, can_organise=True, can_send=True)
    grant(team, afternoon, can_organise=True, can_send=True)
    wait_provisioned(team.address)
    deliver(team.address, make_message(subject="Passage de 18 h : M. Durand"))
    deliver(team.address, make_message(subject="Ordonnance de Mme Leroy"))
    inbox = f"{live_server.url}/bal/{team.public_id}/?dossier=INBOX"

    sign_in(page, live_server.url, morning, recent=False)
    page.goto(inbox)
    page.get_by_role("link", name="Passage de 18 h : M. Durand").click()
    expect(page.get_by_text("À traiter : personne ne l'a encore pris en charge.")).to_be_visible()
    page.get_by_role("button", name="Je m'en occupe").click()
    expect(page.get_by_text("Vous avez pris ce message en charge")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Pris en charge par Julien Bernard le"))).to_be_visible()

    sign_in(page, live_server.url, afternoon, recent=False)
    page.goto(inbox)
    expect(page.get_by_text(re.compile(r"Pris en charge par Julien Bernard le"))).to_be_visible()
    page.get_by_role("link", name="À traiter").click()
    expect(page.get_by_role("link", name="Ordonnance de Mme Leroy")).to_be_visible()
    expect(page.get_by_role("link", name="Passage de 18 h : M. Durand")).to_have_count(0)
    page.get_by_role("link", name="Tous").click()
    page.get_by_role("link", name="Passage de 18 h : M. Durand").click()
    expect(page.get_by_text(re.compile(r"Ouvert par Julien Bernard"))).to_be_visible()
    page.get_by_role("button", name="Terminé").click()
    expect(page.get_by_text(re.compile(r"Terminé par Claire Martin le"))).to_be_visible()
    page.goto(inbox + "&suivi=termines")
    expect(page.get_by_role("link", name="Passage de 18 h : M. Durand")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "team-handover.png"), full_page=True)
