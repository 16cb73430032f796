"""Encrypted export of a whole BAL, and closing a BAL only once such an export exists.

The archive is a tar.gz with one mbox per folder (mboxrd "From " quoting) and a
``manifest.json`` (folders, and for each message its UID, Message-ID and the sha256 of the raw
bytes as Dovecot served them). It is OpenPGP-encrypted to the structure's recovery key, whose
private half never comes to the portal, and written under ``EXPORT_DIR/<structure>/``.
Clear text only ever exists in a private temporary directory that is removed in every case.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import gnupg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Structure, User
from mailboxes.errors import RecoveryKeyMissing, RecoveryKeyUnusable
from mailboxes.models import Mailbox, MailboxAccess, MailboxExport
from mailboxes.services import lifecycle
from mailboxes.store import dovecot
from mailboxes.store.headers import decode_text
from mailboxes.store.imap import MailStore
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

GPG_BINARY = "/usr/bin/gpg"
MAX_KEY_TEXT = 1024 * 1024  # an armoured public key with many signatures stays far below
KEY_SET = "structure.recovery_key_set"
EXPORTED = "mailbox.exported"
MAIL_DELETED = "mailbox.mail_deleted"
# mboxrd: every line starting with zero or more ">" then "From " gets one more ">"; a reader
# removes one, which makes the quoting reversible (unlike mboxo).
FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
UNSAFE_NAME = re.compile(r"[^\w.@+-]+")


def _actor_label(actor: User | None) -> str:
    return "" if actor else "systeme"


@contextmanager
def _keyring() -> Iterator[gnupg.GPG]:
    """A throwaway GNUPGHOME. ``--no-autostart``: nothing here needs a secret key, so no
    gpg-agent is started (it would outlive the directory)."""
    with tempfile.TemporaryDirectory(prefix="mssante-gpg-") as home:
        yield gnupg.GPG(gpgbinary=GPG_BINARY, gnupghome=home, options=["--no-autostart"])


# -- the structure's recovery key ----------------------------------------------------------


def _key_refused(
    structure: Structure, actor: User | None, request: HttpRequest | None, code: str
) -> None:
    audit_record(
        action=KEY_SET,
        actor=actor,
        actor_label=_actor_label(actor),
        target=structure,
        structure=structure,
        success=False,
        error_code=code,
        request=request,
    )


def _validated_key(armored: str) -> tuple[str, str]:
    """(fingerprint, armoured export of the key as gpg read it) or ValidationError."""
    if not armored.strip() or len(armored) > MAX_KEY_TEXT:
        raise ValidationError(
            "Ce texte n'est pas une clé publique OpenPGP : collez le bloc complet, de "
            "« -----BEGIN PGP PUBLIC KEY BLOCK----- » à « -----END PGP PUBLIC KEY BLOCK----- ».",
            code="garbage",
        )
    with _keyring() as gpg:
        # --dry-run --import-options import-show: what the text holds, before importing it.
        scanned = list(gpg.scan_keys_mem(armored))
        if any(key["type"] == "sec" for key in scanned) or "PRIVATE KEY BLOCK" in armored:
            raise ValidationError(
                "Ce texte contient une clé secrète (privée). Ne la déposez jamais ici : "
                "déposez uniquement la clé publique de la structure (gpg --armor --export), "
                "et gardez la clé privée hors ligne.",
                code="secret_key",
            )
        public = [key for key in scanned if key["type"] == "pub"]
        if not public:
            raise ValidationError(
                "Ce texte n'est pas une clé publique OpenPGP : collez le bloc complet, de "
                "« -----BEGIN PGP PUBLIC KEY BLOCK----- » à « -----END PGP PUBLIC KEY "
                "BLOCK----- ».",
                code="garbage",
            )
        if len(public) > 1:
            raise ValidationError(
                "Ce texte contient plusieurs clés : déposez une seule clé publique, celle de "
                "la structure.",
                code="several_keys",
            )
        unusable = ValidationError(
            "Cette clé ne permet pas de chiffrer (expirée, révoquée ou sans sous-clé de "
            "chiffrement) : déposez une clé publique valide, capable de chiffrer.",
            code="unusable_key",
        )
        key = public[0]
        # GnuPG colon listing: trust "r" revoked, "e" expired, "i" invalid; an uppercase "E"
        # in the primary key's capabilities means the key as a whole can encrypt now.
        if key["trust"] in ("r", "e", "i", "d") or "E" not in key["cap"]:
            raise unusable
        imported = gpg.import_keys(armored)
        if imported.count != 1 or len(set(imported.fingerprints)) != 1:
            raise unusable
        fingerprint = imported.fingerprints[0]
        probe = gpg.encrypt(b"", [fingerprint], always_trust=True, armor=False)
        if not probe.ok:
            raise unusable
        return fingerprint, str(gpg.export_keys(fingerprint))


def recovery_key_set(
    *, structure: Structure, armored: str, actor: User | None, request: HttpRequest | None = None
) -> Structure:
    """Record the OpenPGP public key that the structure's BAL exports are encrypted to.

    The key is checked in a throwaway keyring: exactly one public key, no secret key material,
    able to encrypt (not expired, not revoked). A previous key is replaced.
    Raises ValidationError (French; codes garbage, secret_key, several_keys, unusable_key)
    after a failure trace, storing nothing. Traces ``structure.recovery_key_set``.
    """
    try:
        fingerprint, normalized = _validated_key(armored)
    except ValidationError as exc:
        _key_refused(structure, actor, request, exc.code or "invalid")
        raise
    with transaction.atomic():
        structure = Structure.objects.select_for_update().get(pk=structure.pk)
        previous = structure.recovery_key_fingerprint
        structure.recovery_key = normalized
        structure.recovery_key_fingerprint = fingerprint
        structure.recovery_key_uploaded_at = timezone.now()
        structure.save(
            update_fields=["recovery_key", "recovery_key_fingerprint", "recovery_key_uploaded_at"]
        )
        audit_record(
            action=KEY_SET,
            actor=actor,
            actor_label=_actor_label(actor),
            target=structure,
            structure=structure,
            request=request,
            details={"fingerprint": fingerprint, "previous": previous},
        )
    return structure


# -- export --------------------------------------------------------------------------------


@dataclass
class _Exported:
    """What went into an archive: per folder, its UIDVALIDITY and the UIDs written."""

    folders: dict[str, tuple[int, set[int]]] = field(default_factory=dict)


def _message_id(raw: bytes) -> str:
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=-1)
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:end] if end >= 0 else raw)
    return decode_text(headers.get("Message-ID"))[:998]  # 8-bit garbage must not break JSON


def _write_mbox(out: IO[bytes], raw: bytes, internal_date: datetime | None) -> None:
    when = (internal_date or datetime.now(UTC)).astimezone(UTC)
    out.write(b"From MAILER-DAEMON " + when.strftime("%a %b %d %H:%M:%S %Y").encode() + b"\n")
    quoted = FROM_LINE.sub(rb">\1", raw)
    out.write(quoted)
    if not quoted.endswith(b"\n"):
        out.write(b"\n")  # the manifest's size lets a reader drop it again
    out.write(b"\n")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _build_archive(
    mailbox: Mailbox, export_id: uuid.UUID, purpose: str, created: datetime, work: Path
) -> tuple[Path, dict[str, Any], _Exported]:
    """Read every folder over IMAP into ``work/archive.tar.gz``. Raises StoreUnavailable."""
    archive = work / "archive.tar.gz"
    exported = _Exported()
    folders: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    with MailStore(mailbox.address) as store, tarfile.open(archive, "w:gz") as tar:
        for index, folder in enumerate(store.folders(), start=1):
            uidvalidity, uids = store.folder_uids(folder.name)
            member = f"{index:02d}-{UNSAFE_NAME.sub('_', folder.name).strip('._') or 'dossier'}"
            mbox = work / "folder.mbox"
            written: set[int] = set()
            with open(mbox, "wb") as out:
                for uid, raw, flags, internal_date in store.raw_messages(folder.name, uids):
                    _write_mbox(out, raw, internal_date)
                    written.add(uid)
                    messages.append(
                        {
                            "folder": folder.name,
                            "uid": uid,
                            "message_id": _message_id(raw),
                            "sha256": hashlib.sha256(raw).hexdigest(),
                            "size": len(raw),
                            "flags": [f.decode("ascii", "replace") for f in flags],
                            "internal_date": internal_date.isoformat() if internal_date else None,
                        }
                    )
            tar.add(mbox, arcname=f"{member}.mbox", recursive=False)
            mbox.unlink()
            exported.folders[folder.name] = (uidvalidity, written)
            folders.append(
                {
                    "name": folder.name,
                    "file": f"{member}.mbox",
                    "uidvalidity": uidvalidity,
                    "messages": len(written),
                }
            )
        manifest = {
            "format": "mssante-bal-export/1",
            "export": str(export_id),
            "purpose": purpose,
            "address": mailbox.address,
            "kind": mailbox.kind,
            "structure": {
                "public_id": str(mailbox.structure.public_id),
                "name": mailbox.structure.name,
                "identifier_kind": mailbox.structure.identifier_kind,
                "identifier": mailbox.structure.identifier,
            },
            "created_at": created.isoformat(),
            "mbox": "mboxrd",
            "folders": folders,
            "messages": messages,
        }
        data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime = len(data), int(created.timestamp())
        tar.addfile(info, io.BytesIO(data))
    return archive, manifest, exported


def _encrypt(structure: Structure, archive: Path, output: Path) -> None:
    """Encrypt ``archive`` to the recovery key into ``output``. Raises RecoveryKeyUnusable."""
    with _keyring() as gpg:
        imported = gpg.import_keys(structure.recovery_key)
        if structure.recovery_key_fingerprint not in (imported.fingerprints or []):
            raise RecoveryKeyUnusable()
        result = gpg.encrypt_file(
            str(archive),
            [structure.recovery_key_fingerprint],
            always_trust=True,
            armor=False,
            output=str(output),
            extra_args=["--compress-algo", "none"],  # already gzip
        )
        if not result.ok:
            logger.warning("export encryption failed: %s", result.status)
            raise RecoveryKeyUnusable()


def _place(source: Path, directory: Path, stem: str) -> Path:
    """Give ``source`` its final name in ``directory`` without ever replacing a file."""
    for n in range(1, 100):
        target = directory / (f"{stem}.tar.gz.gpg" if n == 1 else f"{stem}-{n}.tar.gz.gpg")
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        source.unlink()
        _fsync_dir(directory)
        return target
    raise FileExistsError(stem)


def _export_failed(
    mailbox: Mailbox, actor: User | None, request: HttpRequest | None, code: str, purpose: str
) -> None:
    audit_record(
        action=EXPORTED,
        actor=actor,
        actor_label=_actor_label(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        success=False,
        error_code=code,
        request=request,
        details={"purpose": purpose},
    )


def _export(
    mailbox: Mailbox, actor: User | None, purpose: str, request: HttpRequest | None
) -> tuple[MailboxExport, _Exported]:
    structure = Structure.objects.get(pk=mailbox.structure_id)
    if not structure.recovery_key:
        _export_failed(mailbox, actor, request, RecoveryKeyMissing.code, purpose)
        raise RecoveryKeyMissing()
    export_id = uuid.uuid4()
    created = timezone.now()
    directory = Path(settings.EXPORT_DIR) / str(structure.public_id)
    stem = f"{mailbox.address}-{created.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    partial = directory / f".{export_id}.partial"
    final: Path | None = None
    export: MailboxExport | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="mssante-export-") as work:
            archive, manifest, exported = _build_archive(
                mailbox, export_id, purpose, created, Path(work)
            )
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _encrypt(structure, archive, partial)
        partial.chmod(0o600)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        size, sha256 = partial.stat().st_size, _sha256(partial)
        final = _place(partial, directory, stem)
        with transaction.atomic():
            export = MailboxExport.objects.create(
                public_id=export_id,
                mailbox=mailbox,
                purpose=purpose,
                actor=actor,
                path=str(final.relative_to(settings.EXPORT_DIR)),
                size=size,
                sha256=sha256,
                messages=len(manifest["messages"]),
                folders=len(manifest["folders"]),
                key_fingerprint=structure.recovery_key_fingerprint,
            )
            audit_record(
                action=EXPORTED,
                actor=actor,
                actor_label=_actor_label(actor),
                target=mailbox,
                structure=structure,
                request=request,
                details={
                    "export": str(export_id),
                    "sha256": sha256,
                    "messages": export.messages,
                    "folders": export.folders,
                    "purpose": purpose,
                },
            )
    except Exception as exc:
        code = exc.code if isinstance(exc, PortalError) else "export_failed"
        _export_failed(mailbox, actor, request, code, purpose)
        raise
    finally:
        # Nothing half-made stays in EXPORT_DIR: no row, no file (a placed file is removed
        # too when its row could not be written).
        partial.unlink(missing_ok=True)
        if export is None and final is not None:
            final.unlink(missing_ok=True)
    return export, exported


def export_path(export: MailboxExport) -> Path:
    """Where the encrypted file of ``export`` is on disk."""
    return Path(settings.EXPORT_DIR) / export.path


def mailbox_export(
    *,
    mailbox: Mailbox,
    actor: User | None,
    purpose: str = MailboxExport.Purpose.EXPORT,
    request: HttpRequest | None = None,
) -> MailboxExport:
    """Write every folder of ``mailbox`` to an archive encrypted to its structure's recovery
    key, under ``EXPORT_DIR/<structure public_id>/``, and record it (size, sha256 of the
    encrypted file, counts, key fingerprint). The BAL itself is not changed.

    Raises ValidationError (code ``closed``) for a closed BAL, RecoveryKeyMissing without a
    recovery key, RecoveryKeyUnusable when gpg refuses the key, StoreUnavailable when Dovecot
    fails; each after a failure trace, leaving no row and no file. Traces ``mailbox.exported``
    (identifiers and counts only). Long-running: call it outside any transaction.
    """
    if mailbox.status == Mailbox.Status.CLOSED:
        _export_failed(mailbox, actor, request, "closed", purpose)
        raise ValidationError("Cette BAL est fermée.", code="closed")
    export, _exported = _export(mailbox, actor, purpose, request)
    return export


# -- closing -------------------------------------------------------------------------------


def _close_refused(
    mailbox: Mailbox, actor: User | None, request: HttpRequest | None, code: str
) -> None:
    audit_record(
        action=lifecycle.LifecycleAction.CLOSED,
        actor=actor,
        actor_label=_actor_label(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        success=False,
        error_code=code,
        request=request,
    )


def _unexported(mailbox: Mailbox, exported: _Exported) -> int:
    """How many messages the BAL holds now that no export of this closing contains."""
    missing = 0
    with MailStore(mailbox.address) as store:
        for folder in store.folders():
            uidvalidity, uids = store.folder_uids(folder.name)
            known_validity, known = exported.folders.get(folder.name, (None, set()))
            missing += len(uids) if uidvalidity != known_validity else len(set(uids) - known)
    return missing


def _merge(into: _Exported, more: _Exported) -> None:
    for name, (validity, uids) in more.folders.items():
        known_validity, known = into.folders.get(name, (validity, set()))
        into.folders[name] = (validity, uids | known if known_validity == validity else uids)


def _after_close(mailbox: Mailbox, actor: User | None, exported: _Exported) -> None:
    """After the closing commit: make sure nothing arrived since the export (mail accepted by
    the gateway before the commit may still land), export again if something did, then stop
    serving the BAL and delete its mail. When that cannot be made sure, the mail is kept."""
    kept_code = ""
    try:
        for _attempt in range(3):
            if not _unexported(mailbox, exported):
                break
            _again, more = _export(mailbox, actor, MailboxExport.Purpose.CLOSE, None)
            _merge(exported, more)
        else:
            if _unexported(mailbox, exported):
                kept_code = "mail_still_arriving"
    except Exception as exc:  # the export traced it; keeping the mail is the safe side
        kept_code = exc.code if isinstance(exc, PortalError) else "export_failed"
    lifecycle.dovecot_users_sync()
    if not kept_code:
        try:
            dovecot.remove_mail_home(dovecot.instance_from_settings(), mailbox.address)
        except (OSError, ValueError):
            logger.exception("could not delete the mail of closed BAL %s", mailbox.public_id)
            kept_code = "delete_failed"
    audit_record(
        action=MAIL_DELETED,
        actor=actor,
        actor_label=_actor_label(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        success=not kept_code,
        error_code=kept_code,
    )


def mailbox_close(
    *, mailbox: Mailbox, actor: User | None, request: HttpRequest | None = None
) -> Mailbox:
    """Close a BAL for good, after an encrypted export of all its mail.

    Order: refuse a closed BAL (ValidationError ``closed``) or a structure without recovery
    key (RecoveryKeyMissing), with a failure trace and nothing changed; export (purpose
    ``close``; its errors propagate, nothing changed); then in one transaction status CLOSED,
    every MailboxAccess deleted, trace ``mailbox.closed`` with the export id and sha256.
    After commit: mail arrived meanwhile is exported too, Dovecot stops serving the address
    and the BAL's Maildir is deleted (trace ``mailbox.mail_deleted``; kept on any doubt).
    """
    if mailbox.status == Mailbox.Status.CLOSED:
        _close_refused(mailbox, actor, request, "closed")
        raise ValidationError("Cette BAL est fermée.", code="closed")
    if not Structure.objects.filter(pk=mailbox.structure_id).exclude(recovery_key="").exists():
        _close_refused(mailbox, actor, request, RecoveryKeyMissing.code)
        raise RecoveryKeyMissing()
    try:
        export, exported = _export(mailbox, actor, MailboxExport.Purpose.CLOSE, request)
    except PortalError as exc:
        _close_refused(mailbox, actor, request, exc.code)
        raise
    with transaction.atomic():
        locked = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
        if locked.status == Mailbox.Status.CLOSED:  # closed concurrently; its export stays
            raise ValidationError("Cette BAL est fermée.", code="closed")
        locked.status = Mailbox.Status.CLOSED
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=["status", "status_changed_at"])
        revoked = MailboxAccess.objects.filter(mailbox=locked).delete()[0]
        audit_record(
            action=lifecycle.LifecycleAction.CLOSED,
            actor=actor,
            actor_label=_actor_label(actor),
            target=locked,
            structure_id=locked.structure_id,
            request=request,
            details={
                "export": str(export.public_id),
                "sha256": export.sha256,
                "accesses_removed": revoked,
            },
        )
        transaction.on_commit(lambda: _after_close(locked, actor, exported))
    return locked
