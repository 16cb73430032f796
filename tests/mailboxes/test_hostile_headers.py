"""A message never breaks a page (issue 15).

One message whose Subject is a malformed RFC 2047 encoded word used to make its page, its reply
and forward pages and the inbox listing it answer 500: a single hostile peer could make a BAL
unusable. Every header shown or quoted falls back to its raw text (escaped by the template)
when it cannot be decoded, and control characters never reach a response header (read
receipts, attachment downloads). The last test feeds every malformed-mail generator of the
project and CPython's email test corpus through the real gateway and opens every message
everywhere a person can: zero 500.
"""

from __future__ import annotations

import base64
import email
import email.policy
import random
import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape
from pathlib import Path

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from accounts.models import User
from devtools.pki import Issued
from mailboxes.models import Mailbox, OutboundMessage
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, mx_client, wait_provisioned
from tests.mailboxes.test_gateway_fuzz import _message as fuzz_message
from tests.mailboxes.test_mime_corpus import message as generated_message

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
SENDER = "labo@operateur-test.mssante.fr"
# Malformed RFC 2047 encoded words, one per way of being broken (RFC 2047 §2, §4, §5).
BROKEN_WORDS = {
    "base64 length": b"=?utf-8?b?A?=",
    "base64 padding": b"=?utf-8?b?QUJDR?=",
    "base64 after a good word": b"=?utf-8?b?QQ?= =?utf-8?b?A?=",
    "language tag (RFC 2231)": b"=?utf-8*fr?b?A?=",
    "unknown-8bit": b"=?unknown-8bit?b?A===?=",
    "iso-2022-jp then broken": b"=?iso-2022-jp?b?GyRCJCIbKEI=?= =?utf-8?b?A?=",
    "unknown charset": b"=?x-inconnu?q?abc?=",
    "unknown encoding": b"=?utf-8?x?abc?=",
    "invalid utf-8": b"=?utf-8?q?=E9=?=",
    "lone surrogate (utf-7)": b"=?utf-7?q?+2D0-?=",
    "line break inside": b"=?utf-8?q?a=0D=0AX-Injecte:=20oui?=",
    "control characters inside": b"=?utf-8?q?a=00=07=1B[31m=7Fb?=",
    "unterminated": b"=?utf-8?b?QUJD",
}
TAIL = '<b>Alerte</b> & "x"'  # shown escaped, never as markup


@dataclass
class Reader:
    user: User
    box: Mailbox
    client: Client


@pytest.fixture
def reader(dovecot) -> Reader:
    user = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=user, local_part="claire.martin")
    wait_provisioned(box.address)
    client = Client()
    client.force_login(user)
    return Reader(user, box, client)


def _mail(headers: bytes, body: bytes = b"Corps du message.\r\n") -> bytes:
    return (
        b"From: Labo <" + SENDER.encode() + b">\r\nTo: claire.martin@ehpad-les-tilleuls.mssante.fr"
        b"\r\nDate: Mon, 16 Nov 2026 09:30:00 +0100\r\nMIME-Version: 1.0\r\n" + headers + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    )


def pages(client: Client, box: Mailbox, uid: int) -> Iterator[tuple[str, int, str]]:
    """(what, status, html) of every page a person can open for message ``uid``."""
    base = f"/bal/{box.public_id}"
    page = client.get(f"{base}/messages/{uid}/", {"dossier": "INBOX"})
    yield "page", page.status_code, page.text
    body = client.get(f"{base}/messages/{uid}/contenu/", {"dossier": "INBOX"})
    yield "contenu", body.status_code, ""
    for index in sorted(set(re.findall(rf"/messages/{uid}/pieces/(\d+)/", page.text)), key=int):
        piece = client.get(f"{base}/messages/{uid}/pieces/{index}/", {"dossier": "INBOX"})
        disposition = piece.get("Content-Disposition", "")
        yield f"pièce {index}", piece.status_code, disposition
    for mode in ("repondre", "tous", "transferer"):
        compose = client.get(f"{base}/ecrire/", {"mode": mode, "uid": uid, "dossier": "INBOX"})
        yield mode, compose.status_code, compose.text


def listing(client: Client, box: Mailbox) -> str:
    html, number = "", 1
    while True:
        response = client.get(f"/bal/{box.public_id}/", {"dossier": "INBOX", "page": str(number)})
        assert response.status_code == 200, ("liste", number, response.status_code)
        html += response.text
        if f"page={number + 1}" not in response.text:
            return html
        number += 1


def test_a_broken_encoded_subject_shows_raw_everywhere(reader: Reader) -> None:
    for word in BROKEN_WORDS.values():
        deliver(reader.box.address, _mail(b"Subject: " + word + b" " + TAIL.encode()))

    listed = listing(reader.client, reader.box)

    shown = escape(TAIL)
    assert listed.count(shown) == len(BROKEN_WORDS) and TAIL not in listed
    for uid, (name, word) in enumerate(BROKEN_WORDS.items(), start=1):
        opened = {what: (code, html) for what, code, html in pages(reader.client, reader.box, uid)}
        # A message without an HTML body has an empty or no body frame.
        assert opened.pop("contenu")[0] in (200, 404), name
        assert {what: status for what, (status, _) in opened.items()} == {
            "page": 200, "repondre": 200, "tous": 200, "transferer": 200,
        }, name  # fmt: skip
        assert shown in opened["page"][1] and TAIL not in opened["page"][1], name
        assert shown in opened["repondre"][1], name  # quoted in « RE : »
        if name in ("base64 length", "base64 padding", "unknown charset", "unterminated"):
            raw = escape(word.decode() + " " + TAIL)  # undecodable: its raw text, escaped
            assert raw in listed and raw in opened["page"][1], name


def test_broken_encoded_words_in_any_shown_header(reader: Reader) -> None:
    broken = b" ".join(BROKEN_WORDS.values())
    headers = ["From", "To", "Cc", "Reply-To", "Message-ID", "References", "Date"]
    for header in headers:
        subject = b"\r\nSubject: en-tete " + header.encode()
        deliver(
            reader.box.address, _mail(header.encode() + b": " + broken + b" <x@y.fr>" + subject)
        )

    listed = listing(reader.client, reader.box)

    for uid, header in enumerate(headers, start=1):
        assert f"en-tete {header}" in listed
        for what, status, _html in pages(reader.client, reader.box, uid):
            assert status in (200, 404) if what == "contenu" else status == 200, (header, what)


def test_attachment_names_are_served_as_a_base_name_without_control_characters(
    reader: Reader,
) -> None:
    names = [
        b'filename="=?utf-8?q?..=2F..=2Fetc=2Fpasswd=0D=0AX-Injecte:=20oui.pdf?="',
        b"filename*=utf-8''C%3A%5CWindows%5Csystem32%5Cevil%0D%0A.exe",
        b'filename="compte\x07rendu\x1b.pdf"',
        b'filename="=?utf-7?q?+2D0-rapport.txt?="',
        b'filename=".."',
        b'filename="/"',
    ]
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        + name
        + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"contenu %d" % i)
        + b"\r\n"
        for i, name in enumerate(names)
    )
    raw = (
        b"From: " + SENDER.encode() + b"\r\nTo: x@y.fr\r\nSubject: PJ\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nVoir PJ\r\n" + parts + b"--b--\r\n"
    )
    deliver(reader.box.address, raw)

    opened = pages(reader.client, reader.box, 1)
    served = {what: (status, got) for what, status, got in opened if what.startswith("pièce")}

    assert [status for status, _ in served.values()] == [200] * 6
    assert [d for _, d in served.values()] == [
        'attachment; filename="passwd X-Injecte: oui.pdf"',
        'attachment; filename="evil .exe"',
        'attachment; filename="compte rendu .pdf"',
        "attachment; filename*=utf-8''%EF%BF%BDrapport.txt",
        'attachment; filename="piece-jointe-5"',
        'attachment; filename="piece-jointe-6"',
    ]


def test_a_date_out_of_range_never_breaks_a_page(reader: Reader) -> None:
    dates = [
        b"Fri, 31 Dec 9999 23:59:59 -1200",
        b"Mon, 01 Jan 0001 00:00:00 +0100",
        b"Sat, 01 Jan 0001 00:00:00 -0000",
        b"Mon, 16 Nov 2026 09:30:00 +9999",
        b"Mon, 16 Nov 2026 25:61:61 +0100",
    ]
    for date in dates:
        raw = _mail(b"Subject: date hostile").replace(b"Mon, 16 Nov 2026 09:30:00 +0100", date)
        deliver(reader.box.address, raw)

    assert listing(reader.client, reader.box).count("date hostile") == len(dates)
    for uid, date in enumerate(dates, start=1):
        for what, status, _html in pages(reader.client, reader.box, uid):
            assert status in (200, 404) if what == "contenu" else status == 200, (date, what)


def test_a_body_in_broken_utf7_is_shown(reader: Reader) -> None:
    raw = _mail(b"Subject: utf-7", b"+2D0-Texte +AOk-t+AOk-\r\n").replace(
        b"charset=utf-8", b"charset=utf-7"
    )
    html = raw.replace(b"text/plain", b"text/html").replace(b"Texte", b"<p>Texte</p>")
    deliver(reader.box.address, raw)
    deliver(reader.box.address, html)

    for uid in (1, 2):
        for what, status, _html in pages(reader.client, reader.box, uid):
            assert status in (200, 404) if what == "contenu" else status == 200, (uid, what)


@pytest.fixture
def colleague(reader: Reader) -> Mailbox:
    box = make_mailbox(
        structure=reader.box.structure, owner=make_professional(), local_part="paul.roux"
    )
    wait_provisioned(box.address)
    return box


def test_a_read_receipt_for_a_message_id_or_subject_with_line_breaks(
    reader: Reader, colleague: Mailbox
) -> None:
    deliver(
        reader.box.address,
        _mail(
            b"Subject: =?utf-8?q?Bilan=0D=0ABcc:=20pirate@ailleurs.fr?=\r\n"
            b"Message-ID: =?utf-8?q?<a=0D=0ABcc:=20pirate@ailleurs.fr>?=\r\n"
            b"Disposition-Notification-To: " + colleague.address.encode()
        ),
    )
    url = f"/bal/{reader.box.public_id}/messages/1/"
    assert "demande un accusé de lecture" in reader.client.get(url, {"dossier": "INBOX"}).text

    response = reader.client.post(f"{url}accuse/", {"dossier": "INBOX", "reponse": "envoyer"})

    assert response.status_code == 302
    report = OutboundMessage.objects.get(origin="report")
    parsed = email.message_from_bytes(bytes(report.content), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Accusé de lecture : Bilan Bcc: pirate@ailleurs.fr"
    assert "Bcc" not in parsed and "In-Reply-To" not in parsed  # not a msg-id: left out
    [notification] = [
        p for p in parsed.iter_parts() if p.get_content_type() == "message/disposition-notification"
    ]
    assert "pirate" not in str(notification)  # no Original-Message-ID either
    assert [d.recipient for d in report.deliveries.all()] == [colleague.address]


# --- Everything through the gateway, every page ------------------------------------------


def stdlib_corpus() -> dict[str, bytes]:
    """CPython's email test messages: those of the installed test package (when Python was
    built with it), and the copy kept in tests/fixtures/mail/corpus/ (README.md there)."""
    found = {p.name: p.read_bytes() for p in (FIXTURES / "corpus").glob("msg_*.txt")}
    try:
        import test.test_email  # present only where Python was installed with its tests

        data = Path(test.test_email.__file__).parent / "data"
        found.update({p.name: p.read_bytes() for p in data.glob("msg_*.txt")})
    except ImportError:
        pass
    return found


WORD = st.builds(
    lambda charset, encoding, text: b"=?" + charset + b"?" + encoding + b"?" + text + b"?=",
    st.sampled_from(
        [b"utf-8", b"utf-7", b"utf-16", b"iso-2022-jp", b"x-inconnu", b"", b"utf-8*fr"]
    ),
    st.sampled_from([b"b", b"q", b"x", b""]),
    st.one_of(
        st.binary(max_size=24).map(lambda b: base64.b64encode(b)[: max(1, len(b) * 4 // 3 - 1)]),
        st.binary(max_size=12).map(lambda b: b"".join(b"=%02X" % c for c in b)),
        st.sampled_from([b"A", b"+2D0-", b"=0D=0A", b"=00", b"", b"?"]),
    ),
)


@st.composite
def hostile_headers(draw: st.DrawFn) -> bytes:
    """A message whose shown headers and attachment name are runs of broken encoded words."""

    def words() -> bytes:
        return b" ".join(draw(st.lists(WORD, min_size=1, max_size=3)))

    return (
        b"From: " + words() + b" <" + SENDER.encode() + b">\r\nTo: " + words() + b" <x@y.fr>\r\n"
        b"Cc: " + words() + b"\r\nSubject: " + words() + b"\r\nMessage-ID: " + words() + b"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\ntexte\r\n--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="' + words() + b'"\r\n\r\nPDF\r\n--b--\r\n'
    )


def collected(strategy: st.SearchStrategy[bytes], count: int, at: int) -> list[bytes]:
    """``count`` examples of ``strategy``, the same on every run."""
    found: list[bytes] = []

    @seed(at)
    @hsettings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=strategy)
    def collect(raw: bytes) -> None:
        found.append(raw)

    collect()
    return found[:count]


def corpus() -> list[tuple[str, bytes]]:
    """Every hostile message the project knows, named."""
    messages = [(f"stdlib {name}", raw) for name, raw in sorted(stdlib_corpus().items())]
    messages += [(p.name, p.read_bytes()) for p in sorted(FIXTURES.glob("*.eml"))]
    messages += [
        (f"sujet {name}", _mail(b"Subject: " + word + b" " + TAIL.encode()))
        for name, word in BROKEN_WORDS.items()
    ]
    rng = random.Random(20261203)  # noqa: S311 (a replayable test generator)
    messages += [(f"fuzz {i}", fuzz_message(rng, f"hostile-{i}", "x@y.fr")) for i in range(6)]
    messages += [
        (f"généré {i}", raw) for i, raw in enumerate(collected(generated_message(), 25, 15))
    ]
    messages += [
        (f"en-têtes {i}", raw) for i, raw in enumerate(collected(hostile_headers(), 25, 16))
    ]
    return messages


def unique(raw: bytes, uid: int) -> bytes:
    """A BAL keeps one copy of a Message-ID (RFC 7352, test_lmtp.py): each message gets its
    own, in front of what its Message-ID field held (kept, hostile or not)."""
    head, blank, body = raw.partition(b"\r\n\r\n")
    marker = b"<corpus-%d@test> " % uid
    if re.search(rb"(?im)^Message-ID:", head):
        head = re.sub(rb"(?im)^(Message-ID:[ \t]*)", lambda m: m.group(1) + marker, head, count=1)
    else:
        head = b"Message-ID: " + marker.strip() + b"\r\n" + head
    return head + blank + body


@pytest.mark.django_db(transaction=True)  # the gateway's threads use their own connections
def test_every_hostile_message_through_the_gateway_opens_everywhere(
    mx: int, pki: dict[str, Issued], reader: Reader
) -> None:
    messages = corpus()
    refused = 0
    with mx_client(mx, pki) as smtp:
        for uid, (name, raw) in enumerate(messages, start=1):
            raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # CRLF on the wire
            raw = unique(raw, uid)
            try:
                smtp.sendmail(SENDER, [reader.box.address], raw)
            except smtplib.SMTPDataError as exc:
                # Refused with a reason (a line over 998 octets, a NUL...): the webmail must
                # still cope if another route stored it.
                assert 500 <= exc.smtp_code < 600, (name, exc)
                refused += 1
                deliver(reader.box.address, raw.replace(b"\x00", b""))

    listed = listing(reader.client, reader.box)
    failures: list[tuple[object, ...]] = []
    for uid, (name, _raw) in enumerate(messages, start=1):
        if f"/messages/{uid}/" not in listed:
            failures.append((name, "absent de la liste"))
        for what, status, _html in pages(reader.client, reader.box, uid):
            if status >= 500 or (status != 200 and what != "contenu"):
                failures.append((name, what, status))
    print(f"{len(messages)} messages, {refused} refused by the gateway and stored by LMTP")

    assert failures == []
    assert escape(TAIL) in listed and TAIL not in listed
