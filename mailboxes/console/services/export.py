"""Encrypted export of a whole BAL.

The archive is a tar.gz with one mbox per folder (mboxrd "From " quoting) and a
``manifest.json`` (folders, and for each message its UID, Message-ID and the sha256 of the raw
bytes as Dovecot served them). It is OpenPGP-encrypted to the structure's recovery key
(``recovery_key``), and written under ``EXPORT_DIR/<structure>/``. Clear text only ever exists
in a private temporary directory that is removed in every case.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from accounts.audit import Action, actor_label_of, audit_record
from accounts.models import Structure, User
from mailboxes.console.services.recovery_key import keyring
from mailboxes.errors import RecoveryKeyMissing, RecoveryKeyUnusable
from mailboxes.models import Mailbox, MailboxExport
from mailboxes.store.headers import decode_text
from mailboxes.store.imap import MailStore
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

EXPORTED = Action.MAILBOX_EXPORTED
# mboxrd: every line starting with zero or more ">" then "From " gets one more ">"; a reader
# removes one, which makes the quoting reversible (unlike mboxo).
FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
UNSAFE_NAME = re.compile(r"[^\w.@+-]+")


@dataclass
class Exported:
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
) -> tuple[Path, dict[str, Any], Exported]:
    """Read every folder over IMAP into ``work/archive.tar.gz``. Raises StoreUnavailable."""
    archive = work / "archive.tar.gz"
    exported = Exported()
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
    with keyring() as gpg:
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
        actor_label=actor_label_of(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        success=False,
        error_code=code,
        request=request,
        details={"purpose": purpose},
    )


def export_write(
    mailbox: Mailbox, actor: User | None, purpose: str, request: HttpRequest | None
) -> tuple[MailboxExport, Exported]:
    """Export every folder of ``mailbox`` (see ``mailbox_export``) and say what went in."""
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
                actor_label=actor_label_of(actor),
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


def export_open(
    *, export: MailboxExport, actor: User, request: HttpRequest | None = None
) -> BinaryIO:
    """The encrypted file of ``export``, opened for download. Raises Http404 when it is gone
    from disk. Traced (``mailbox.export_downloaded``, on the BAL, failures too): the archive
    holds every message of the BAL, readable by whoever has the recovery key."""
    mailbox = export.mailbox
    details = {"export": str(export.public_id), "sha256": export.sha256}
    try:
        handle = export_path(export).open("rb")
    except OSError:
        audit_record(
            action=Action.EXPORT_DOWNLOADED,
            actor=actor,
            target=mailbox,
            structure_id=mailbox.structure_id,
            success=False,
            error_code="export_missing",
            request=request,
            details=details,
        )
        raise Http404 from None
    audit_record(
        action=Action.EXPORT_DOWNLOADED,
        actor=actor,
        target=mailbox,
        structure_id=mailbox.structure_id,
        request=request,
        details=details,
    )
    return handle


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
    export, _exported = export_write(mailbox, actor, purpose, request)
    return export
