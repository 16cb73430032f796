"""What a person does with messages in the webmail, each action traced.

Each action asks the person's grant for its right before the store is touched (reading: READ;
flags, move, put in the Trash: ORGANISE; delete for good, empty the Trash: MANAGE); a refusal
is a failure trace and changes nothing.

Functional traces (Référentiel #2 SC.MSS/CONF.17-18, peers.md §6.1): author (the signed-in
person, also on an ORG BAL), time, action, BAL, folder and message ids, result. Never content:
no subject, no address, no body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.http import Http404
from django.utils import timezone

from accounts.audit import Action, audit_record
from accounts.models import User
from mailboxes.access import Access, Grant, require
from mailboxes.errors import FolderInvalid, HandoverUnavailable, MailboxSuspended
from mailboxes.models import Mailbox, MessageHandling
from mailboxes.store.imap import DONE, TAKEN, TRASH, Criteria, Folder, MailStore, Page, Summary
from mailboxes.store.mime import Attachment, Parsed, attachment_bytes, parse_message
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest


FLAGS = {"seen": b"\\Seen", "flagged": b"\\Flagged"}


@contextmanager
def _traced(
    *,
    grant: Grant,
    actor: User | None,
    action: Action,
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


def _message_ids(store: MailStore, folder: str, uids: Sequence[int]) -> list[str]:
    """The Message-IDs of ``uids``, read before acting (a moved or deleted UID no longer
    names its message), so that the trace says which messages were affected
    (accounts.journal.message_history)."""
    found = store.message_ids(folder, uids)
    return [found[uid] for uid in sorted(found)]


def _check_folder(store: MailStore, folder: str) -> None:
    if not folder or len(folder) > 200 or not store.folder_exists(folder):
        raise FolderInvalid()


@contextmanager
def _session(
    *,
    grant: Grant,
    actor: User | None,
    action: Action,
    request: HttpRequest | None,
    details: dict[str, Any],
    folders: Sequence[str] = (),
    need: Access = Access.READ,
) -> Iterator[tuple[MailStore, dict[str, Any]]]:
    """A traced IMAP session on the BAL: refuses a missing right (before connecting),
    changes to a suspended BAL and unknown folders before the body runs."""
    with _traced(
        grant=grant, actor=actor, action=action, request=request, details=details
    ) as traced:
        require(grant, need)
        with MailStore(grant.mailbox.address) as store:
            if need != Access.READ:
                _writable(grant)
            for folder in folders:
                _check_folder(store, folder)
            yield store, traced


def folder_open(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    page: int = 1,
    per_page: int = 50,
    criteria: Criteria | None = None,
    order: str = "arrival",
    everywhere: bool = False,
    threaded: bool = False,
    request: HttpRequest | None = None,
) -> tuple[list[Folder], Page]:
    """The folders of the BAL with their counts, and one page of ``folder`` (optionally a
    search). ``everywhere``: the search runs in every folder of the BAL, newest first, each
    row naming its folder (``Summary.folder``); without a search it is ignored. ``threaded``:
    the conversation view (``MailStore.thread_page``; not with ``everywhere``, and its order
    is its own). Raises FolderInvalid, StoreUnavailable."""
    searching = criteria is not None and not criteria.is_empty()
    everywhere = everywhere and searching
    details: dict[str, Any] = {"folder": folder, "page": page, "search": searching}
    if everywhere:
        details["everywhere"] = True
    threaded = threaded and not everywhere
    if threaded:
        details["threaded"] = True
    with _session(
        grant=grant,
        actor=actor,
        action=Action.MESSAGE_LIST,
        request=request,
        details=details,
        folders=[folder],
    ) as (store, _):
        folders = store.folders()
        if everywhere:
            assert criteria is not None
            refs = store.everywhere([f.name for f in folders], criteria=criteria)
            total = len(refs)
            number = max(1, min(page, max(1, -(-total // per_page))))
            chunk = refs[(number - 1) * per_page : number * per_page]
            listing = Page(
                folder=folder,
                messages=store.summaries(chunk),
                total=total,
                number=number,
                per_page=per_page,
            )
        elif threaded:
            listing = store.thread_page(
                folder, number=page, per_page=per_page, criteria=criteria if searching else None
            )
        else:
            listing = store.page(
                folder,
                number=page,
                per_page=per_page,
                criteria=criteria if searching else None,
                order=order,
            )
    return folders, listing


def _read(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uid: int,
    request: HttpRequest | None,
    mark_seen: bool,
    details: dict[str, Any],
    action: Action = Action.MESSAGE_READ,
    then: Callable[[MailStore], None] | None = None,
) -> tuple[bytes, Summary, Parsed]:
    """Fetch one message inside a traced session (the trace carries its Message-ID); ``then``
    runs after it in the same IMAP session."""
    with _session(
        grant=grant,
        actor=actor,
        action=action,
        request=request,
        details={"folder": folder, "uid": uid, **details},
        folders=[folder],
    ) as (store, traced):
        found = store.fetch(folder, uid, mark_seen=mark_seen)
        if found is None:
            raise Http404
        raw, summary = found
        parsed = parse_message(raw)
        traced["message_id"] = parsed.message_id
        if then is not None:
            then(store)
    return raw, summary, parsed


def message_open(
    *, grant: Grant, actor: User, folder: str, uid: int, request: HttpRequest | None = None
) -> tuple[Parsed, Summary]:
    """Read one message. Marks it read for who may organise the BAL on an active BAL: a
    read-only delegate leaves the holder's unread mail unread (RFC 4314: without the « s »
    right, FETCH does not set \\Seen). Raises Http404."""
    _raw, parsed, summary = message_read(
        grant=grant, actor=actor, folder=folder, uid=uid, request=request
    )
    return parsed, summary


def message_read(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uid: int,
    request: HttpRequest | None = None,
    then: Callable[[MailStore], None] | None = None,
) -> tuple[bytes, Parsed, Summary]:
    """``message_open`` with the message as stored, for the page that also reads its health
    documents (services.documents.documents_of) without fetching it twice. ``then``: what
    the page reads next in the same IMAP session once the message is read (its neighbours in
    the list), so that one page is one login; an IMAP failure there is the caller's to
    absorb, the read is traced as it went."""
    raw, summary, parsed = _read(
        grant=grant,
        actor=actor,
        folder=folder,
        uid=uid,
        request=request,
        mark_seen=grant.mailbox.status == Mailbox.Status.ACTIVE and grant.allows(Access.ORGANISE),
        details={},
        then=then,
    )
    return raw, parsed, summary


def message_raw(
    *, grant: Grant, actor: User, folder: str, uid: int, request: HttpRequest | None = None
) -> bytes:
    """The message as stored, to forward it whole. Raises Http404; traced as a read."""
    raw, _summary, _parsed = _read(
        grant=grant,
        actor=actor,
        folder=folder,
        uid=uid,
        request=request,
        mark_seen=False,
        details={"purpose": "forward"},
    )
    return raw


def message_print(
    *, grant: Grant, actor: User, folder: str, uid: int, request: HttpRequest | None = None
) -> tuple[Parsed, Summary]:
    """The message for its print page: read (READ) without marking it, traced as a print
    (``message.printed``) with its Message-ID. Raises Http404."""
    _raw, summary, parsed = _read(
        grant=grant,
        actor=actor,
        folder=folder,
        uid=uid,
        request=request,
        mark_seen=False,
        details={},
        action=Action.MESSAGE_PRINTED,
    )
    return parsed, summary


def message_body_open(
    *, grant: Grant, actor: User, folder: str, uid: int, request: HttpRequest | None = None
) -> str | None:
    """The HTML body of a message, unsanitised (the caller sanitises), None when it has none.
    Raises Http404 for a missing message. Traced on its own (``message.body_read``): the frame
    is a URL of its own, fetched with or without the message page."""
    with _session(
        grant=grant,
        actor=actor,
        action=Action.MESSAGE_BODY_READ,
        request=request,
        details={"folder": folder, "uid": uid},
        folders=[folder],
    ) as (store, traced):
        found = store.fetch(folder, uid, mark_seen=False)
        if found is None:
            raise Http404
        parsed = parse_message(found[0])
        traced["message_id"] = parsed.message_id
    return parsed.html


def attachment_open(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uid: int,
    index: int,
    request: HttpRequest | None = None,
    preview: bool = False,
) -> tuple[Attachment, bytes]:
    """One attachment of a message (READ), traced as a download or, with ``preview``, as an
    « aperçu » (the preview page and its frame). Raises Http404."""
    details = {"folder": folder, "uid": uid, "part": index}
    with _session(
        grant=grant,
        actor=actor,
        action=Action.MESSAGE_ATTACHMENT_PREVIEW if preview else Action.MESSAGE_ATTACHMENT_DOWNLOAD,
        request=request,
        details=details,
        folders=[folder],
    ) as (store, traced):
        found = store.fetch(folder, uid, mark_seen=False)
        result = attachment_bytes(found[0], index) if found else None
        if result is None:
            raise Http404
        traced["message_id"] = store.message_ids(folder, [uid]).get(uid, "")
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
    """Set or clear \\Seen or \\Flagged (ORGANISE). Returns the UIDs that existed."""
    details = {"folder": folder, "uids": list(uids), "flag": flag, "on": on}
    with _session(
        grant=grant, actor=actor, action=Action.MESSAGE_FLAG, request=request, details=details,
        folders=[folder], need=Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        traced["message_ids"] = _message_ids(store, folder, uids)
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
    """Move messages to another folder, the Trash included (ORGANISE)."""
    details = {"folder": folder, "uids": list(uids), "target": target}
    with _session(
        grant=grant, actor=actor, action=Action.MESSAGE_MOVE, request=request, details=details,
        folders=[folder, target], need=Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        if target == folder:
            return []
        traced["message_ids"] = _message_ids(store, folder, uids)
        return store.move(folder, uids, target)


@dataclass(frozen=True)
class Removed:
    """What ``messages_delete`` did: the UIDs that existed and their Message-IDs (what
    « Annuler » finds again in the Trash)."""

    uids: list[int]
    message_ids: list[str]


def messages_delete(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uids: Sequence[int],
    request: HttpRequest | None = None,
) -> Removed:
    """Move to Trash (ORGANISE); in Trash, delete for good (MANAGE)."""
    permanent = folder == TRASH
    details = {"folder": folder, "uids": list(uids), "permanent": permanent}
    with _session(
        grant=grant, actor=actor, action=Action.MESSAGE_DELETE, request=request, details=details,
        folders=[folder], need=Access.MANAGE if permanent else Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        traced["message_ids"] = ids = _message_ids(store, folder, uids)
        return Removed(store.delete(folder, uids), ids)


def messages_restore(
    *,
    grant: Grant,
    actor: User,
    message_ids: Sequence[str],
    target: str,
    request: HttpRequest | None = None,
) -> int:
    """« Annuler » after « placés dans la corbeille » (ORGANISE): the messages of the Trash
    with these Message-IDs go back to ``target``, the folder they came from. Returns how many
    were found (a message emptied from the Trash meanwhile is not). Raises FolderInvalid."""
    details: dict[str, Any] = {"folder": TRASH, "target": target}
    with _session(
        grant=grant, actor=actor, action=Action.MESSAGE_RESTORED, request=request,
        details=details, folders=[TRASH, target], need=Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        if target == TRASH:
            return 0
        uids = store.with_message_ids(TRASH, list(message_ids))
        traced["message_ids"] = _message_ids(store, TRASH, uids)
        return len(store.move(TRASH, uids, target))


def trash_empty(*, grant: Grant, actor: User, request: HttpRequest | None = None) -> int:
    """Delete every message of the Trash for good (MANAGE). Returns how many."""
    with _session(
        grant=grant,
        actor=actor,
        action=Action.TRASH_EMPTIED,
        request=request,
        details={},
        need=Access.MANAGE,
    ) as (store, traced):
        traced["count"] = count = store.empty_trash()
    return count


HANDOVER_STEPS = {
    # step: (trace, keywords set, keywords cleared, the row's new state or None to remove it)
    "prendre": (Action.MESSAGE_TAKEN, (TAKEN,), (DONE,), MessageHandling.State.TAKEN),
    "terminer": (Action.MESSAGE_DONE, (DONE,), (TAKEN,), MessageHandling.State.DONE),
    "rendre": (Action.MESSAGE_RELEASED, (), (TAKEN, DONE), None),
}


def message_handle(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uid: int,
    step: str,
    request: HttpRequest | None = None,
) -> MessageHandling | None:
    """The handover of a team BAL's message (ORGANISE): « prendre » (Je m'en occupe: mine,
    visible to the team with the time; taking over a colleague's is allowed and traced with
    their name), « terminer » (done), « rendre » (back to « à traiter »). The keywords in
    Dovecot and the row here change together; the journal keeps the history. Raises
    HandoverUnavailable on a personal BAL or a message without Message-ID, Http404."""
    action, on, off, state = HANDOVER_STEPS[step]
    details: dict[str, Any] = {"folder": folder, "uid": uid}
    with _session(
        grant=grant, actor=actor, action=action, request=request, details=details,
        folders=[folder], need=Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        if grant.mailbox.kind == Mailbox.Kind.PER:
            raise HandoverUnavailable()
        if not store.existing(folder, [uid]):
            raise Http404
        message_id = store.message_ids(folder, [uid]).get(uid, "")
        if not message_id:
            raise HandoverUnavailable()
        traced["message_id"] = message_id
        with transaction.atomic():
            previous = (
                MessageHandling.objects.select_for_update(of=("self",))
                .filter(mailbox=grant.mailbox, message_id=message_id)
                .select_related("by")
                .first()
            )
            if previous is not None and previous.by_id not in (None, actor.pk):
                traced["previous"] = previous.get_state_display()
                traced["previous_by"] = previous.by.display_name if previous.by else ""
            handling: MessageHandling | None = None
            if state is None:
                MessageHandling.objects.filter(
                    mailbox=grant.mailbox, message_id=message_id
                ).delete()
            else:
                handling, _created = MessageHandling.objects.update_or_create(
                    mailbox=grant.mailbox,
                    message_id=message_id,
                    defaults={"state": state, "by": actor, "at": timezone.now()},
                )
            # Inside the transaction: a store failure rolls the row back with it.
            for keyword in off:
                store.set_flag(folder, [uid], keyword, False)
            for keyword in on:
                store.set_flag(folder, [uid], keyword, True)
    return handling
