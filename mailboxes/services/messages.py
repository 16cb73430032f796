"""What a person does with messages in the webmail, each action traced.

Functional traces (Référentiel #2 SC.MSS/CONF.17-18, peers.md §6.1): author (the signed-in
person, also on an ORG BAL), time, action, BAL, folder and message ids, result. Never content:
no subject, no address, no body.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.http import Http404

from accounts.audit import audit_record
from accounts.models import User
from mailboxes.errors import FolderInvalid, MailboxSuspended
from mailboxes.models import Mailbox
from mailboxes.selectors import Grant
from mailboxes.store.imap import TRASH, Criteria, Folder, MailStore, Page, Summary
from mailboxes.store.mime import Attachment, Parsed, attachment_bytes, parse_message
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest


class MessageAction(StrEnum):
    LIST = "message.list"
    READ = "message.read"
    DOWNLOAD = "message.attachment_download"
    FLAG = "message.flag"
    MOVE = "message.move"
    DELETE = "message.delete"
    EMPTY_TRASH = "mailbox.trash_emptied"


FLAGS = {"seen": b"\\Seen", "flagged": b"\\Flagged"}


@contextmanager
def _traced(
    *,
    grant: Grant,
    actor: User,
    action: MessageAction,
    request: HttpRequest | None,
    details: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """Trace the action with its outcome; the body may add ids to ``details``."""
    try:
        yield details
    except (PortalError, Http404) as exc:
        code = exc.code if isinstance(exc, PortalError) else "not_found"
        audit_record(
            action=action,
            actor=actor,
            target=grant.mailbox,
            structure_id=grant.mailbox.structure_id,
            success=False,
            error_code=code,
            request=request,
            details=details,
        )
        raise
    audit_record(
        action=action,
        actor=actor,
        target=grant.mailbox,
        structure_id=grant.mailbox.structure_id,
        request=request,
        details=details,
    )


def _writable(grant: Grant) -> None:
    if grant.mailbox.status == Mailbox.Status.SUSPENDED:
        raise MailboxSuspended()


def _check_folder(store: MailStore, folder: str) -> None:
    if not folder or len(folder) > 200 or not store.folder_exists(folder):
        raise FolderInvalid()


def folder_open(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    page: int = 1,
    per_page: int = 50,
    criteria: Criteria | None = None,
    order: str = "arrival",
    request: HttpRequest | None = None,
) -> tuple[list[Folder], Page]:
    """The folders of the BAL with their counts, and one page of ``folder`` (optionally a
    search). Raises FolderInvalid, StoreUnavailable."""
    searching = criteria is not None and not criteria.is_empty()
    with (
        _traced(
            grant=grant,
            actor=actor,
            action=MessageAction.LIST,
            request=request,
            details={"folder": folder, "page": page, "search": searching},
        ),
        MailStore(grant.mailbox.address) as store,
    ):
        _check_folder(store, folder)
        folders = store.folders()
        listing = store.page(
            folder,
            number=page,
            per_page=per_page,
            criteria=criteria if searching else None,
            order=order,
        )
    return folders, listing


def message_open(
    *, grant: Grant, actor: User, folder: str, uid: int, request: HttpRequest | None = None
) -> tuple[Parsed, Summary]:
    """Read one message (marks it read, except on a suspended BAL). Raises Http404."""
    with (
        _traced(
            grant=grant,
            actor=actor,
            action=MessageAction.READ,
            request=request,
            details={"folder": folder, "uid": uid},
        ) as details,
        MailStore(grant.mailbox.address) as store,
    ):
        _check_folder(store, folder)
        found = store.fetch(folder, uid, mark_seen=grant.mailbox.status == Mailbox.Status.ACTIVE)
        if found is None:
            raise Http404
        raw, summary = found
        parsed = parse_message(raw)
        details["message_id"] = parsed.message_id
    return parsed, summary


def attachment_open(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uid: int,
    index: int,
    request: HttpRequest | None = None,
) -> tuple[Attachment, bytes]:
    with (
        _traced(
            grant=grant,
            actor=actor,
            action=MessageAction.DOWNLOAD,
            request=request,
            details={"folder": folder, "uid": uid, "part": index},
        ),
        MailStore(grant.mailbox.address) as store,
    ):
        _check_folder(store, folder)
        found = store.fetch(folder, uid, mark_seen=False)
        if found is None:
            raise Http404
        result = attachment_bytes(found[0], index)
        if result is None:
            raise Http404
    return result


def messages_flag(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uids: Sequence[int],
    flag: str,
    on: bool,
    request: HttpRequest | None = None,
) -> list[int]:
    """Set or clear \\Seen or \\Flagged. Returns the UIDs that existed."""
    with (
        _traced(
            grant=grant,
            actor=actor,
            action=MessageAction.FLAG,
            request=request,
            details={"folder": folder, "uids": list(uids), "flag": flag, "on": on},
        ),
        MailStore(grant.mailbox.address) as store,
    ):
        _writable(grant)
        _check_folder(store, folder)
        return store.set_flag(folder, uids, FLAGS[flag], on)


def messages_move(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uids: Sequence[int],
    target: str,
    request: HttpRequest | None = None,
) -> list[int]:
    with (
        _traced(
            grant=grant,
            actor=actor,
            action=MessageAction.MOVE,
            request=request,
            details={"folder": folder, "uids": list(uids), "target": target},
        ),
        MailStore(grant.mailbox.address) as store,
    ):
        _writable(grant)
        _check_folder(store, folder)
        _check_folder(store, target)
        return store.move(folder, uids, target) if target != folder else []


def messages_delete(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uids: Sequence[int],
    request: HttpRequest | None = None,
) -> list[int]:
    """Move to Trash; in Trash, delete for good."""
    with (
        _traced(
            grant=grant,
            actor=actor,
            action=MessageAction.DELETE,
            request=request,
            details={"folder": folder, "uids": list(uids), "permanent": folder == TRASH},
        ),
        MailStore(grant.mailbox.address) as store,
    ):
        _writable(grant)
        _check_folder(store, folder)
        return store.delete(folder, uids)


def trash_empty(*, grant: Grant, actor: User, request: HttpRequest | None = None) -> int:
    with (
        _traced(
            grant=grant, actor=actor, action=MessageAction.EMPTY_TRASH, request=request, details={}
        ) as details,
        MailStore(grant.mailbox.address) as store,
    ):
        _writable(grant)
        details["count"] = count = store.empty_trash()
    return count
