"""In Chromium: the director of an EHPAD creates an organisational BAL « soins@ », adds a
nurse as a member with the send right; the nurse, in her own browser, finds it in her BAL
list, opens it and can write from it."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import Membership
from mailboxes.models import Mailbox, MailboxAccess
from tests.browser import sign_in
from tests.factories import make_membership, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)


def test_director_creates_an_org_bal_adds_a_nurse_who_then_sees_it(
    dovecot: Any, live_server: Any, page: Page, browser: Browser
) -> None:
    structure = make_structure()
    director = make_professional(first_name="Marc", last_name="Lefebvre")
    nurse = make_professional(first_name="Inès", last_name="Moreau", profession="60")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    make_membership(nurse, structure)
    base = live_server.url
    failures: list[str] = []
    page.on(
        "response",
        lambda r: (
            failures.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )

    sign_in(page, base, director)
    page.goto(f"{base}/")
    page.get_by_role("link", name="Console").click()
    expect(page.get_by_role("heading", name="Boîtes aux lettres")).to_be_visible()
    page.get_by_role("link", name="Nouvelle BAL organisationnelle").click()
    page.get_by_label("Adresse", exact=True).fill("soins")
    page.get_by_label("Nom affiché").fill("Équipe soignante")
    page.get_by_label("Professionnel responsable").select_option(
        label=f"Marc Lefebvre ({director.national_id})"
    )
    page.get_by_label("Service de rattachement").fill("Soins")
    page.get_by_role("button", name="Créer la BAL").click()
    expect(
        page.get_by_text("La BAL soins@ehpad-les-tilleuls.mssante.fr est créée.")
    ).to_be_visible()

    page.get_by_label("Personne").select_option(label=f"Inès Moreau ({nurse.national_id})")
    page.get_by_label("Droits").select_option(label="Lecture, classement et envoi")
    page.get_by_role("button", name="Ajouter ou modifier").click()
    expect(
        page.get_by_text("Inès Moreau a maintenant accès à soins@ehpad-les-tilleuls.mssante.fr.")
    ).to_be_visible()
    members = page.locator("#droits table")
    expect(members).to_contain_text("Inès Moreau")
    expect(members).to_contain_text("lecture, classement, envoi")

    box = Mailbox.objects.get(address="soins@ehpad-les-tilleuls.mssante.fr")
    assert MailboxAccess.objects.get(mailbox=box, user=nurse).can_send
    wait_provisioned(box.address)

    nurse_context = browser.new_context(locale="fr-FR")
    try:
        nurse_page = nurse_context.new_page()
        sign_in(nurse_page, base, nurse)
        nurse_page.goto(f"{base}/bal/")
        link = nurse_page.get_by_role("link", name="soins@ehpad-les-tilleuls.mssante.fr")
        expect(link.first).to_be_visible()
        link.first.click()
        expect(nurse_page.get_by_role("link", name="Écrire")).to_be_visible()
        # The nurse has no console: the link is absent and the URL answers 404.
        expect(nurse_page.get_by_role("link", name="Console")).to_have_count(0)
        response = nurse_page.goto(f"{base}/console/{structure.public_id}/")
        assert response is not None and response.status == 404
    finally:
        nurse_context.close()
    assert not failures, failures  # the director's pages: no failed request
