"""The structure's recovery key, encrypted BAL exports, and closing a BAL only after one
(real Dovecot, real gpg)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import smtplib
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import TestCase
from imapclient import IMAPClient

from accounts.models import AuditEvent, Structure
from mailboxes.console.services import closing as closing_service
from mailboxes.console.services.closing import mailbox_close
from mailboxes.console.services.export import export_path, mailbox_export
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.errors import RecoveryKeyMissing, RecoveryKeyUnusable, StoreUnavailable
from mailboxes.models import Mailbox, MailboxAccess, MailboxExport
from mailboxes.store import dovecot as dovecot_store
from tests.factories import grant, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver
from tests.mailboxes.pgp import Keys

pytestmark = pytest.mark.django_db

MISSING_KEY = (
    "Aucune clé de recouvrement n'est enregistrée pour la structure : déposez la clé publique "
    "OpenPGP de la structure dans la console avant d'exporter ou de fermer une BAL."
)


@pytest.fixture(autouse=True)
def export_dir(settings: Any, tmp_path: Path) -> Path:
    settings.EXPORT_DIR = tmp_path / "exports"
    return Path(settings.EXPORT_DIR)


def _with_key(box: Mailbox, keys: Keys) -> Mailbox:
    recovery_key_set(structure=box.structure, armored=keys.public, actor=None)
    box.refresh_from_db()
    return box


def _imap() -> IMAPClient:
    return IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False)


def _login(imap: IMAPClient, address: str) -> None:
    imap.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)


def _served_by_imap(address: str) -> dict[str, list[bytes]]:
    """Every folder's raw messages, in UID order, as Dovecot serves them."""
    with _imap() as imap:
        _login(imap, address)
        result = {}
        for _flags, _delim, name in imap.list_folders():
            imap.select_folder(name, readonly=True)
            uids = sorted(imap.search(["ALL"]))
            data = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            result[name] = [data[uid][b"BODY[]"] for uid in uids]
        return result


def _body(raw: bytes) -> bytes:
    """The body as it travels: SMTP/LMTP lines end in CRLF (RFC 5321 §2.3.8), which
    smtplib applies to what the test delivers."""
    return re.sub(rb"\r?\n", b"\r\n", raw).split(b"\r\n\r\n", 1)[1]


def _message_id(raw: bytes) -> bytes:
    match = re.search(rb"(?im)^Message-ID:\s*(<[^>]+>)", raw)
    assert match
    return match.group(1)


def _attachment_message(to: str) -> bytes:
    pdf = base64.encodebytes(bytes(range(256)) * 8).replace(b"\n", b"\r\n")
    return (
        (
            f"From: Laboratoire <labo@chu-exemple.mssante.fr>\r\nTo: {to}\r\n"
            "Subject: =?utf-8?q?R=C3=A9sultats_d=27analyse?=\r\n"
            "Date: Tue, 17 Nov 2026 08:00:00 +0100\r\n"
            "Message-ID: <labo-42@chu-exemple.mssante.fr>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="limite"\r\n\r\n'
            "--limite\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            "Résultats : hémoglobine 13,5 g/dL, créatinine normale.\r\n"
            "From the lab, with thanks.\r\n>From a quoted line.\r\n"
            '--limite\r\nContent-Type: application/pdf; name="cr.pdf"\r\n'
            'Content-Disposition: attachment; filename="cr.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + pdf
        + b"--limite--\r\n"
    )


def _folder_messages(manifest: dict[str, Any], extracted: Path, name: str) -> list[bytes]:
    """The raw messages of one folder of an archive, in the manifest's order."""
    entries = [m for m in manifest["messages"] if m["folder"] == name]
    return [(extracted / m["file"]).read_bytes() for m in entries]


def _decrypt(keys: Keys, export: MailboxExport, into: Path) -> tuple[dict[str, Any], Path]:
    clear = into / "archive.tar.gz"
    result = keys.gpg.decrypt_file(str(export_path(export)), output=str(clear))
    assert result.ok, result.status
    extracted = into / "archive"
    with tarfile.open(clear) as tar:
        # Plain files with relative names only (checked here: Debian 12's Python 3.11.2
        # predates extractall(filter="data")).
        members = tar.getmembers()
        assert all(m.isfile() and not m.name.startswith("/") and ".." not in m.name
                   for m in members), [m.name for m in members]  # fmt: skip
        tar.extractall(extracted, members=members)  # noqa: S202 (members checked above)
    return json.loads((extracted / "manifest.json").read_text(encoding="utf-8")), extracted


def _lmtp_code(address: str) -> int:
    with smtplib.LMTP(str(dovecot_store.instance_from_settings().lmtp_socket)) as lmtp:
        lmtp.mail("sonde@localhost")
        return int(lmtp.rcpt(address)[0])


# -- recovery key --------------------------------------------------------------------------


def test_public_key_upload_stores_fingerprint_and_traces(keys: Keys) -> None:
    structure = make_structure()

    recovery_key_set(structure=structure, armored=keys.public, actor=None)

    structure.refresh_from_db()
    assert structure.recovery_key_fingerprint == keys.fingerprint
    assert structure.recovery_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert structure.recovery_key_uploaded_at is not None
    event = AuditEvent.objects.get(action="structure.recovery_key_set")
    assert event.result == "success" and event.target_id == str(structure.public_id)
    assert event.details["fingerprint"] == keys.fingerprint


@pytest.mark.parametrize(
    ("which", "code", "says"),
    [
        ("garbage", "garbage", "n'est pas une clé publique OpenPGP"),
        ("secret", "secret_key", "déposez uniquement la clé publique"),
        ("two", "several_keys", "plusieurs clés"),
        ("sign_only", "unusable_key", "ne permet pas de chiffrer"),
        ("expired", "unusable_key", "ne permet pas de chiffrer"),
    ],
)
def test_refused_keys_store_nothing(keys: Keys, which: str, code: str, says: str) -> None:
    structure = make_structure()
    armored = {
        "garbage": "Bonjour, voici notre clé : 0x1234 (voir pièce jointe)",
        "secret": keys.secret,
        "two": keys.public + "\n" + keys.other_public,
        "sign_only": keys.sign_only,
        "expired": keys.expired,
    }[which]

    with pytest.raises(ValidationError) as exc:
        recovery_key_set(structure=structure, armored=armored, actor=None)

    assert exc.value.code == code
    assert says in exc.value.messages[0]
    stored = Structure.objects.get(pk=structure.pk)
    assert (stored.recovery_key, stored.recovery_key_fingerprint) == ("", "")
    assert stored.recovery_key_uploaded_at is None
    event = AuditEvent.objects.get(action="structure.recovery_key_set")
    assert (event.result, event.error_code) == ("failure", code)


# -- export and close ----------------------------------------------------------------------


def test_close_without_recovery_key_is_refused_and_keeps_everything(box: Mailbox) -> None:
    deliver(box.address, make_message(subject="Avant fermeture"))
    home = dovecot_store.mail_home(dovecot_store.instance_from_settings(), box.address)

    with TestCase.captureOnCommitCallbacks(execute=True), pytest.raises(RecoveryKeyMissing) as exc:
        mailbox_close(mailbox=box, actor=None)

    assert exc.value.user_message == MISSING_KEY
    assert Mailbox.objects.get(pk=box.pk).status == Mailbox.Status.ACTIVE
    event = AuditEvent.objects.get(action="mailbox.closed")
    assert (event.result, event.error_code) == ("failure", "recovery_key_missing")
    assert not MailboxExport.objects.exists()
    assert len(_served_by_imap(box.address)["INBOX"]) == 1
    assert home.is_dir()
    assert _lmtp_code(box.address) == 250


def test_export_without_recovery_key_is_refused_and_traced(box: Mailbox, export_dir: Path) -> None:
    with pytest.raises(RecoveryKeyMissing):
        mailbox_export(mailbox=box, actor=None)

    event = AuditEvent.objects.get(action="mailbox.exported")
    assert (event.result, event.error_code) == ("failure", "recovery_key_missing")
    assert not MailboxExport.objects.exists()
    assert not export_dir.exists() or not any(export_dir.rglob("*"))


def test_close_exports_every_folder_then_deletes_the_mail(
    box: Mailbox, keys: Keys, tmp_path: Path
) -> None:
    box = _with_key(box, keys)
    secretary = make_professional(first_name="Sophie", last_name="Petit", profession="")
    grant(box, secretary)
    plain = [make_message(subject=f"Compte rendu {n}", to=box.address) for n in range(3)]
    for raw in plain:
        deliver(box.address, raw)
    deliver(box.address, _attachment_message(box.address))
    sent = make_message(
        sender=f"Dr Claire Martin <{box.address}>",
        to="paul.durand@chu-exemple.mssante.fr",
        subject="Réponse",
        body="Merci.\r\nFrom now on, write to me here.",
    )
    custom = make_message(subject="Ordre du jour", body="Réunion jeudi.")
    nested = make_message(subject="Comité", body="Procès-verbal.")
    with _imap() as imap:
        _login(imap, box.address)
        imap.append("Sent", sent, flags=[b"\\Seen"])
        imap.create_folder("Réunions")
        imap.create_folder("Réunions/Comités")
        imap.append("Réunions", custom)
        imap.append("Réunions/Comités", nested, flags=[b"\\Flagged"])
    before = _served_by_imap(box.address)
    home = dovecot_store.mail_home(dovecot_store.instance_from_settings(), box.address)
    assert home.is_dir() and len(before["INBOX"]) == 4

    with TestCase.captureOnCommitCallbacks(execute=True):
        closed = mailbox_close(mailbox=box, actor=None)

    export = MailboxExport.objects.get(mailbox=box)
    assert export.purpose == MailboxExport.Purpose.CLOSE
    # 7 folders: INBOX, Drafts, Sent, Accuses, Trash and the two of the BAL's own.
    assert (export.messages, export.folders) == (7, 7)
    assert export.key_fingerprint == keys.fingerprint
    encrypted = export_path(export).read_bytes()
    assert hashlib.sha256(encrypted).hexdigest() == export.sha256 and len(encrypted) == export.size
    assert b"Compte rendu" not in encrypted and "hémoglobine".encode() not in encrypted
    manifest, extracted = _decrypt(keys, export, tmp_path)
    assert manifest["address"] == box.address and manifest["kind"] == "PER"
    assert manifest["export"] == str(export.public_id)
    found: dict[str, list[bytes]] = {}
    for folder in manifest["folders"]:
        found[folder["name"]] = _folder_messages(manifest, extracted, folder["name"])
        assert folder["messages"] == len(found[folder["name"]])
        assert all(m["file"].startswith(folder["directory"] + "/") for m in manifest["messages"]
                   if m["folder"] == folder["name"])  # fmt: skip
    assert found == before  # every folder, every message, byte for byte (no mbox quoting)
    for name, messages in found.items():
        entries = [m for m in manifest["messages"] if m["folder"] == name]
        assert [e["sha256"] for e in entries] == [hashlib.sha256(m).hexdigest() for m in messages]
        assert [e["message_id"] for e in entries] == [_message_id(m).decode() for m in messages]
    delivered = {_message_id(raw): raw for raw in [*plain, _attachment_message(box.address)]}
    for raw in found["INBOX"]:
        assert _body(raw) == _body(delivered[_message_id(raw)])
    assert _body(found["Sent"][0]) == _body(sent)
    assert _body(found["Réunions/Comités"][0]) == _body(nested)

    assert closed.status == Mailbox.Status.CLOSED
    assert Mailbox.objects.get(pk=box.pk).status == Mailbox.Status.CLOSED
    assert not MailboxAccess.objects.filter(mailbox=box).exists()
    event = AuditEvent.objects.get(action="mailbox.closed")
    assert event.result == "success"
    assert event.details["export"] == str(export.public_id)
    assert event.details["sha256"] == export.sha256
    exported = AuditEvent.objects.get(action="mailbox.exported")
    assert exported.details == {
        "export": str(export.public_id),
        "sha256": export.sha256,
        "messages": 7,
        "folders": 7,
        "purpose": "close",
    }
    assert AuditEvent.objects.get(action="mailbox.mail_deleted").result == "success"
    assert not home.exists()
    deadline = time.monotonic() + 3  # Dovecot re-reads its users file at most once a second
    while _lmtp_code(box.address) != 550 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _lmtp_code(box.address) == 550


def test_mail_arriving_during_the_close_export_is_exported_before_deletion(
    box: Mailbox, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = _with_key(box, keys)
    deliver(box.address, make_message(to=box.address))
    late = make_message(subject="Arrivé pendant l'export", to=box.address)
    first_export = closing_service.export_write

    def export_then_mail_arrives(*args: Any, **kwargs: Any) -> Any:
        # The gateway still accepts mail for the BAL until the closing commit.
        result = first_export(*args, **kwargs)
        monkeypatch.setattr(closing_service, "export_write", first_export)
        deliver(box.address, late)
        return result

    monkeypatch.setattr(closing_service, "export_write", export_then_mail_arrives)
    with TestCase.captureOnCommitCallbacks(execute=True):
        mailbox_close(mailbox=box, actor=None)

    first, second = MailboxExport.objects.filter(mailbox=box).order_by("created_at")
    assert (first.messages, second.messages) == (1, 2)
    assert second.purpose == MailboxExport.Purpose.CLOSE
    manifest, extracted = _decrypt(keys, second, tmp_path)
    inbox = _folder_messages(manifest, extracted, "INBOX")
    assert _message_id(late) in [_message_id(m) for m in inbox]
    assert AuditEvent.objects.get(action="mailbox.mail_deleted").result == "success"
    assert not dovecot_store.mail_home(dovecot_store.instance_from_settings(), box.address).exists()


def test_export_alone_leaves_the_bal_active(box: Mailbox, keys: Keys, tmp_path: Path) -> None:
    box = _with_key(box, keys)
    deliver(box.address, make_message(subject="Résultats confidentiels", to=box.address))

    export = mailbox_export(mailbox=box, actor=None)

    assert export.purpose == MailboxExport.Purpose.EXPORT and export.messages == 1
    assert export_path(export).is_file()
    assert export.path.startswith(f"{box.structure.public_id}/{box.address}-")
    manifest, _extracted = _decrypt(keys, export, tmp_path)
    assert [f["messages"] for f in manifest["folders"] if f["name"] == "INBOX"] == [1]
    assert Mailbox.objects.get(pk=box.pk).status == Mailbox.Status.ACTIVE
    assert len(_served_by_imap(box.address)["INBOX"]) == 1
    event = AuditEvent.objects.get(action="mailbox.exported")
    assert event.details["purpose"] == "export"
    assert "Résultats" not in json.dumps(event.details, ensure_ascii=False)


def test_a_key_that_can_no_longer_encrypt_leaves_no_export(
    box: Mailbox, keys: Keys, export_dir: Path
) -> None:
    box = _with_key(box, keys)
    deliver(box.address, make_message(to=box.address))
    # The key expired (or was revoked) after it was uploaded: gpg refuses to encrypt.
    Structure.objects.filter(pk=box.structure_id).update(recovery_key=keys.expired)

    with pytest.raises(RecoveryKeyUnusable):
        mailbox_export(mailbox=box, actor=None)

    assert not MailboxExport.objects.exists()
    assert not any(p.is_file() for p in export_dir.rglob("*"))
    event = AuditEvent.objects.get(action="mailbox.exported")
    assert (event.result, event.error_code) == ("failure", "recovery_key_unusable")


def test_a_store_failure_leaves_no_export_and_keeps_the_bal(
    box: Mailbox, keys: Keys, export_dir: Path, settings: Any, tmp_path: Path
) -> None:
    box = _with_key(box, keys)
    settings.DOVECOT_DIR = tmp_path  # no Dovecot socket there

    with TestCase.captureOnCommitCallbacks(execute=True), pytest.raises(StoreUnavailable):
        mailbox_close(mailbox=box, actor=None)

    assert not MailboxExport.objects.exists()
    assert not any(p.is_file() for p in export_dir.rglob("*"))
    assert Mailbox.objects.get(pk=box.pk).status == Mailbox.Status.ACTIVE
    assert set(AuditEvent.objects.filter(result="failure").values_list("action", "error_code")) == {
        ("mailbox.exported", "store_unavailable"),
        ("mailbox.closed", "store_unavailable"),
    }


def test_a_mail_root_this_process_cannot_see_is_a_failed_deletion(
    box: Mailbox, keys: Keys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A process without the mail volume (a web container started without it) must not trace
    the mail as deleted: the Maildir is still where Dovecot keeps it."""
    box = _with_key(box, keys)
    deliver(box.address, make_message(to=box.address))
    real = dovecot_store.instance_from_settings()
    blind = dataclasses.replace(real, mail_root=tmp_path / "pas-monte")
    monkeypatch.setattr(dovecot_store, "instance_from_settings", lambda: blind)

    with TestCase.captureOnCommitCallbacks(execute=True):
        mailbox_close(mailbox=box, actor=None)

    deleted = AuditEvent.objects.get(action="mailbox.mail_deleted")
    assert (deleted.result, deleted.error_code) == ("failure", "delete_failed")
    assert dovecot_store.mail_home(real, box.address).is_dir()
