"""A BAL's folders of its own: create, rename, delete (empty only), each traced.

Who may classify the BAL's messages (ORGANISE) may also arrange its folders; the folders
every BAL has (INBOX, Sent, Drafts, Trash...: mailboxes.store.imap.SPECIAL_FOLDERS) are never
renamed or deleted, and a name of one's own never takes theirs. A folder is deleted only when
empty: its messages are never lost on the way (the Trash is where a message goes to die).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accounts.audit import Action
from accounts.models import User
from mailboxes.access import Access, Grant
from mailboxes.errors import FolderExists, FolderNameInvalid, FolderNotEmpty, FolderProtected
from mailboxes.store.imap import FOLDER_NAME, SPECIAL_FOLDERS, MailStore
from mailboxes.webmail.services.messages import _session

if TYPE_CHECKING:
    from django.http import HttpRequest

RESERVED = {name.lower() for name in SPECIAL_FOLDERS} | {
    str(label).lower() for label in SPECIAL_FOLDERS.values()
}


def folder_name_clean(name: str) -> str:
    """The name as it will be stored (spaces around removed), or FolderNameInvalid."""
    cleaned = name.strip(" ")
    if not FOLDER_NAME.match(cleaned) or cleaned.startswith(".") or cleaned.lower() in RESERVED:
        raise FolderNameInvalid()
    return cleaned


def _taken(store: MailStore, name: str) -> bool:
    return name.lower() in {n.lower() for n in store.folder_names()}


def _own(folder: str) -> None:
    if folder in SPECIAL_FOLDERS or folder.upper() == "INBOX":
        raise FolderProtected()


def folder_create(
    *, grant: Grant, actor: User, name: str, request: HttpRequest | None = None
) -> str:
    """Create a folder of the BAL's own (ORGANISE). Returns its name as stored. Raises
    FolderNameInvalid, FolderExists, RightMissing, MailboxSuspended."""
    with _session(
        grant=grant, actor=actor, action=Action.FOLDER_CREATED, request=request,
        details={}, need=Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        cleaned = folder_name_clean(name)
        traced["folder"] = cleaned
        if _taken(store, cleaned):
            raise FolderExists()
        store.folder_create(cleaned)
    return cleaned


def folder_rename(
    *, grant: Grant, actor: User, folder: str, name: str, request: HttpRequest | None = None
) -> str:
    """Rename a folder of the BAL's own (ORGANISE); its messages follow. Returns the new
    name. Raises FolderInvalid, FolderProtected, FolderNameInvalid, FolderExists."""
    with _session(
        grant=grant, actor=actor, action=Action.FOLDER_RENAMED, request=request,
        details={"folder": folder}, folders=[folder], need=Access.ORGANISE,
    ) as (store, traced):  # fmt: skip
        _own(folder)
        cleaned = folder_name_clean(name)
        traced["target"] = cleaned
        if cleaned == folder:
            return folder
        if cleaned.lower() != folder.lower() and _taken(store, cleaned):
            raise FolderExists()
        store.folder_rename(folder, cleaned)
    return cleaned


def folder_delete(
    *, grant: Grant, actor: User, folder: str, request: HttpRequest | None = None
) -> None:
    """Delete an empty folder of the BAL's own (ORGANISE). Raises FolderInvalid,
    FolderProtected, FolderNotEmpty."""
    with _session(
        grant=grant, actor=actor, action=Action.FOLDER_DELETED, request=request,
        details={"folder": folder}, folders=[folder], need=Access.ORGANISE,
    ) as (store, _traced):  # fmt: skip
        _own(folder)
        if store.folder_total(folder):
            raise FolderNotEmpty()
        store.folder_delete(folder)
