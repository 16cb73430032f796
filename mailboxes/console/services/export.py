"""Encrypted export of a whole BAL.

The archive is a tar.gz with one directory per folder, one ``<uid>.eml`` per message (the raw
bytes as Dovecot served them) and a ``manifest.json`` (folders, and for each message its
file, UID, Message-ID and sha256). It is streamed straight into gpg, encrypted to the
structure's recovery key (``recovery_key``), and written under ``EXPORT_DIR/<structure>/``:
clear text never touches a disk. gpg writes into a hidden ``.<id>.partial`` file, locked
while it is being written and renamed once complete; a partial file left by a killed process
(encrypted, but incomplete) is removed by the next export.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable
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
UNSAFE_NAME = re.compile(r"[^\w.@+-]+")
PARTIAL = ".{}.partial"

# progress(done, total): messages written so far, and how many the BAL held at the start.
Progress = Callable[[int, int], None]


@dataclass
class Exported:
    """What went into an archive: per folder, its UIDVALIDITY and the UIDs written."""

    folders: dict[str, tuple[int, set[int]]] = field(default_factory=dict)


def _message_id(raw: bytes) -> str:
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=-1)
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:end] if end >= 0 else raw)
    return decode_text(headers.get("Message-ID"))[:998]  # 8-bit garbage must not break JSON


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


def _member(tar: tarfile.TarFile, name: str, data: bytes, when: datetime) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(when.timestamp()), 0o600
    tar.addfile(info, io.BytesIO(data))


def _stream_archive(
    mailbox: Mailbox,
    export_id: uuid.UUID,
    purpose: str,
    created: datetime,
    out: IO[bytes],
    progress: Progress | None,
) -> tuple[dict[str, Any], Exported]:
    """Read every folder over IMAP and write the tar.gz to ``out`` as it comes (streaming
    tar: nothing is seekable, nothing is kept). Raises StoreUnavailable."""
    exported = Exported()
    folders: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    with MailStore(mailbox.address) as store:
        listing = [(f.name, *store.folder_uids(f.name)) for f in store.folders()]
        total, done = sum(len(uids) for _name, _validity, uids in listing), 0
        if progress:
            progress(done, total)
        with tarfile.open(fileobj=out, mode="w|gz") as tar:
            for index, (name, uidvalidity, uids) in enumerate(listing, start=1):
                directory = f"{index:02d}-{UNSAFE_NAME.sub('_', name).strip('._') or 'dossier'}"
                written: set[int] = set()
                for uid, raw, flags, internal_date in store.raw_messages(name, uids):
                    file = f"{directory}/{uid}.eml"
                    _member(tar, file, raw, internal_date or created)
                    written.add(uid)
                    messages.append(
                        {
                            "folder": name,
                            "file": file,
                            "uid": uid,
                            "message_id": _message_id(raw),
                            "sha256": hashlib.sha256(raw).hexdigest(),
                            "size": len(raw),
                            "flags": [f.decode("ascii", "replace") for f in flags],
                            "internal_date": internal_date.isoformat() if internal_date else None,
                        }
                    )
                    done += 1
                    if progress:
                        progress(done, total)
                exported.folders[name] = (uidvalidity, written)
                folders.append(
                    {
                        "name": name,
                        "directory": directory,
                        "uidvalidity": uidvalidity,
                        "messages": len(written),
                    }
                )
            manifest = {
                "format": "mssante-bal-export/2",
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
                "folders": folders,
                "messages": messages,
            }
            data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
            _member(tar, "manifest.json", data, created)
    return manifest, exported


def _encrypt_stream(
    structure: Structure, output: IO[bytes], write: Callable[[IO[bytes]], Any]
) -> Any:
    """Run ``write(stdin)`` into a gpg encrypting to the recovery key, gpg writing to
    ``output``; return what ``write`` returned. Raises RecoveryKeyUnusable when gpg refuses
    the key; whatever ``write`` raises stops gpg and propagates."""
    with keyring() as gpg:
        imported = gpg.import_keys(structure.recovery_key)
        if structure.recovery_key_fingerprint not in (imported.fingerprints or []):
            raise RecoveryKeyUnusable()
        with tempfile.TemporaryFile() as errors:  # gpg's diagnostics, never mail
            process = subprocess.Popen(  # noqa: S603 (fixed binary, no shell)
                [
                    gpg.gpgbinary,
                    "--homedir",
                    str(gpg.gnupghome),
                    "--batch",
                    "--no-tty",
                    "--no-autostart",
                    "--trust-model",
                    "always",
                    "--compress-algo",
                    "none",  # already gzip
                    "--encrypt",
                    "--recipient",
                    structure.recovery_key_fingerprint,
                ],
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=errors,
            )
            assert process.stdin is not None
            try:
                result = write(process.stdin)
                process.stdin.close()
            except BrokenPipeError:
                result = None  # gpg stopped reading: it refused the key (returncode below)
                with contextlib.suppress(OSError):
                    process.stdin.close()
            except BaseException:
                process.kill()
                process.wait()
                with contextlib.suppress(OSError):
                    process.stdin.close()
                raise
            if process.wait() != 0 or result is None:
                errors.seek(0)
                logger.warning("export encryption failed: %s", errors.read(2000))
                raise RecoveryKeyUnusable()
    return result


def export_partials_purge(directory: Path) -> int:
    """Remove the partial files in ``directory`` that no live export is writing (their lock
    is free): what a killed export left. Returns how many were removed."""
    removed = 0
    for path in directory.glob(PARTIAL.format("*")):
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed below, after the lock test)
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being written right now
            path.unlink(missing_ok=True)
            removed += 1
    return removed


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
    mailbox: Mailbox,
    actor: User | None,
    purpose: str,
    request: HttpRequest | None,
    progress: Progress | None = None,
) -> tuple[MailboxExport, Exported]:
    """Export every folder of ``mailbox`` (see ``mailbox_export``) and say what went in;
    ``progress(done, total)`` is called as messages are written."""
    structure = Structure.objects.get(pk=mailbox.structure_id)
    if not structure.recovery_key:
        _export_failed(mailbox, actor, request, RecoveryKeyMissing.code, purpose)
        raise RecoveryKeyMissing()
    export_id = uuid.uuid4()
    created = timezone.now()
    directory = Path(settings.EXPORT_DIR) / str(structure.public_id)
    stem = f"{mailbox.address}-{created.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    partial = directory / PARTIAL.format(export_id)
    final: Path | None = None
    export: MailboxExport | None = None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        export_partials_purge(directory)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as output:
            fcntl.flock(output.fileno(), fcntl.LOCK_EX)  # held until closed: not stale
            manifest, exported = _encrypt_stream(
                structure,
                output,
                lambda stdin: _stream_archive(
                    mailbox, export_id, purpose, created, stdin, progress
                ),
            )
            output.flush()
            os.fsync(output.fileno())
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
    progress: Progress | None = None,
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
    export, _exported = export_write(mailbox, actor, purpose, request, progress)
    return export
