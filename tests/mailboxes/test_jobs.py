"""Closing and exporting a BAL as jobs of the store worker: the console records the request
and polls the job; the worker (queue ``store``) streams the archive straight into gpg, reports
progress, and ends the job in success or in a failure that says why (real Dovecot, real gpg,
a real Celery worker for the routing)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import html
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, TestCase
from django.urls import reverse
from django.utils import timezone

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import AuditEvent, Membership
from mailboxes.console.services import jobs
from mailboxes.console.services.export import export_path, export_write
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.models import Mailbox, MailboxExport, MailboxJob
from mailboxes.store import dovecot as dovecot_store
from mailboxes.store.imap import MailStore
from tests.factories import make_mailbox, make_membership, make_message, make_professional
from tests.mailboxes.conftest import deliver
from tests.mailboxes.pgp import Keys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def export_dir(settings: Any, tmp_path: Path) -> Path:
    settings.EXPORT_DIR = tmp_path / "exports"
    return Path(settings.EXPORT_DIR)


@pytest.fixture
def secret() -> str:
    """A subject unique to the test, so that archives other tests decrypted do not count."""
    return f"Compte rendu confidentiel {uuid.uuid4().hex}"


@pytest.fixture
def keyed(box: Mailbox, keys: Keys, secret: str) -> Mailbox:
    recovery_key_set(structure=box.structure, armored=keys.public, actor=None)
    for n in range(3):
        deliver(box.address, make_message(subject=f"{secret} {n}", to=box.address))
    box.refresh_from_db()
    return box


def _request(box: Mailbox, kind: str) -> MailboxJob:
    with TestCase.captureOnCommitCallbacks(execute=False):  # no worker here: run it below
        return jobs.job_request(mailbox=box, kind=kind, actor=None)


def _decrypt(keys: Keys, export: MailboxExport, into: Path) -> list[str]:
    clear = into / "archive.tar.gz"
    result = keys.gpg.decrypt_file(str(export_path(export)), output=str(clear))
    assert result.ok, result.status
    with tarfile.open(clear) as tar:
        return tar.getnames()


def _director(box: Mailbox) -> Client:
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, box.structure, Membership.Role.DIRECTOR)
    client = Client()
    client.force_login(director)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time())
    session.save()
    return client


def _clear_text_on_disk(secret: str, *roots: Path) -> list[Path]:
    """Files under ``roots``, Dovecot's own mail aside, that hold a message in clear (or
    gzipped)."""
    mail = Path(settings.DOVECOT_MAIL_ROOT)
    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                if not path.is_file() or path.is_relative_to(mail):
                    continue
                data = path.read_bytes()
                if data.startswith(b"\x1f\x8b"):
                    with contextlib.suppress(OSError, EOFError, zlib.error):
                        data = gzip.decompress(data)
                if secret.encode() in data:
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.fixture
def mid_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Calls the hooks appended to the list after the second message is read from Dovecot,
    while the archive is being written."""
    hooks: list[Any] = []
    real = MailStore.raw_messages

    def reading(self: MailStore, folder: str, uids: Any, **kwargs: Any) -> Iterator[Any]:
        for n, item in enumerate(real(self, folder, uids, **kwargs), start=1):
            yield item
            if folder == "INBOX" and n == 2:
                for hook in hooks:
                    hook()

    monkeypatch.setattr(MailStore, "raw_messages", reading)
    yield hooks


def test_an_export_job_runs_to_success_and_the_archive_decrypts(
    keyed: Mailbox, keys: Keys, tmp_path: Path
) -> None:
    job = _request(keyed, MailboxJob.Kind.EXPORT)
    assert job.state == MailboxJob.State.QUEUED

    assert jobs.job_run(public_id=str(job.public_id)) == MailboxJob.State.DONE

    job.refresh_from_db()
    assert (job.state, job.done, job.total, job.error) == ("termine", 3, 3, "")
    assert job.export is not None and job.export.messages == 3
    assert job.started_at and job.finished_at
    names = _decrypt(keys, job.export, tmp_path)
    assert "manifest.json" in names and len([n for n in names if n.endswith(".eml")]) == 3
    event = AuditEvent.objects.get(action="mailbox.exported")
    assert (event.result, event.details["export"]) == ("success", str(job.export.public_id))
    assert Mailbox.objects.get(pk=keyed.pk).status == Mailbox.Status.ACTIVE
    assert jobs.job_run(public_id=str(job.public_id)) == ""  # delivered twice: runs once


def test_a_close_job_deletes_the_maildir_and_ends_in_success(
    keyed: Mailbox, keys: Keys, tmp_path: Path
) -> None:
    home = dovecot_store.mail_home(dovecot_store.instance_from_settings(), keyed.address)
    assert home.is_dir()
    job = _request(keyed, MailboxJob.Kind.CLOSE)

    assert jobs.job_run(public_id=str(job.public_id)) == MailboxJob.State.DONE

    job.refresh_from_db()
    assert job.state == "termine" and job.export is not None
    assert job.export.purpose == MailboxExport.Purpose.CLOSE
    assert not home.exists()
    assert Mailbox.objects.get(pk=keyed.pk).status == Mailbox.Status.CLOSED
    assert AuditEvent.objects.get(action="mailbox.mail_deleted").result == "success"
    assert len([n for n in _decrypt(keys, job.export, tmp_path) if n.endswith(".eml")]) == 3


def test_a_maildir_that_cannot_be_removed_is_a_failed_job_and_a_failed_trace(
    keyed: Mailbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker does not see the mail (a volume not mounted): the BAL is closed, its export
    kept, but neither the job nor the journal says the mail is gone."""
    real = dovecot_store.instance_from_settings()
    blind = dataclasses.replace(real, mail_root=tmp_path / "pas-monte")
    monkeypatch.setattr(dovecot_store, "instance_from_settings", lambda: blind)
    job = _request(keyed, MailboxJob.Kind.CLOSE)

    assert jobs.job_run(public_id=str(job.public_id)) == MailboxJob.State.FAILED

    job.refresh_from_db()
    assert job.state == "echec"
    assert "n'ont pas pu être supprimés" in job.error and job.export is not None
    deleted = AuditEvent.objects.get(action="mailbox.mail_deleted")
    assert (deleted.result, deleted.error_code) == ("failure", "delete_failed")
    assert dovecot_store.mail_home(real, keyed.address).is_dir()


def test_no_clear_text_touches_the_disk_while_the_export_streams(
    keyed: Mailbox,
    secret: str,
    export_dir: Path,
    mid_stream: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "PROGRESS_EVERY", 1)
    job = _request(keyed, MailboxJob.Kind.EXPORT)
    seen: dict[str, Any] = {}

    def look() -> None:
        seen["files"] = sorted(p.name for p in export_dir.rglob("*") if p.is_file())
        seen["clear"] = _clear_text_on_disk(
            secret, export_dir, Path(settings.VAR_DIR), Path("/tmp")
        )
        seen["progress"] = MailboxJob.objects.values_list("state", "done", "total").get()

    mid_stream.append(look)
    jobs.job_run(public_id=str(job.public_id))

    assert seen["progress"] == ("en_cours", 2, 3)
    assert len(seen["files"]) == 1 and seen["files"][0].endswith(".partial")
    assert seen["clear"] == []
    assert MailboxJob.objects.get().state == "termine"


def test_an_export_interrupted_mid_stream_leaves_nothing_in_export_dir(
    keyed: Mailbox, export_dir: Path, mid_stream: list[Any]
) -> None:
    def crash() -> None:
        raise ConnectionResetError("Dovecot went away")

    mid_stream.append(crash)
    job = _request(keyed, MailboxJob.Kind.CLOSE)

    assert jobs.job_run(public_id=str(job.public_id)) == MailboxJob.State.FAILED

    job.refresh_from_db()
    assert job.state == "echec" and "Vos messages sont conservés" in job.error
    assert not [p for p in export_dir.rglob("*") if p.is_file()]
    assert not MailboxExport.objects.exists()
    assert Mailbox.objects.get(pk=keyed.pk).status == Mailbox.Status.ACTIVE
    event = AuditEvent.objects.get(action="mailbox.exported")
    assert (event.result, event.error_code) == ("failure", "store_unavailable")


def test_a_partial_file_left_by_a_killed_export_is_removed_by_the_next(
    keyed: Mailbox, export_dir: Path
) -> None:
    directory = export_dir / str(keyed.structure.public_id)
    directory.mkdir(parents=True)
    stale = directory / ".0d1e-tue.partial"  # what a SIGKILL leaves: encrypted, incomplete
    stale.write_bytes(b"\x85\x01\x0c")
    live = directory / ".en-cours.partial"  # another export writing right now
    live.write_bytes(b"\x85")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        job = _request(keyed, MailboxJob.Kind.EXPORT)
        assert jobs.job_run(public_id=str(job.public_id)) == MailboxJob.State.DONE

    assert not stale.exists()
    assert live.exists()
    assert [p.name for p in directory.iterdir() if p.name.endswith(".gpg")] == [
        Path(MailboxJob.objects.get().export.path).name  # type: ignore[union-attr]
    ]


def test_one_job_at_a_time_per_bal(keyed: Mailbox) -> None:
    _request(keyed, MailboxJob.Kind.EXPORT)
    with pytest.raises(Exception, match="déjà en cours"):
        _request(keyed, MailboxJob.Kind.CLOSE)
    assert MailboxJob.objects.count() == 1


def test_the_sweep_fails_a_job_whose_worker_died_and_requeues_a_lost_one(
    keyed: Mailbox, export_dir: Path
) -> None:
    running = _request(keyed, MailboxJob.Kind.EXPORT)
    old = timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS + 60)
    MailboxJob.objects.filter(pk=running.pk).update(state="en_cours", heartbeat_at=old)
    other = make_professional(first_name="Paul", last_name="Autre")
    second = make_mailbox(structure=keyed.structure, local_part="paul.autre", owner=other)
    lost = _request(second, MailboxJob.Kind.EXPORT)
    MailboxJob.objects.filter(pk=lost.pk).update(created_at=old)
    left = export_dir / str(keyed.structure.public_id) / ".tue-en-route.partial"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"\x85\x01")  # what the dead worker's export left

    assert jobs.jobs_sweep() == 2

    running.refresh_from_db()
    assert running.state == "echec" and "interrompue" in running.error
    assert MailboxJob.objects.get(pk=lost.pk).state == "en_attente"  # enqueued again
    assert not left.exists()


def test_the_console_shows_the_progress_then_the_result(
    keyed: Mailbox, mid_stream: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "PROGRESS_EVERY", 1)
    client = _director(keyed)
    url = reverse("console:bal_export", args=[keyed.structure.public_id, keyed.public_id])
    with TestCase.captureOnCommitCallbacks(execute=False):
        response = client.post(url, {"confirm": keyed.address})
    job = MailboxJob.objects.get()
    page_url = reverse("console:job", args=[keyed.structure.public_id, job.public_id])
    assert response.status_code == 302 and response["Location"] == page_url
    waiting = html.unescape(client.get(page_url).content.decode())
    assert "Export en attente" in waiting and 'hx-trigger="every 1s"' in waiting
    bal_page = reverse("console:bal", args=[keyed.structure.public_id, keyed.public_id])
    bal = html.unescape(client.get(bal_page).content.decode())
    assert "Un export de cette BAL est en cours." in bal and page_url in bal
    seen: list[str] = []
    mid_stream.append(
        lambda: seen.append(
            html.unescape(client.get(page_url, headers={"HX-Request": "true"}).content.decode())
        )
    )

    jobs.job_run(public_id=str(job.public_id))

    assert "Export en cours : 2 / 3 messages" in seen[0]
    assert '<progress max="3" value="2">' in seen[0] and "<html" not in seen[0]
    done = html.unescape(client.get(page_url, headers={"HX-Request": "true"}).content.decode())
    job.refresh_from_db()
    assert job.export is not None
    assert f"Export chiffré enregistré : 3 messages (SHA-256 {job.export.sha256})" in done
    assert "hx-trigger" not in done  # polling stops
    assert reverse("console:export_download", args=[keyed.structure.public_id,
                                                   job.export.public_id]) in done  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_store_worker_runs_the_job_the_console_enqueued(keyed: Mailbox) -> None:
    """The task goes to the queue `store`, which a worker started with `-Q store` consumes
    (the compose store-worker, make run's store process)."""
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
    client = _director(keyed)
    url = reverse("console:bal_close", args=[keyed.structure.public_id, keyed.public_id])
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mssante_portal", "worker", "-Q", "store",
         "--pool=solo", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=Path(__file__).resolve().parents[2], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert client.post(url, {"confirm": keyed.address}).status_code == 302
        job = MailboxJob.objects.get()
        deadline = time.monotonic() + 90
        while job.state in ("en_attente", "en_cours") and time.monotonic() < deadline:
            time.sleep(0.3)
            job.refresh_from_db()
    finally:
        worker.terminate()
        worker.wait(30)
    assert job.state == "termine", job.error
    home = dovecot_store.mail_home(dovecot_store.instance_from_settings(), keyed.address)
    assert not home.exists()


def test_an_export_killed_mid_stream_leaves_only_encrypted_bytes_then_nothing(
    keyed: Mailbox, secret: str, export_dir: Path, mid_stream: list[Any]
) -> None:
    """SIGKILL in the middle of the archive (a worker killed by the OOM killer, a container
    stopped hard): whatever reached the disk went through gpg, and the next export removes
    it."""
    mid_stream.append(lambda: os.kill(os.getpid(), signal.SIGKILL))
    pid = os.fork()
    if pid == 0:  # the child shares this test's database session: it sees the BAL's rows
        try:
            export_write(keyed, None, MailboxExport.Purpose.EXPORT, None)
        finally:
            os._exit(1)  # not reached: the hook kills the child mid-stream
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    left = [p for p in export_dir.rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].name.endswith(".partial")
    assert _clear_text_on_disk(secret, export_dir, Path(tempfile.gettempdir())) == []
    with open(left[0], "rb") as handle:  # gpg, orphaned, finishes on end of input
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # waits for it to let go
        assert handle.read(1)[0] & 0x80  # an OpenPGP packet (RFC 4880 §4.2), not a tar
    job = _request(keyed, MailboxJob.Kind.EXPORT)
    mid_stream.clear()
    assert jobs.job_run(public_id=str(job.public_id)) == MailboxJob.State.DONE
    assert [p.name for p in export_dir.rglob("*") if p.is_file()] == [
        Path(MailboxJob.objects.get().export.path).name  # type: ignore[union-attr]
    ]
