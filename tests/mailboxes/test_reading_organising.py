"""Reading and organising in the webmail (issue 19), against a real Dovecot: the quick search
and its filters, a search in every folder, sorting both ways, the list kept by the message
page (back, previous / next, move), folders of one's own, the Trash's « Annuler » and its
confirmation, the print page, the preview of PDF and image attachments."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from accounts.models import AuditEvent, User
from mailboxes.access import access_mailbox
from mailboxes.errors import FolderExists, FolderNameInvalid, FolderProtected, RightMissing
from mailboxes.models import Mailbox
from mailboxes.store.imap import SPECIAL_FOLDERS, MailStore
from mailboxes.webmail.services.folders import folder_create, folder_delete, folder_rename
from mailboxes.webmail.services.messages import messages_delete, messages_restore
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.test_rights import folder_state

pytestmark = pytest.mark.django_db


def _with_attachment(subject: str, filename: str, content_type: str, data: str) -> bytes:
    return (
        "From: Labo <labo@bio.mssante.fr>\r\nTo: claire.martin@ehpad-les-tilleuls.mssante.fr\r\n"
        f"Subject: {subject}\r\nDate: Wed, 18 Nov 2026 10:00:00 +0100\r\n"
        f"Message-ID: <{filename}@bio.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\nCi-joint le document.\r\n--b\r\n"
        f'Content-Type: {content_type}\r\nContent-Disposition: attachment; filename="{filename}"'
        f"\r\nContent-Transfer-Encoding: base64\r\n\r\n{data}\r\n--b--\r\n"
    ).encode()


# A one-pixel PNG and a minimal PDF, base64.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
    "AABJRU5ErkJggg=="
)
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjEgMCBvYmoKPDw+PgplbmRvYmoKdHJhaWxlcgo8PD4+CiUlRU9GCg=="
SVG = (
    "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciPjxzY3JpcHQ+YWxlcnQoMSk8L3Nj"
    "cmlwdD48L3N2Zz4="
)


@pytest.fixture
def doctor_box(dovecot) -> tuple[User, Mailbox]:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    wait_provisioned(box.address)
    return doctor, box


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _text(response: Any) -> str:
    return html.unescape(response.content.decode())


def _subjects(page: str) -> list[str]:
    """The subjects of a list page, in their order."""
    return re.findall(
        r'<td class="subject">(?:<span class="thread-mark"[^>]*>↳ </span>)?<a href="[^"]*">'
        r"(?:<span[^>]*>⚑</span> )?([^<]+)</a>",
        page,
    )


def test_the_quick_search_finds_sender_subject_or_text_at_once(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(
        box.address,
        make_message(subject="Bilan sanguin", sender="Labo Leroy <labo@bio.mssante.fr>"),
    )
    deliver(box.address, make_message(subject="Ordonnance", body="Amoxicilline 1 g, Leroy"))
    deliver(box.address, make_message(subject="Leroy : sortie"))
    deliver(box.address, make_message(subject="Sans rapport"))
    client = _client(doctor)
    base = f"/bal/{box.public_id}/?dossier=INBOX"

    found = _subjects(_text(client.get(f"{base}&q=Leroy")))
    by_text = _subjects(_text(client.get(f"{base}&q=amoxicilline")))

    assert sorted(found) == ["Bilan sanguin", "Leroy : sortie", "Ordonnance"]
    assert by_text == ["Ordonnance"]
    page = _text(client.get(f"{base}&q=Leroy"))
    assert "<details" in page and "Recherche avancée" in page  # the fields fold out


def test_filters_unread_flagged_and_with_attachments(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="Lu"))
    deliver(box.address, make_message(subject="Suivi"))
    deliver(box.address, _with_attachment("Avec PDF", "cr.pdf", "application/pdf", PDF))
    client = _client(doctor)
    uids = {s: uid for s, (uid, _f) in folder_state(box.address, "INBOX").items()}
    client.post(
        f"/bal/{box.public_id}/actions/", {"dossier": "INBOX", "action": "lu", "uids": [uids["Lu"]]}
    )
    client.post(
        f"/bal/{box.public_id}/actions/",
        {"dossier": "INBOX", "action": "suivi", "uids": [uids["Suivi"]]},
    )
    base = f"/bal/{box.public_id}/?dossier=INBOX"

    assert sorted(_subjects(_text(client.get(f"{base}&nonlus=1")))) == ["Avec PDF", "Suivi"]
    assert _subjects(_text(client.get(f"{base}&suivis=1"))) == ["Suivi"]
    assert _subjects(_text(client.get(f"{base}&pj=1"))) == ["Avec PDF"]
    assert _subjects(_text(client.get(f"{base}&pj=1&nonlus=1&q=labo"))) == ["Avec PDF"]


def test_a_search_in_every_folder_shows_each_message_folder(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="Dossier Leroy : entrée"))
    deliver(box.address, make_message(subject="Dossier Leroy : sortie"))
    deliver(box.address, make_message(subject="Autre patient"))
    client = _client(doctor)
    grant = access_mailbox(doctor, box.public_id)
    folder_create(grant=grant, actor=doctor, name="Patients suivis")
    uid = folder_state(box.address, "INBOX")["Dossier Leroy : sortie"][0]
    client.post(
        f"/bal/{box.public_id}/actions/",
        {"dossier": "INBOX", "action": "deplacer", "cible": "Patients suivis", "uids": [uid]},
    )

    here_only = _subjects(_text(client.get(f"/bal/{box.public_id}/?dossier=INBOX&q=Leroy")))
    page = _text(client.get(f"/bal/{box.public_id}/?dossier=INBOX&q=Leroy&partout=1"))

    assert here_only == ["Dossier Leroy : entrée"]
    assert sorted(_subjects(page)) == ["Dossier Leroy : entrée", "Dossier Leroy : sortie"]
    assert '<th scope="col">Dossier</th>' in page
    assert '<td class="folder-name">Patients suivis</td>' in page
    assert '<td class="folder-name">Boîte de réception</td>' in page
    # Each row opens the message in its own folder.
    assert "dossier=Patients%20suivis" in page or "dossier=Patients+suivis" in page
    assert AuditEvent.objects.filter(action="message.list", details__everywhere=True).exists()


def test_sorting_both_ways_with_an_indicator(doctor_box) -> None:
    doctor, box = doctor_box
    for subject in ("Bravo", "Alpha", "Charlie"):
        deliver(box.address, make_message(subject=subject))
    client = _client(doctor)
    base = f"/bal/{box.public_id}/?dossier=INBOX"

    default = _text(client.get(base))
    ascending = _text(client.get(f"{base}&tri=objet"))
    descending = _text(client.get(f"{base}&tri=objet-inverse"))

    assert re.search(r'<th scope="col" aria-sort="descending"><a [^>]*>Date', default)
    assert _subjects(ascending) == ["Alpha", "Bravo", "Charlie"]
    assert re.search(
        r'<th scope="col" aria-sort="ascending"><a href="[^"]*tri=objet-inverse[^"]*">Objet',
        ascending,
    )
    assert _subjects(descending) == ["Charlie", "Bravo", "Alpha"]
    assert re.search(
        r'<th scope="col" aria-sort="descending"><a href="[^"]*tri=objet(&|")', descending
    )
    assert ascending.count("aria-sort=") == 1


def test_the_message_page_keeps_the_list_it_came_from(doctor_box) -> None:
    doctor, box = doctor_box
    for subject in ("Relance A", "Relance B", "Relance C", "Autre"):
        deliver(box.address, make_message(subject=subject))
    client = _client(doctor)
    listing = _text(client.get(f"/bal/{box.public_id}/?dossier=INBOX&q=Relance&tri=objet"))
    link = re.search(r'<a href="([^"]+)">Relance B</a>', listing)
    assert link is not None

    message = _text(client.get(link.group(1)))

    back = re.search(r'<a href="([^"]+)" data-shortcut="back">', message)
    previous = re.search(r'<a href="([^"]+)" rel="prev"', message)
    following = re.search(r'<a href="([^"]+)" rel="next"', message)
    assert back and previous and following
    assert parse_qs(urlsplit(back.group(1)).query) == {
        "dossier": ["INBOX"],
        "q": ["Relance"],
        "tri": ["objet"],
    }
    assert "2 sur 3" in message
    assert "<h1>Relance A</h1>" in _text(client.get(previous.group(1)))
    last = _text(client.get(following.group(1)))
    assert "<h1>Relance C</h1>" in last and 'rel="next"' not in last


def test_move_from_the_message_page_goes_back_to_the_list(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="À classer"))
    client = _client(doctor)
    grant = access_mailbox(doctor, box.public_id)
    folder_create(grant=grant, actor=doctor, name="Comptes rendus")
    message = _text(client.get(f"/bal/{box.public_id}/messages/1/?dossier=INBOX&tri=objet"))
    assert '<option value="Comptes rendus">Comptes rendus</option>' in message
    back = re.search(r'name="suivant" value="([^"]+)"', message)
    assert back is not None

    response = client.post(
        f"/bal/{box.public_id}/actions/",
        {
            "dossier": "INBOX",
            "uids": [1],
            "action": "deplacer",
            "cible": "Comptes rendus",
            "suivant": back.group(1),
        },
    )

    assert response.status_code == 302 and "tri=objet" in response["Location"]
    assert "À classer" in folder_state(box.address, "Comptes rendus")
    assert "À classer" not in folder_state(box.address, "INBOX")


def test_folders_of_ones_own_create_rename_delete_when_empty(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="Classé"))
    client = _client(doctor)
    url = f"/bal/{box.public_id}/dossiers/"

    created = _text(client.post(url, {"action": "creer", "nom": " Résultats labo "}, follow=True))
    assert "Dossier « Résultats labo » créé." in created
    client.post(url, {"action": "renommer", "dossier": "Résultats labo", "nom": "Biologie"})
    with MailStore(box.address) as store:
        names = store.folder_names()
    assert "Biologie" in names and "Résultats labo" not in names
    client.post(
        f"/bal/{box.public_id}/actions/",
        {"dossier": "INBOX", "action": "deplacer", "cible": "Biologie", "uids": [1]},
    )

    refused = _text(client.post(url, {"action": "supprimer", "dossier": "Biologie"}, follow=True))
    assert "Ce dossier contient encore des messages" in refused
    assert "Classé" in folder_state(box.address, "Biologie")
    client.post(
        f"/bal/{box.public_id}/actions/",
        {"dossier": "Biologie", "action": "deplacer", "cible": "INBOX", "uids": [1]},
    )
    gone = _text(client.post(url, {"action": "supprimer", "dossier": "Biologie"}, follow=True))
    assert "Dossier « Biologie » supprimé." in gone
    with MailStore(box.address) as store:
        assert "Biologie" not in store.folder_names()
    actions = list(
        AuditEvent.objects.filter(actor=doctor, action__startswith="folder.")
        .order_by("id")
        .values_list("action", "result")
    )
    assert actions == [
        ("folder.created", "success"),
        ("folder.renamed", "success"),
        ("folder.deleted", "failure"),
        ("folder.deleted", "success"),
    ]


def test_the_folders_every_bal_has_stay_and_names_are_checked(doctor_box) -> None:
    doctor, box = doctor_box
    grant = access_mailbox(doctor, box.public_id)
    folder_create(grant=grant, actor=doctor, name="Archives")

    for special in SPECIAL_FOLDERS:
        with pytest.raises(FolderProtected):
            folder_delete(grant=grant, actor=doctor, folder=special)
        with pytest.raises(FolderProtected):
            folder_rename(grant=grant, actor=doctor, folder=special, name="Autre")
    for bad in ("a/b", "tout*", "50%", "", "Corbeille", "inbox", "x" * 61, ".cache"):
        with pytest.raises(FolderNameInvalid):
            folder_create(grant=grant, actor=doctor, name=bad)
    with pytest.raises(FolderExists):
        folder_create(grant=grant, actor=doctor, name="archives")
    with MailStore(box.address) as store:
        assert sorted(store.folder_names()) == sorted(["Archives", *SPECIAL_FOLDERS])
    page = _text(_client(doctor).get(f"/bal/{box.public_id}/dossiers/"))
    assert "Archives" in page and "ni renommables ni supprimables" in page


def test_the_trash_says_how_many_and_annuler_puts_them_back(doctor_box) -> None:
    doctor, box = doctor_box
    for subject in ("Un", "Deux", "Trois", "Reste"):
        deliver(box.address, make_message(subject=subject))
    client = _client(doctor)
    uids = [uid for s, (uid, _f) in folder_state(box.address, "INBOX").items() if s != "Reste"]

    back = f"/bal/{box.public_id}/?dossier=INBOX&tri=objet"
    page = _text(
        client.post(
            f"/bal/{box.public_id}/actions/",
            {"dossier": "INBOX", "action": "supprimer", "uids": uids, "suivant": back},
            follow=True,
        )
    )

    assert "3 messages placés dans la corbeille." in page
    assert set(folder_state(box.address, "Trash")) == {"Un", "Deux", "Trois"}
    token = re.search(r'name="jeton" value="([0-9a-f]{32})"', page)
    assert token is not None and ">Annuler</button>" in page
    # Shown once: the next list no longer offers it.
    assert 'name="jeton"' not in _text(client.get(f"/bal/{box.public_id}/?dossier=INBOX"))

    back = _text(
        client.post(
            f"/bal/{box.public_id}/corbeille/annuler/", {"jeton": token.group(1)}, follow=True
        )
    )

    assert "3 messages remis dans « Boîte de réception »." in back
    assert set(folder_state(box.address, "INBOX")) == {"Un", "Deux", "Trois", "Reste"}
    assert folder_state(box.address, "Trash") == {}
    again = _text(
        client.post(
            f"/bal/{box.public_id}/corbeille/annuler/", {"jeton": token.group(1)}, follow=True
        )
    )
    assert "Cette suppression ne peut plus être annulée." in again
    assert AuditEvent.objects.filter(action="message.restored", result="success").count() == 1


def test_emptying_the_trash_asks_first(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="Vieux"))
    client = _client(doctor)
    client.post(
        f"/bal/{box.public_id}/actions/", {"dossier": "INBOX", "action": "supprimer", "uids": [1]}
    )
    trash = _text(client.get(f"/bal/{box.public_id}/?dossier=Trash"))
    assert f'href="/bal/{box.public_id}/corbeille/vider/"' in trash

    confirm = _text(client.get(f"/bal/{box.public_id}/corbeille/vider/"))

    assert "Vider la corbeille ?" in confirm
    assert "Le message de la corbeille de" in confirm and "ne pourra pas être récupéré" in confirm
    assert "Vieux" in folder_state(box.address, "Trash")  # asking changed nothing
    done = _text(client.post(f"/bal/{box.public_id}/corbeille/vider/", follow=True))
    assert "Corbeille vidée : 1 message supprimé définitivement." in done
    assert folder_state(box.address, "Trash") == {}


def test_the_print_page_has_the_headers_and_text_and_marks_nothing(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="Compte rendu opératoire", body="Suites simples."))
    client = _client(doctor)

    page = _text(client.get(f"/bal/{box.public_id}/messages/1/imprimer/?dossier=INBOX"))

    assert "<h1>Compte rendu opératoire</h1>" in page
    assert "Dr Paul Durand" in page and "claire.martin@ehpad-les-tilleuls.mssante.fr" in page
    assert "Suites simples." in page and "data-print" in page
    assert b"\\Seen" not in folder_state(box.address, "INBOX")["Compte rendu opératoire"][1]
    assert AuditEvent.objects.filter(action="message.printed", actor=doctor).exists()
    message = _text(client.get(f"/bal/{box.public_id}/messages/1/?dossier=INBOX"))
    assert f'href="/bal/{box.public_id}/messages/1/imprimer/?dossier=INBOX"' in message


def test_pdf_and_images_preview_inline_svg_and_html_never(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, _with_attachment("PDF", "cr.pdf", "application/pdf", PDF))
    deliver(box.address, _with_attachment("Image", "plaie.png", "image/png", PNG))
    deliver(box.address, _with_attachment("SVG", "schema.svg", "image/svg+xml", SVG))
    deliver(box.address, _with_attachment("HTML", "page.html", "text/html", SVG))
    client = _client(doctor)
    uids = {s: uid for s, (uid, _f) in folder_state(box.address, "INBOX").items()}
    base = f"/bal/{box.public_id}/messages"

    message = _text(client.get(f"{base}/{uids['PDF']}/?dossier=INBOX"))
    preview = _text(client.get(f"{base}/{uids['PDF']}/pieces/1/apercu/?dossier=INBOX"))
    pdf = client.get(f"{base}/{uids['PDF']}/pieces/1/apercu/fichier/?dossier=INBOX")
    image_page = _text(client.get(f"{base}/{uids['Image']}/pieces/1/apercu/?dossier=INBOX"))
    image = client.get(f"{base}/{uids['Image']}/pieces/1/apercu/fichier/?dossier=INBOX")

    assert ">Aperçu</a>" in message
    assert f'src="{base}/{uids["PDF"]}/pieces/1/apercu/fichier/?dossier=INBOX"' in preview, preview
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"].startswith("inline")
    assert pdf["X-Content-Type-Options"] == "nosniff" and pdf["X-Frame-Options"] == "SAMEORIGIN"
    assert "script-src" not in pdf["Content-Security-Policy"]
    assert "default-src 'none'" in pdf["Content-Security-Policy"]
    assert re.search(r"<iframe [^>]*sandbox[ >]", image_page)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert "sandbox" in image["Content-Security-Policy"]
    for subject in ("SVG", "HTML"):
        assert ">Aperçu</a>" not in _text(client.get(f"{base}/{uids[subject]}/?dossier=INBOX"))
        for tail in ("apercu/", "apercu/fichier/"):
            answer = client.get(f"{base}/{uids[subject]}/pieces/1/{tail}?dossier=INBOX")
            assert answer.status_code == 404, (subject, tail)
    # Downloading stays a download.
    download = client.get(f"{base}/{uids['PDF']}/pieces/1/?dossier=INBOX")
    assert download["Content-Disposition"].startswith("attachment")


def test_the_shortcuts_are_documented_on_the_pages(doctor_box) -> None:
    doctor, box = doctor_box
    deliver(box.address, make_message(subject="Raccourcis"))
    client = _client(doctor)
    for url in (
        f"/bal/{box.public_id}/?dossier=INBOX",
        f"/bal/{box.public_id}/messages/1/?dossier=INBOX",
    ):
        page = _text(client.get(url))
        assert '<dialog id="raccourcis"' in page
        for key in ("j", "k", "o", "r", "f", "#", "c", "/", "?"):
            assert f"<kbd>{key}</kbd>" in page, (url, key)
        assert "/static/js/webmail.js" in page


def _reply(subject: str, parent: str, date: str) -> bytes:
    return make_message(
        subject=f"RE : {subject}",
        date=date,
        extra_headers=f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n",
    )


def test_the_conversation_view_groups_replies_under_their_first_message(doctor_box) -> None:
    doctor, box = doctor_box
    first = make_message(subject="Sortie de M. Leroy", date="Mon, 16 Nov 2026 09:00:00 +0100")
    found = re.search(rb"Message-ID: (<[^>]+>)", first)
    assert found is not None
    first_id = found.group(1).decode()
    deliver(box.address, first)
    deliver(box.address, make_message(subject="Sans suite", date="Mon, 16 Nov 2026 10:00:00 +0100"))
    deliver(box.address, _reply("Sortie de M. Leroy", first_id, "Mon, 16 Nov 2026 11:00:00 +0100"))
    client = _client(doctor)
    base = f"/bal/{box.public_id}/?dossier=INBOX"

    flat = _subjects(_text(client.get(base)))
    grouped = _text(client.get(f"{base}&vue=conversations"))

    assert flat == ["RE : Sortie de M. Leroy", "Sans suite", "Sortie de M. Leroy"]
    # The conversation with the latest arrival first, its first message first, the reply under it.
    assert _subjects(grouped) == ["Sortie de M. Leroy", "RE : Sortie de M. Leroy", "Sans suite"]
    assert "2 messages</span>" in grouped and " thread-reply" in grouped
    assert "2 conversations" in grouped and "Vue par message" in grouped
    # Previous / next on a message follow the conversation view's order.
    link = re.search(r'<a href="([^"]+)">Sortie de M. Leroy</a>', grouped)
    assert link is not None and "vue=conversations" in link.group(1)
    message = _text(client.get(link.group(1)))
    following = re.search(r'<a href="([^"]+)" rel="next"', message)
    assert following is not None, re.findall(r'<nav class="message-nav".*?</nav>', message, re.S)
    assert "<h1>RE : Sortie de M. Leroy</h1>" in _text(client.get(following.group(1)))


def test_putting_back_from_the_trash_needs_the_right_to_organise(doctor_box) -> None:
    doctor, box = doctor_box
    reader = make_professional(first_name="Sophie", last_name="Petit", profession="")
    grant(box, reader)
    first = make_message(subject="À garder")
    found = re.search(rb"Message-ID: (<[^>]+>)", first)
    assert found is not None
    deliver(box.address, first)
    messages_delete(
        grant=access_mailbox(doctor, box.public_id), actor=doctor, folder="INBOX", uids=[1]
    )

    with pytest.raises(RightMissing):
        messages_restore(
            grant=access_mailbox(reader, box.public_id), actor=reader,
            message_ids=[found.group(1).decode()], target="INBOX",
        )  # fmt: skip

    assert "À garder" in folder_state(box.address, "Trash")
    assert AuditEvent.objects.filter(
        action="message.restored", actor=reader, result="failure", error_code="right_missing"
    ).exists()
    # A forged « Annuler » without an undo of one's own changes nothing either.
    page = _text(
        _client(reader).post(
            f"/bal/{box.public_id}/corbeille/annuler/", {"jeton": "0" * 32}, follow=True
        )
    )
    assert "Cette suppression ne peut plus être annulée." in page
    assert "À garder" in folder_state(box.address, "Trash")


def test_back_to_the_list_keeps_its_page_and_next_crosses_to_the_next_page(doctor_box) -> None:
    doctor, box = doctor_box
    with MailStore(box.address) as store:
        for i in range(52):
            store.append("INBOX", make_message(subject=f"Message {i:02d}"), flags=())
    client = _client(doctor)
    first_page = _text(client.get(f"/bal/{box.public_id}/?dossier=INBOX&tri=objet-inverse"))
    second_page = _text(client.get(f"/bal/{box.public_id}/?dossier=INBOX&tri=objet-inverse&page=2"))
    last_of_first = re.search(r'<a href="([^"]+)">Message 02</a>', first_page)
    on_second = re.search(r'<a href="([^"]+)">Message 01</a>', second_page)
    assert last_of_first and on_second and "page=2" in on_second.group(1)

    message = _text(client.get(on_second.group(1)))
    back = re.search(r'<a href="([^"]+)" data-shortcut="back">', message)
    assert back is not None
    assert parse_qs(urlsplit(back.group(1)).query) == {
        "dossier": ["INBOX"], "page": ["2"], "tri": ["objet-inverse"],
    }  # fmt: skip
    edge = _text(client.get(last_of_first.group(1)))
    following = re.search(r'<a href="([^"]+)" rel="next"', edge)
    assert following is not None and "page=2" in following.group(1)
    assert "<h1>Message 01</h1>" in _text(client.get(following.group(1)))


def test_previous_and_next_by_arrival_and_the_position_in_the_folder(doctor_box) -> None:
    """The message page's neighbours in the folder by arrival (newest first), including the
    first and the last message and a UID the folder no longer has."""
    _doctor, box = doctor_box
    with MailStore(box.address) as store:
        for i in range(5):
            store.append("INBOX", make_message(subject=f"Arrivée {i}"), flags=())
        store.delete("INBOX", [store.ordered_uids("INBOX")[2]])  # a hole among the UIDs
        uids = store.ordered_uids("INBOX")  # newest first
        assert len(uids) == 4
        for at, uid in enumerate(uids):
            assert store.around("INBOX", uid) == (
                uids[at - 1] if at else None,
                uids[at + 1] if at + 1 < len(uids) else None,
                at + 1,
                4,
            )
        assert store.around("INBOX", uids[0] + 7) == (None, None, 0, 4)
        assert store.around("INBOX", 1) == (uids[-2], None, 4, 4)


def test_the_neighbours_of_a_message_read_before_another_left_the_folder(doctor_box) -> None:
    """``around`` counts by the numbers of the selected folder: after this very session moved
    a message out (an EXPUNGE renumbers those below it), the message read before it still
    gets its right neighbours, position and total."""
    _doctor, box = doctor_box
    with MailStore(box.address) as store:
        for i in range(4):
            store.append("INBOX", make_message(subject=f"Arrivée {i}"), flags=())
        newest, second, third, oldest = store.ordered_uids("INBOX")
        assert store.fetch("INBOX", newest) is not None  # its number is learnt here: 4 of 4
        store.delete("INBOX", [third])
        assert store.around("INBOX", newest) == (None, second, 1, 3)
        assert store.around("INBOX", second) == (newest, oldest, 2, 3)
        assert store.around("INBOX", third) == (None, None, 0, 3)


def test_the_message_page_is_one_imap_session(doctor_box, monkeypatch) -> None:
    """Reading the message and finding its neighbours and the folders to move it to share one
    login to Dovecot."""
    doctor, box = doctor_box
    with MailStore(box.address) as store:
        for i in range(3):
            store.append("INBOX", make_message(subject=f"Message {i}"), flags=())
        middle = store.ordered_uids("INBOX")[1]
    logins: list[str] = []
    enter = MailStore.__enter__

    def counted(self: MailStore) -> MailStore:
        logins.append(self.address)
        return enter(self)

    monkeypatch.setattr(MailStore, "__enter__", counted)
    page = _text(_client(doctor).get(f"/bal/{box.public_id}/messages/{middle}/?dossier=INBOX"))
    assert "<h1>Message 1</h1>" in page
    assert re.search(r'rel="next"', page) and re.search(r'rel="prev"', page)
    assert logins == [box.address]
