"""Writing safely in Chromium (issue 19): Enter in a one-line field never sends, Ctrl+Entrée
does; the annuaire field answers the arrow keys and Enter adds the highlighted address to À, Cc
or Cci; a message without a subject asks first; the message saves itself as a draft while it is
written and on leaving, and leaving a changed message asks first."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Dialog, Page, expect

from accounts.models import User
from annuaire.extraction import COLUMNS
from annuaire.models import WhitelistEntry, WhitelistVersion
from annuaire.services import directory_import
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from tests.factories import make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.test_compose import _drafts, _sent

pytestmark = pytest.mark.django_db(transaction=True)
ELISE = "elise.durand@operateur-test.mssante.fr"
MARC = "marc.durand@operateur-test.mssante.fr"


def _annuaire(tmp_path: Path) -> None:
    lines = ["|".join(COLUMNS)]
    for address, first, national_id in (
        (ELISE, "Élise", "810100000002"),
        (MARC, "Marc", "810100000010"),
    ):
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            {
                "Type de BAL": "PER",
                "Adresse BAL": address,
                "Identification nationale PP": national_id,
                "Civilité d'exercice": "DR",
                "Nom d'exercice": "DURAND",
                "Prénom d'exercice": first,
                "Libellé Profession": "Médecin",
                "Code postal structure BAL": "71100",
            }
        )
        lines.append("|".join(row[c] for c in COLUMNS))
    path = tmp_path / "annuaire.txt"
    path.write_text("\n".join(lines) + "\n")
    directory_import(path=path)


@pytest.fixture
def writer(dovecot, listed, live_server, page: Page, tmp_path: Path) -> tuple[User, Mailbox]:
    """A doctor signed in in Chromium, on the compose page of her BAL, two Dr DURAND in the
    annuaire."""
    _annuaire(tmp_path)
    version = WhitelistVersion.objects.get(is_current=True)  # Mon Espace Santé is listed
    WhitelistEntry.objects.create(
        version=version, domain="patient.mssante.fr", dn="CN=smtps1.ens", dn_key="cn=smtps1.ens"
    )
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    client = Client()
    client.force_login(doctor)
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page.goto(f"{live_server.url}/bal/{box.public_id}/ecrire/")
    return doctor, box


def test_enter_in_a_one_line_field_never_sends_and_ctrl_enter_does(writer, page: Page) -> None:
    page.get_by_role("textbox", name="À", exact=True).fill(ELISE)
    page.get_by_label("Objet").press_sequentially("Sortie de Mme D.")
    for field in ("id_objet", "id_a", "id_cc", "id_cci", "id_ins", "annuaire-q"):
        page.locator(f"#{field}").press("Enter")
    page.wait_for_timeout(500)
    assert "/ecrire/" in page.url
    assert not OutboundMessage.objects.exists()
    assert page.get_by_label("Objet").input_value() == "Sortie de Mme D."

    body = page.get_by_label("Message", exact=True)
    body.press_sequentially("Bonjour,")
    body.press("Enter")  # a new line in the message, never a send
    body.press_sequentially("sortie vendredi.")
    assert body.input_value() == "Bonjour,\nsortie vendredi."
    body.press("Control+Enter")
    expect(page.get_by_text("Message envoyé.")).to_be_visible()
    [row] = OutboundDelivery.objects.all()
    assert row.recipient == ELISE


def test_the_annuaire_answers_the_arrow_keys_and_enter_adds_to_cc_or_cci(
    writer, page: Page
) -> None:
    query = page.get_by_role("combobox", name="Ajouter un destinataire de l'annuaire")
    query.press_sequentially("durand")
    options = page.get_by_role("listbox").get_by_role("option")
    expect(options).to_have_count(2)
    expect(query).to_have_attribute("aria-expanded", "true")
    query.press("ArrowDown")
    query.press("ArrowDown")
    second = options.nth(1)
    expect(second).to_have_attribute("aria-selected", "true")
    expect(options.nth(0)).to_have_attribute("aria-selected", "false")
    expect(query).to_have_attribute("aria-activedescendant", second.get_attribute("id") or "")
    address = page.locator("#suggestions .suggestion")
    picked = address.nth(1).get_attribute("data-address")
    page.get_by_role("radio", name="copie (Cc)").check()
    query.press("Enter")
    expect(page.get_by_role("textbox", name="Cc", exact=True)).to_have_value(picked or "")
    expect(page.get_by_role("textbox", name="À", exact=True)).to_have_value("")
    expect(query).to_have_value("")
    expect(query).to_be_focused()
    expect(query).to_have_attribute("aria-expanded", "false")

    page.get_by_role("radio", name="copie cachée (Cci)").check()
    query.press_sequentially("durand")
    expect(options).to_have_count(2)
    query.press("ArrowUp")  # from the field, up goes to the last suggestion
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    query.press("ArrowUp")
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    first = address.nth(0).get_attribute("data-address")
    query.press("Enter")
    expect(page.get_by_role("textbox", name="Cci", exact=True)).to_have_value(first or "")
    assert {picked, first} == {ELISE, MARC}
    assert "/ecrire/" in page.url and not OutboundMessage.objects.exists()


def test_sending_without_a_subject_asks_first(writer, page: Page) -> None:
    asked: list[str] = []
    answers = iter([False, True])

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept() if next(answers) else dialog.dismiss()

    page.on("dialog", answer)
    page.get_by_role("textbox", name="À", exact=True).fill(ELISE)
    page.get_by_label("Message", exact=True).fill("Bonjour")
    page.get_by_role("button", name="Envoyer", exact=True).click()
    page.wait_for_timeout(500)
    assert asked == ["Ce message n'a pas d'objet. L'envoyer quand même ?"]
    assert "/ecrire/" in page.url and not OutboundMessage.objects.exists()

    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.get_by_text("Message envoyé.")).to_be_visible()
    assert len(asked) == 2 and OutboundMessage.objects.count() == 1


def _draft_subjects(box: Mailbox, wanted: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        subjects = [str(d["Subject"]) for d in _drafts(box)]
        if wanted in subjects or time.monotonic() > deadline:
            return subjects
        time.sleep(0.3)


def test_a_message_saves_itself_and_leaving_it_changed_asks_first(writer, page: Page) -> None:
    _doctor, box = writer
    dialogs: list[str] = []

    def stay(dialog: Dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", stay)
    compose = page.url
    page.get_by_label("Objet").press_sequentially("Bilan de Mme D.")
    page.get_by_role("link", name="← Retour à la boîte").click()
    page.wait_for_timeout(500)
    assert dialogs == ["beforeunload"]
    assert "/ecrire/" in page.url  # stayed, nothing lost

    assert _draft_subjects(box, "Bilan de Mme D.", 20) == ["Bilan de Mme D."]  # every 10 s
    expect(page.locator("#brouillon-etat")).to_contain_text("Brouillon enregistré à")
    page.get_by_role("link", name="← Retour à la boîte").click()  # saved: leaves freely
    expect(page).to_have_url(f"{page.url.split('/bal/')[0]}/bal/{box.public_id}/?dossier=INBOX")
    assert dialogs == ["beforeunload"]

    page.goto(compose)
    page.get_by_label("Objet").press_sequentially("Relance labo")
    page.remove_listener("dialog", stay)
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("link", name="← Retour à la boîte").click()  # leave anyway: saved on leaving
    assert "Relance labo" in _draft_subjects(box, "Relance labo", 10)
    assert not OutboundMessage.objects.exists()


SAMPLE = Path("/work/shared/samples/cda/DLU-EHPAD-FLUDT_2022.01.xml")  # a real public CDA


def test_an_attachment_survives_a_refused_recipient(writer, page: Page) -> None:
    _doctor, box = writer
    page.get_by_role("textbox", name="À", exact=True).fill("jean.dupont@gmail.com")
    page.get_by_label("Objet").fill("DLU de Mme D.")
    page.get_by_label("Pièces jointes").set_input_files(SAMPLE)
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.locator(".message--error")).to_contain_text("gmail.com est hors espace")
    expect(page.get_by_text("Pièces jointes du brouillon, conservées")).to_contain_text(SAMPLE.name)
    expect(page.get_by_text("Joignez de nouveau")).to_have_count(0)

    page.get_by_role("textbox", name="À", exact=True).fill(ELISE)
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.get_by_text("Message envoyé.")).to_be_visible()
    [copy] = _sent(box)
    [part] = list(copy.iter_attachments())
    assert part.get_filename() == SAMPLE.name
    assert part.get_payload(decode=True) == SAMPLE.read_bytes()
    assert _drafts(box) == []


def test_a_signature_set_on_its_page_starts_new_messages(writer, page: Page) -> None:
    page.get_by_role("link", name="Ma signature pour cette BAL").click()
    page.get_by_label("Ma signature pour cette BAL").fill("Dr Claire MARTIN\nEHPAD Les Tilleuls")
    page.get_by_role("button", name="Enregistrer la signature").click()
    expect(page.get_by_text("Signature enregistrée.")).to_be_visible()
    body = page.get_by_label("Message", exact=True)
    expect(body).to_have_value("\n\n-- \nDr Claire MARTIN\nEHPAD Les Tilleuls\n")


def test_reply_and_forward_from_the_message_page(writer, page: Page, live_server) -> None:
    _doctor, box = writer
    deliver(
        box.address,
        make_message(
            to=box.address,
            subject="Relance bilan sanguin",
            sender=f"Dr Élise Durand <{ELISE}>",
            date="Mon, 30 Nov 2026 08:15:00 +0000",
            body="Avez-vous les résultats ?",
        ),
    )
    message = f"{live_server.url}/bal/{box.public_id}/messages/1/?dossier=INBOX"
    page.goto(message)
    page.get_by_role("link", name="Répondre", exact=True).click()
    expect(page).to_have_title(re.compile(r"^Répondre · "))
    expect(page.get_by_role("heading", level=1)).to_have_text("Répondre")
    expect(page.get_by_label("Objet")).to_have_value("RE : Relance bilan sanguin")
    body = page.get_by_label("Message", exact=True)
    expect(body).to_have_value(re.compile(r"Le 30/11/2026 à 09:15, .*a écrit :\n> Avez-vous"))

    page.goto(message)
    page.get_by_role("link", name="Transférer", exact=True).click()
    expect(page).to_have_title(re.compile(r"^Transférer · "))
    expect(page.get_by_label("Objet")).to_have_value("TR : Relance bilan sanguin")


def test_an_ins_typed_as_printed_is_checked_as_you_type(writer, page: Page) -> None:
    page.get_by_label("INS du patient").fill("2 79 03 51 215 189 89")
    page.get_by_label("Objet").click()  # the field's change event runs the check
    verdicts = page.locator("#verdicts")
    expect(verdicts).to_contain_text("Une femme, née en mars 1979, née dans le département 51")
    expect(verdicts).to_contain_text("279035121518989@patient.mssante.fr")
    expect(verdicts).not_to_contain_text("invalide")


def test_a_forward_can_put_the_text_in_the_body(writer, page: Page, live_server) -> None:
    _doctor, box = writer
    deliver(
        box.address,
        make_message(to=box.address, subject="Bilan", sender=f"Dr Durand <{ELISE}>"),
    )
    page.goto(f"{live_server.url}/bal/{box.public_id}/messages/1/?dossier=INBOX")
    page.get_by_role("link", name="Transférer", exact=True).click()
    page.get_by_role("link", name="Reprendre plutôt son texte dans le message").click()
    body = page.get_by_label("Message", exact=True)
    expect(body).to_have_value(re.compile(r"-------- Message transféré --------\nDe : Dr Durand"))
    expect(body).to_have_value(re.compile(r"Objet : Bilan\n.*veuillez trouver", re.S))
    page.get_by_role("textbox", name="À", exact=True).fill(MARC)
    page.get_by_role("button", name="Envoyer", exact=True).click()
    expect(page.get_by_text("Message envoyé.")).to_be_visible()
    [copy] = _sent(box)
    assert str(copy["Subject"]) == "TR : Bilan" and list(copy.iter_attachments()) == []
    assert "veuillez trouver le compte rendu" in copy.get_content()
