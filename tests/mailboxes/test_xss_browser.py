"""XSS and CSS-exfiltration vectors from public cheat sheets (tests/fixtures/xss_vectors.txt),
delivered in HTML mail and opened in Chromium: no script runs in any frame, no dialog opens,
no request leaves for a host other than the portal, and the body frame never navigates."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Dialog, Page, Request, Route

from mailboxes.webmail.sanitize import sanitize
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, inbox, wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)

VECTORS = [
    line
    for line in (Path(__file__).resolve().parents[1] / "fixtures" / "xss_vectors.txt")
    .read_text(encoding="utf-8")
    .splitlines()
    if line.strip() and not line.startswith("#")
]
PER_MESSAGE = 20
SCRIPT_RAN = "() => [typeof window.pwned, document.location.href]"


def _message(batch: int, vectors: list[str], first: int) -> bytes:
    body = "".join(
        f"<p>Vecteur {first + n} :</p>\r\n{vector}\r\n" for n, vector in enumerate(vectors)
    )
    return (
        f'From: "<img src=x onerror=alert(1)>" <labo@operateur-test.mssante.fr>\r\n'
        f"To: claire.martin@ehpad-les-tilleuls.mssante.fr\r\n"
        f"Subject: Lot {batch} <script>alert('objet')</script>{vectors[0]}\r\n"
        f"Message-ID: <xss-{batch}@operateur-test.mssante.fr>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"<html><head><title>t</title></head><body>{body}</body></html>\r\n"
    ).encode()


def test_cheat_sheet_vectors_neither_run_nor_leak(dovecot, live_server, page: Page) -> None:
    assert len(VECTORS) >= 100
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    batches = [VECTORS[i : i + PER_MESSAGE] for i in range(0, len(VECTORS), PER_MESSAGE)]
    for n, vectors in enumerate(batches):
        deliver(box.address, _message(n, vectors, n * PER_MESSAGE))
    # Each vector is in a delivered message, byte for byte.
    stored = b"\n".join(inbox(box.address))
    missing = [v for v in VECTORS if v.encode() not in stored]
    assert not missing, missing[:3]

    client = Client()
    client.force_login(doctor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    portal = urlsplit(live_server.url).netloc
    dialogs: list[str] = []
    leaks: list[str] = []  # requests that reached the network layer
    attempts: list[str] = []  # requests the page tried (the body's CSP is the last guard)
    local: list[str] = []
    popups: list[str] = []

    def on_route(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss", "ftp") and url.netloc != portal:
            leaks.append(route.request.url)
            route.abort()  # nothing actually leaves this machine
        else:
            route.continue_()

    def on_request(request: Request) -> None:
        if urlsplit(request.url).netloc == portal:
            local.append(request.url)
        elif not request.url.startswith(("data:", "about:", "blob:")):
            attempts.append(request.url)

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.context.route("**/*", on_route)
    page.context.on("request", on_request)
    page.context.on("page", lambda popup: popups.append(popup.url))
    page.on("dialog", on_dialog)

    shown = ""
    for uid in range(1, len(batches) + 1):
        url = f"{live_server.url}/bal/{box.public_id}/messages/{uid}/?dossier=INBOX"
        page.goto(url)
        frame = page.frame_locator("iframe.message-body")
        frame.locator("body").wait_for()
        for loading in page.frames:  # the body frame fully parsed, on a loaded machine too
            loading.wait_for_load_state("load")
        page.wait_for_timeout(400)  # refreshes, animations, autofocus: time to misbehave
        body_url = f"/bal/{box.public_id}/messages/{uid}/contenu/?dossier=INBOX"
        frames = page.frames
        assert page.url == url
        assert len(frames) == 2, [f.url for f in frames]  # the page and the body, no other
        assert frames[1].url.endswith(body_url), frames[1].url  # the body never navigated
        for f in frames:
            ran, _ = f.evaluate(SCRIPT_RAN)
            assert ran == "undefined", (uid, f.url)
        shown += frame.locator("body").inner_text()

    assert dialogs == [], dialogs
    assert leaks == [], sorted(set(leaks))[:10]
    # Stricter: the sanitiser leaves nothing that even tries (u\72l( once did, stopped by CSP).
    assert attempts == [], sorted(set(attempts))[:10]
    assert popups == []
    assert any("/contenu/" in u for u in local)  # the recorder sees the frames' requests
    # Every message carrying vectors was opened; an unterminated vector (an open attribute
    # quote, « <iframe ... < ») may swallow the label after it, but not many.
    visible = [n for n in range(len(VECTORS)) if f"Vecteur {n} :" in shown]
    assert len(visible) >= 0.9 * len(VECTORS), sorted(set(range(len(VECTORS))) - set(visible))


@pytest.mark.parametrize(
    "style",
    [
        r"background:u\72l(http://attacker.invalid/a.png)",
        r"background:\75\72\6c(http://attacker.invalid/a.png)",
        r"background:\000075rl(http://attacker.invalid/a.png)",
        "background-image:image-set('http://attacker.invalid/a.png' 1x)",
        "background-image:-webkit-image-set('http://attacker.invalid/a.png' 1x)",
        r"@im\port 'http://attacker.invalid/a.css'",
    ],
)
def test_css_escapes_and_image_set_do_not_smuggle_a_fetch(style: str) -> None:
    html = sanitize(f'<p style="{style}">x</p><p style="color:#c00">garde</p>').html
    assert html == '<p>x</p><p style="color:#c00">garde</p>'
