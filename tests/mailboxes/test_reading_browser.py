"""Reading and organising in Chromium (issue 19): the quick search and « Recherche avancée »,
select all, an action on search results that stays on them, « Annuler » after the Trash,
sorting both ways, keyboard shortcuts on the list and the message page; folders of one's own,
move from the message page, a search in every folder, emptying the Trash after a
confirmation, the print view and an image preview in its sandboxed frame."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser import sign_in
from tests.factories import make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.test_reading_organising import PNG, _with_attachment

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "e2e-artifacts"


def test_search_select_all_trash_with_undo_sort_and_shortcuts(
    dovecot, live_server, page: Page
) -> None:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    wait_provisioned(box.address)
    for subject in ("Relance B", "Relance A", "Relance C", "Réunion de service"):
        deliver(box.address, make_message(subject=subject))
    sign_in(page, live_server.url, doctor, recent=False)
    page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX")

    # One quick box; the other fields fold out under « Recherche avancée ».
    expect(page.get_by_label("Expéditeur", exact=True)).to_be_hidden()
    page.get_by_text("Recherche avancée").click()
    expect(page.get_by_label("Expéditeur", exact=True)).to_be_visible()
    search = page.get_by_role("searchbox", name="Rechercher (expéditeur, objet ou texte)")
    search.fill("Relance")
    search.press("Enter")
    expect(page.get_by_role("link", name="Réunion de service")).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile(r"^Relance "))).to_have_count(3)

    # Sort by subject, then the other way: the header says which.
    page.get_by_role("link", name="Objet").click()
    subject_header = page.get_by_role("columnheader", name=re.compile("Objet"))
    expect(subject_header).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("td.subject a").first).to_have_text("Relance A")
    page.get_by_role("link", name=re.compile("Objet")).click()
    expect(subject_header).to_have_attribute("aria-sort", "descending")
    expect(page.locator("td.subject a").first).to_have_text("Relance C")
    assert "q=Relance" in page.url

    # Select all, one less, and to the Trash: the search stays, « Annuler » brings them back.
    select_all = page.get_by_role("checkbox", name="Tout sélectionner")
    select_all.check()
    boxes = page.get_by_role("checkbox", name="Sélectionner")
    for i in range(3):
        expect(boxes.nth(i)).to_be_checked()
    boxes.nth(2).uncheck()
    assert select_all.evaluate("box => box.indeterminate") is True
    page.get_by_label("Action", exact=True).select_option("supprimer")
    page.get_by_role("button", name="Appliquer").click()
    expect(page.get_by_text("2 messages placés dans la corbeille.")).to_be_visible()
    assert "q=Relance" in page.url and "tri=objet-inverse" in page.url
    expect(page.get_by_role("link", name=re.compile(r"^Relance "))).to_have_count(1)
    page.get_by_role("button", name="Annuler").click()
    expect(page.get_by_text("2 messages remis dans « Boîte de réception ».")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(r"^Relance "))).to_have_count(3)
    assert "q=Relance" in page.url

    # Shortcuts: never while typing; « ? » shows them; j/k/o on the list.
    search.focus()
    search.press("End")
    page.keyboard.press("j")
    expect(search).to_have_value("Relancej")
    search.fill("Relance")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Raccourcis clavier")).to_be_visible()
    page.screenshot(path=str(_artifact("webmail-shortcuts.png")), full_page=True)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Raccourcis clavier")).to_be_hidden()
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    expect(page.locator("tr.is-current td.subject a")).to_have_text("Relance C")
    page.keyboard.press("j")
    page.keyboard.press("o")
    expect(page.get_by_role("heading", level=1)).to_have_text("Relance B")

    # On the message: previous / next in the list's order, back keeps the search and sort.
    expect(page.get_by_text("2 sur 3")).to_be_visible()
    page.keyboard.press("j")
    expect(page.get_by_role("heading", level=1)).to_have_text("Relance A")
    page.keyboard.press("k")
    expect(page.get_by_role("heading", level=1)).to_have_text("Relance B")
    page.get_by_role("link", name=re.compile("Message précédent")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Relance C")
    page.keyboard.press("#")
    expect(page.get_by_text("1 message placé dans la corbeille.")).to_be_visible()
    assert "q=Relance" in page.url and "tri=objet-inverse" in page.url
    expect(page.get_by_role("link", name=re.compile(r"^Relance "))).to_have_count(2)
    page.keyboard.press("/")
    expect(search).to_be_focused()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("c")
    expect(page).to_have_url(re.compile(r"/ecrire/"))


def test_folders_move_everywhere_empty_trash_print_and_preview(
    dovecot, live_server, page: Page
) -> None:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    wait_provisioned(box.address)
    deliver(box.address, make_message(subject="Bilan Leroy", body="Créatinine normale."))
    deliver(box.address, _with_attachment("Photo de la plaie", "plaie.png", "image/png", PNG))
    deliver(box.address, make_message(subject="Publicité"))
    sign_in(page, live_server.url, doctor, recent=False)
    inbox = f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX"
    page.goto(inbox)

    # A folder of one's own, then the message moved there from its page.
    page.get_by_role("link", name="Gérer les dossiers").click()
    page.get_by_label("Nouveau dossier").fill("Biologie")
    page.get_by_role("button", name="Créer le dossier").click()
    expect(page.get_by_text("Dossier « Biologie » créé.")).to_be_visible()
    expect(page.get_by_role("rowheader", name="Biologie")).to_be_visible()
    page.screenshot(path=str(_artifact("webmail-folders.png")), full_page=True)
    page.goto(inbox)
    page.get_by_role("link", name="Bilan Leroy").click()
    page.get_by_label("Déplacer vers").select_option("Biologie")
    page.get_by_role("button", name="Déplacer", exact=True).click()
    expect(page.get_by_text("Messages déplacés.")).to_be_visible()
    expect(page.get_by_role("link", name="Bilan Leroy")).to_have_count(0)
    page.get_by_label("Dans tous les dossiers").check()
    page.get_by_role("searchbox").fill("Leroy")
    page.get_by_role("button", name="Rechercher").click()
    row = page.get_by_role("row", name=re.compile("Bilan Leroy"))
    expect(row.get_by_role("cell", name="Biologie")).to_be_visible()
    page.screenshot(path=str(_artifact("webmail-search-everywhere.png")), full_page=True)

    # The print view: the headers and the text, nothing of the portal when printed.
    row.get_by_role("link", name="Bilan Leroy").click()
    page.get_by_role("link", name="Imprimer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bilan Leroy")
    expect(page.get_by_text("Créatinine normale.")).to_be_visible()
    page.emulate_media(media="print")
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.get_by_role("button", name="Imprimer")).to_be_hidden()
    expect(page.get_by_text("Dr Paul Durand")).to_be_visible()
    page.screenshot(path=str(_artifact("webmail-print.png")), full_page=True)
    page.emulate_media(media="screen")

    # An image attachment previewed in a sandboxed frame from our origin.
    page.goto(inbox)
    page.get_by_role("link", name="Photo de la plaie").click()
    page.get_by_role("link", name="Aperçu").click()
    frame = page.locator("iframe.attachment-frame")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.attachment-frame").locator("img")).to_be_visible()
    assert page.frames[1].url.startswith(live_server.url)

    # The Trash empties only after a confirmation.
    page.goto(inbox)
    page.get_by_role("row", name=re.compile("Publicité")).get_by_role("checkbox").check()
    page.get_by_label("Action", exact=True).select_option("supprimer")
    page.get_by_role("button", name="Appliquer").click()
    page.get_by_role("link", name="Corbeille").click()
    page.get_by_role("link", name="Vider la corbeille…").click()
    expect(page.get_by_role("heading", name="Vider la corbeille ?")).to_be_visible()
    page.get_by_role("link", name="Annuler").click()
    expect(page.get_by_role("link", name="Publicité")).to_be_visible()
    page.get_by_role("link", name="Vider la corbeille…").click()
    page.get_by_role("button", name="Vider la corbeille").click()
    expect(page.get_by_text("Corbeille vidée : 1 message supprimé définitivement.")).to_be_visible()
    expect(page.get_by_text("Ce dossier est vide.")).to_be_visible()


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def test_the_conversation_view_groups_a_reply_under_its_message(
    dovecot, live_server, page: Page
) -> None:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    wait_provisioned(box.address)
    first = make_message(subject="Sortie de M. Leroy", date="Mon, 16 Nov 2026 09:00:00 +0100")
    parent = re.search(rb"Message-ID: (<[^>]+>)", first)
    assert parent is not None
    deliver(box.address, first)
    deliver(box.address, make_message(subject="Sans suite", date="Mon, 16 Nov 2026 10:00:00 +0100"))
    references = (
        f"In-Reply-To: {parent.group(1).decode()}\r\nReferences: {parent.group(1).decode()}\r\n"
    )
    deliver(box.address, make_message(subject="RE : Sortie de M. Leroy", extra_headers=references))
    sign_in(page, live_server.url, doctor, recent=False)
    page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX")
    expect(page.locator("td.subject a").first).to_have_text("RE : Sortie de M. Leroy")

    page.get_by_role("link", name="Vue par conversation").click()

    expect(page.locator("td.subject a")).to_have_text(
        ["Sortie de M. Leroy", "RE : Sortie de M. Leroy", "Sans suite"]
    )
    expect(
        page.get_by_role("row", name=re.compile("Sortie de M. Leroy 2 messages"))
    ).to_be_visible()
    expect(page.locator("tr.thread-reply td.subject a")).to_have_text("RE : Sortie de M. Leroy")
    page.screenshot(path=str(_artifact("webmail-conversations.png")), full_page=True)
    page.get_by_role("link", name="Sortie de M. Leroy", exact=True).click()
    page.get_by_role("link", name=re.compile("Message suivant")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("RE : Sortie de M. Leroy")
    # r, f and u on the message page.
    page.keyboard.press("r")
    expect(page).to_have_url(re.compile(r"/ecrire/\?mode=repondre&"))
    page.go_back()
    page.keyboard.press("f")
    expect(page).to_have_url(re.compile(r"/ecrire/\?mode=transferer&"))
    page.go_back()
    page.keyboard.press("u")
    expect(page).to_have_url(re.compile(r"/\?dossier=INBOX&vue=conversations$"))
    page.go_back()
    page.get_by_role("link", name="← Retour à la liste").click()
    expect(page.get_by_text("Vue par conversation", exact=True)).to_have_attribute(
        "aria-current", "true"
    )
