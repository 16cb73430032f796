"""Broken and hostile mail is shown as well as it can be, never a 500 (fixtures in
tests/fixtures/mail/), delivered to a real Dovecot over LMTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from accounts.models import User
from mailboxes.models import Mailbox
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"


@pytest.fixture
def doctor_box(dovecot) -> tuple[User, Mailbox]:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    return doctor, box


def _open(doctor_box: tuple[User, Mailbox], raw: bytes) -> tuple[Client, str, str]:
    doctor, box = doctor_box
    deliver(box.address, raw)
    client = Client()
    client.force_login(doctor)
    listing = client.get(f"/bal/{box.public_id}/?dossier=INBOX")
    assert listing.status_code == 200
    page = client.get(f"/bal/{box.public_id}/messages/1/?dossier=INBOX")
    assert page.status_code == 200
    return client, listing.content.decode(), page.content.decode()


def test_broken_mime_shows_the_readable_part_and_lists_the_attachment(doctor_box) -> None:
    client, listing, page = _open(doctor_box, (FIXTURES / "broken_mime.eml").read_bytes())

    assert "MIME cassé" in listing
    assert "Corps lisible malgré le MIME cassé." in page
    assert "cr.pdf" in page
    download = client.get(f"/bal/{doctor_box[1].public_id}/messages/1/pieces/1/?dossier=INBOX")
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith('attachment; filename="cr.pdf"')


def test_unknown_charset_falls_back_to_a_readable_guess(doctor_box) -> None:
    _, _listing, page = _open(doctor_box, (FIXTURES / "unknown_charset.eml").read_bytes())

    assert "Résultats normaux, hémoglobine 13 g/dL." in page


def test_message_without_any_header(doctor_box) -> None:
    _, listing, page = _open(doctor_box, (FIXTURES / "missing_headers.eml").read_bytes())

    assert "(sans objet)" in listing
    assert "(sans objet)" in page
    assert "Texte sans aucun en-tête." in page


def test_eight_bit_garbage_in_headers_and_body(doctor_box) -> None:
    _, _listing, page = _open(doctor_box, (FIXTURES / "eightbit_garbage.eml").read_bytes())

    assert "Compte rendu é" in page
    assert "Corps en 8 bits éàç sans jeu de caractères déclaré" in page
    assert "inconnue" in page  # the date « pas une date » is not guessed


def test_huge_headers_are_cut_for_display(doctor_box) -> None:
    subject = "Très long " * 5000
    received = "".join(
        f"Received: from relais{i}.exemple by relais{i + 1}.exemple\r\n" for i in range(2000)
    )
    raw = (
        f"{received}From: relais@exemple.mssante.fr\r\nTo: x@exemple.mssante.fr\r\n"
        f"Subject: {subject}\r\n\r\nCorps court\r\n"
    ).encode()

    _, listing, page = _open(doctor_box, raw)

    assert "Corps court" in page
    assert "Très long" in page and "Très long" in listing
    assert len(page) < len(subject) and len(listing) < len(subject)


def test_nested_message_is_an_attachment_with_its_subject(doctor_box) -> None:
    client, _, page = _open(doctor_box, (FIXTURES / "nested_rfc822.eml").read_bytes())

    assert "Je vous transfère le courrier ci-dessous." in page
    assert "Courrier de sortie.eml" in page
    download = client.get(f"/bal/{doctor_box[1].public_id}/messages/1/pieces/1/?dossier=INBOX")
    assert download.status_code == 200
    assert b"Bisoprolol 2,5 mg" in download.content
    assert download["Content-Type"] == "message/rfc822"


def test_hostile_html_is_sanitised_sandboxed_and_remote_content_blocked(doctor_box) -> None:
    client, _, page = _open(doctor_box, (FIXTURES / "hostile_html.eml").read_bytes())
    box = doctor_box[1]

    assert "1 image distante a été bloquée" in page
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
    body = client.get(f"/bal/{box.public_id}/messages/1/contenu/?dossier=INBOX")
    html = body.content.decode()
    assert body.status_code == 200
    assert "Texte visible du message" in html
    for forbidden in (
        "<script",
        "onload",
        "onerror",
        "javascript:",
        "<iframe",
        "<form",
        "traceur.exemple",
        "refresh",
        "<svg",
    ):
        assert forbidden not in html, forbidden
    assert (
        'href="https://pirate.exemple/login"' in html
        and 'rel="noopener noreferrer nofollow"' in html
    )
    csp = body["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src data:;" in csp and "sandbox" in csp
    assert body["X-Frame-Options"] == "SAMEORIGIN"


def test_show_images_allows_https_images_only_on_request(doctor_box) -> None:
    client, _, _ = _open(doctor_box, (FIXTURES / "hostile_html.eml").read_bytes())
    box = doctor_box[1]

    body = client.get(f"/bal/{box.public_id}/messages/1/contenu/?dossier=INBOX&images=1")

    assert 'src="https://traceur.exemple/pixel.gif"' in body.content.decode()
    assert "img-src data: https:" in body["Content-Security-Policy"]
    page = client.get(f"/bal/{box.public_id}/messages/1/?dossier=INBOX&images=1").content.decode()
    assert "image distante a été bloquée" not in page


def test_attachment_download_is_forced_and_not_sniffable(doctor_box) -> None:
    raw = (
        b"From: a@b.mssante.fr\r\nTo: c@d.mssante.fr\r\nSubject: piece\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nvoir PJ\r\n"
        b"--b\r\nContent-Type: text/html\r\n"
        b'Content-Disposition: attachment; filename="page.html"\r\n\r\n'
        b"<script>alert(1)</script>\r\n--b--\r\n"
    )
    client, _, _ = _open(doctor_box, raw)

    r = client.get(f"/bal/{doctor_box[1].public_id}/messages/1/pieces/1/?dossier=INBOX")

    assert r["Content-Disposition"] == 'attachment; filename="page.html"'
    assert r["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r["Content-Security-Policy"]
    assert (
        client.get(f"/bal/{doctor_box[1].public_id}/messages/1/pieces/9/?dossier=INBOX").status_code
        == 404
    )
