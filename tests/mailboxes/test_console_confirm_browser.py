"""In Chromium (issue 19): the console asks before a role change or a removal; « Annuler »
leaves everything as it was, « OK » does it."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from accounts.models import Membership
from mailboxes.models import MailboxAccess
from tests.browser import sign_in
from tests.personas import make_cast

pytestmark = pytest.mark.django_db(transaction=True)


def test_role_changes_and_removals_ask_first(dovecot: Any, live_server: Any, page: Page) -> None:
    cast = make_cast()
    base = live_server.url
    sign_in(page, base, cast.director)
    questions: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog: Dialog) -> None:
        questions.append(dialog.message)
        if answer["accept"]:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(f"{base}/console/{cast.structure.public_id}/personnes/")
    nurse_row = page.locator("tr", has_text="Julien Bernard")

    # Cancelled: nothing changes.
    nurse_row.get_by_role("button", name="Nommer directeur·rice").click()
    nurse_row.get_by_role("button", name="Retirer de la structure").click()
    assert questions == [
        "Nommer Julien Bernard directeur·rice ? Cette personne pourra gérer les BAL et les "
        "personnes de la structure.",
        "Retirer Julien Bernard de la structure ? Ses accès aux BAL de la structure seront "
        "retirés.",
    ]
    membership = Membership.objects.get(user=cast.nurse, structure=cast.structure)
    assert membership.role == Membership.Role.MEMBER

    # Accepted: the role changes.
    answer["accept"] = True
    nurse_row.get_by_role("button", name="Nommer directeur·rice").click()
    expect(nurse_row.get_by_role("button", name="Retirer le rôle de directeur")).to_be_visible()
    membership.refresh_from_db()
    assert membership.role == Membership.Role.DIRECTOR

    # A member's access to the team BAL: asked, cancelled, kept.
    answer["accept"] = False
    page.goto(f"{base}/console/{cast.structure.public_id}/bal/{cast.soins.public_id}/")
    page.locator("tr", has_text="Julien Bernard").get_by_role("button", name="Retirer").click()
    assert questions[-1] == f"Retirer l'accès de Julien Bernard à {cast.soins.address} ?"
    assert MailboxAccess.objects.filter(mailbox=cast.soins, user=cast.nurse).exists()
