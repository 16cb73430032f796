"""Closing a BAL for good: only once an encrypted export of all its mail exists
(``export``), then its mail is deleted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import Action, actor_label_of, audit_record
from accounts.models import Structure, User
from mailboxes.console.services import lifecycle
from mailboxes.console.services.export import Exported, Progress, export_write
from mailboxes.errors import RecoveryKeyMissing
from mailboxes.models import Mailbox, MailboxAccess, MailboxExport
from mailboxes.store import dovecot
from mailboxes.store.imap import MailStore
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

MAIL_DELETED = Action.MAILBOX_MAIL_DELETED


def _close_refused(
    mailbox: Mailbox, actor: User | None, request: HttpRequest | None, code: str
) -> None:
    audit_record(
        action=Action.MAILBOX_CLOSED,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        success=False,
        error_code=code,
        request=request,
    )


def _unexported(mailbox: Mailbox, exported: Exported) -> int:
    """How many messages the BAL holds now that no export of this closing contains."""
    missing = 0
    with MailStore(mailbox.address) as store:
        for folder in store.folders():
            uidvalidity, uids = store.folder_uids(folder.name)
            known_validity, known = exported.folders.get(folder.name, (None, set()))
            missing += len(uids) if uidvalidity != known_validity else len(set(uids) - known)
    return missing


def _merge(into: Exported, more: Exported) -> None:
    for name, (validity, uids) in more.folders.items():
        known_validity, known = into.folders.get(name, (validity, set()))
        into.folders[name] = (validity, uids | known if known_validity == validity else uids)


def _after_close(mailbox: Mailbox, actor: User | None, exported: Exported) -> str:
    """After the closing commit: make sure nothing arrived since the export (mail accepted by
    the gateway before the commit may still land), export again if something did, then stop
    serving the BAL and delete its mail. When that cannot be made sure, the mail is kept.
    Returns "" when the mail is deleted, else the code of the reason it was kept."""
    kept_code = ""
    try:
        for _attempt in range(3):
            if not _unexported(mailbox, exported):
                break
            _again, more = export_write(mailbox, actor, MailboxExport.Purpose.CLOSE, None)
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
        actor_label=actor_label_of(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        success=not kept_code,
        error_code=kept_code,
    )
    return kept_code


def _close(
    mailbox: Mailbox, actor: User | None, request: HttpRequest | None, progress: Progress | None
) -> tuple[Mailbox, MailboxExport, Exported]:
    """Refusals, the export, then the closing transaction (see ``mailbox_close``)."""
    if mailbox.status == Mailbox.Status.CLOSED:
        _close_refused(mailbox, actor, request, "closed")
        raise ValidationError("Cette BAL est fermée.", code="closed")
    if not Structure.objects.filter(pk=mailbox.structure_id).exclude(recovery_key="").exists():
        _close_refused(mailbox, actor, request, RecoveryKeyMissing.code)
        raise RecoveryKeyMissing()
    try:
        export, exported = export_write(
            mailbox, actor, MailboxExport.Purpose.CLOSE, request, progress
        )
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
            action=Action.MAILBOX_CLOSED,
            actor=actor,
            actor_label=actor_label_of(actor),
            target=locked,
            structure_id=locked.structure_id,
            request=request,
            details={
                "export": str(export.public_id),
                "sha256": export.sha256,
                "accesses_removed": revoked,
            },
        )
    return locked, export, exported


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
    locked, _export, exported = _close(mailbox, actor, request, None)
    transaction.on_commit(lambda: _after_close(locked, actor, exported))
    return locked


@dataclass(frozen=True)
class Closed:
    mailbox: Mailbox
    export: MailboxExport
    kept_code: str  # "" when the mail is deleted, else why it was kept


def mailbox_close_now(
    *, mailbox: Mailbox, actor: User | None, progress: Progress | None = None
) -> Closed:
    """``mailbox_close`` for the store worker, which mounts the mail: the same steps, the
    deletion done before returning rather than after a commit, and its outcome returned
    (``kept_code``) so that a Maildir still there is a failure for the caller. Runs outside
    any transaction (the closing must be committed before the mail goes);
    ``progress(done, total)`` follows the first export."""
    locked, export, exported = _close(mailbox, actor, None, progress)
    return Closed(locked, export, _after_close(locked, actor, exported))
