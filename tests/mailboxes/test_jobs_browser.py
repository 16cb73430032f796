"""In Chromium: a director asks for an encrypted export of a BAL; the page says it waits, and
once the store worker (a real Celery worker on the queue `store`) has run it, the page —
polling by itself under the strict CSP — shows the result and the download link."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from accounts.models import Membership
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.models import Mailbox, MailboxJob
from tests.browser import sign_in
from tests.factories import make_membership, make_message, make_professional
from tests.mailboxes.conftest import deliver
from tests.mailboxes.pgp import Keys

pytestmark = pytest.mark.django_db(transaction=True)


def _store_worker() -> subprocess.Popen[bytes]:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "PORTAL_ENV": "test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "EXPORT_DIR": str(settings.EXPORT_DIR),
        "DOVECOT_DIR": str(settings.DOVECOT_DIR),
        "DOVECOT_MAIL_ROOT": str(settings.DOVECOT_MAIL_ROOT),
        "DOVECOT_IMAP_PORT": str(settings.DOVECOT_IMAP_PORT),
        "DOVECOT_MASTER_PASSWORD": settings.DOVECOT_MASTER_PASSWORD,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mssante_portal", "worker", "-Q", "store",
         "--pool=solo", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=Path(__file__).resolve().parents[2], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_export_page_follows_the_job_until_its_result(
    box: Mailbox, keys: Keys, live_server: Any, page: Page, settings: Any, tmp_path: Path
) -> None:
    settings.EXPORT_DIR = tmp_path / "exports"
    recovery_key_set(structure=box.structure, armored=keys.public, actor=None)
    for n in range(3):
        deliver(box.address, make_message(subject=f"Compte rendu {n}", to=box.address))
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, box.structure, Membership.Role.DIRECTOR)
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    base = live_server.url

    sign_in(page, base, director)
    page.goto(f"{base}/console/{box.structure.public_id}/bal/{box.public_id}/exporter/")
    page.get_by_label("Recopiez l'adresse de la BAL pour confirmer").fill(box.address)
    page.get_by_role("button", name="Produire l'export chiffré").click()
    expect(page.get_by_text("Export en attente")).to_be_visible()

    worker = _store_worker()
    try:
        expect(page.get_by_text("Export chiffré enregistré : 3 messages")).to_be_visible(
            timeout=60_000
        )
    finally:
        worker.terminate()
        worker.wait(30)
    job = MailboxJob.objects.get()
    assert job.state == MailboxJob.State.DONE and job.export is not None
    expect(page.get_by_text(job.export.sha256)).to_be_visible()
    expect(page.get_by_role("link", name="Télécharger l'archive chiffrée")).to_be_visible()
    assert blocked == []
