"""The whole journey in Chromium: a doctor writes to a professional of another operator,
picks the address from the annuaire, asks for receipts, sends; the real Celery worker relays
over mutual TLS to the other operator (a local TLS SMTP server); the Sent copy shows the
recipient « En attente », then « Transmis », then « Remis » and « Lu » when that operator's
DSN and MDN come back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from annuaire.extraction import COLUMNS
from annuaire.services import directory_import
from devtools.pki import Issued
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store import lmtp
from mailboxes.transport.delivery_reports import report_apply
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.test_relay import REMOTE, Peer, _start_peer

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def _annuaire(tmp_path: Path) -> None:
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        {
            "Type de BAL": "PER",
            "Adresse BAL": REMOTE,
            "Identification nationale PP": "810100000002",
            "Civilité d'exercice": "DR",
            "Nom d'exercice": "DURAND",
            "Prénom d'exercice": "Élise",
            "Libellé Profession": "Médecin",
            "L6LIGNEACHEMINEMENT structure BAL": "71100 CHALON-SUR-SAONE",
            "Code postal structure BAL": "71100",
        }
    )
    path = tmp_path / "x.txt"
    path.write_text("|".join(COLUMNS) + "\n" + "|".join(row[c] for c in COLUMNS) + "\n")
    directory_import(path=path)


def _worker(pki: dict[str, Issued], route: str) -> subprocess.Popen[bytes]:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "PORTAL_ENV": "test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "RELAY_ROUTES": route,
        "RELAY_CERT": str(pki["gateway"].cert),
        "RELAY_KEY": str(pki["gateway"].key),
        "RELAY_CA_BUNDLE": str(pki["ca"].cert),
        "RELAY_HOSTNAME": "mx.ehpad-les-tilleuls.mssante.fr",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mssante_portal", "worker", "-Q", "relay",
         "--pool=solo", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _report(kind: str, box: Mailbox, message: OutboundMessage) -> bytes:
    if kind == "dsn":
        part = (
            "Content-Type: message/delivery-status\r\n\r\n"
            f"Original-Envelope-Id: {message.envid}\r\n"
            "Reporting-MTA: dns; mx.operateur-test.mssante.fr\r\n\r\n"
            f"Final-Recipient: rfc822; {REMOTE}\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
        )
        report_type = "delivery-status"
    else:
        part = (
            "Content-Type: message/disposition-notification\r\n\r\n"
            f"Final-Recipient: rfc822; {REMOTE}\r\nOriginal-Message-ID: {message.message_id}\r\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\r\n"
        )
        report_type = "disposition-notification"
    return (
        f"From: {REMOTE}\r\nTo: {box.address}\r\nSubject: Avis\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\nAvis.\r\n--b\r\n{part}\r\n--b--\r\n"
    ).encode()


def test_compose_send_and_follow_the_recipient_status(
    dovecot, live_server, page: Page, pki, listed, tmp_path: Path
) -> None:
    _annuaire(tmp_path)
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    handler = Peer()
    controller, port = _start_peer(pki, "peer", handler)
    worker = _worker(pki, f"operateur-test.mssante.fr=127.0.0.1:{port}")
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
    try:
        page.goto(f"{live_server.url}/bal/{box.public_id}/ecrire/")
        page.get_by_label("Ajouter un destinataire de l'annuaire").press_sequentially("durand eli")
        page.locator(".suggestion", has_text=REMOTE).click()
        expect(page.get_by_text("Dr Élise DURAND — Médecin")).to_be_visible()
        page.get_by_label("Objet").fill("Sortie de Mme D.")
        page.get_by_label("Message", exact=True).fill("Bonjour,\nsortie prévue vendredi.")
        page.get_by_label("Demander un accusé de réception").check()
        page.get_by_label("Demander un accusé de lecture").check()
        page.get_by_role("button", name="Envoyer", exact=True).click()
        expect(page.get_by_text("Message envoyé.")).to_be_visible()

        page.get_by_role("link", name="Sortie de Mme D.").click()
        status = page.locator(".delivery-status tbody tr", has_text=REMOTE)
        expect(status).to_be_visible()

        deadline = time.monotonic() + 60
        while not handler.received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert handler.received, "the worker never relayed the message"
        assert handler.received[0].rcpt_tos == [REMOTE]
        message = OutboundMessage.objects.get(mailbox=box)
        while (
            OutboundDelivery.objects.get(message=message).status != "relayed"
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        page.reload()
        expect(status).to_contain_text("Transmis à l'opérateur du destinataire")

        report_apply(_report("dsn", box, message))
        page.reload()
        expect(status).to_contain_text("Remis")
        report_apply(_report("mdn", box, message))
        page.reload()
        expect(status).to_contain_text("Lu")

        # The Sent list says it too, and the receipt itself is filed in « Accusés », not the INBOX.
        lmtp.deliver(REMOTE, [box.address], _report("mdn", box, message))
        page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=Sent")
        row = page.locator("#message-list tr", has_text="Sortie de Mme D.")
        expect(row.locator("td.delivery")).to_have_text("👁 Lu")
        page.goto(f"{live_server.url}/bal/{box.public_id}/?dossier=INBOX")
        expect(page.get_by_text("Avis")).to_have_count(0)
        page.locator("nav a", has_text="Accusés").first.click()
        expect(page.get_by_role("link", name="Avis")).to_be_visible()
    finally:
        worker.kill()
        worker.wait(10)
        controller.stop()
