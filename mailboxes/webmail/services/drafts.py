"""Drafts: « Enregistrer le brouillon » keeps the message being written in the BAL's Drafts
folder (so that any IMAP client sees it too), one copy per draft: each save appends the new
copy and removes the older ones, found by the draft's token header. Two saves of the same
draft at once: the second is told to wait, nothing is half-saved. Sending a resumed draft
removes it. A health document joined to a draft is kept unbuilt (its PDF and the fields as
typed): reopening the draft shows it again, sending from the draft builds and sends it."""

from __future__ import annotations

import email
import email.policy
import json
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from django.core.cache import cache
from django.http import Http404, HttpRequest

from accounts.audit import Action, audit_record
from accounts.models import User
from mailboxes.access import Access, Grant, require
from mailboxes.errors import MailboxSuspended
from mailboxes.models import Mailbox
from mailboxes.store.imap import DRAFTS, MailStore
from mailboxes.webmail.services.compose import (
    DOCUMENT_FIELDS,
    DRAFT_DOCUMENT_HEADER,
    Attachment,
    Draft,
    DraftDocument,
    message_build,
    safe_filename,
)
from mssante_portal.errors import PortalError

HEADER = "X-MSS-Portal-Draft"
TOKEN = re.compile(r"^[0-9a-f]{32}$")
LOCK_SECONDS = 60


class DraftBusy(PortalError):
    user_message = (
        "Ce brouillon est déjà en cours d'enregistrement (deux enregistrements en même temps) : "
        "réessayez dans un instant."
    )
    code = "draft.busy"
    http_status = 409
    permanent = False


@dataclass(frozen=True)
class OpenedDraft:
    initial: dict[str, Any]  # the compose form's initial values
    attachments: list[Attachment]
    document: DraftDocument | None  # the health document kept unbuilt, if any


def _check(grant: Grant, token: str) -> None:
    require(grant, Access.SEND)  # a draft is a message written in the BAL's name
    if grant.mailbox.status != Mailbox.Status.ACTIVE:
        raise MailboxSuspended
    if not TOKEN.match(token):
        raise Http404


def draft_save(
    *, grant: Grant, actor: User, draft: Draft, token: str, request: HttpRequest | None = None
) -> int:
    """Save ``draft`` as the one copy of draft ``token`` in Drafts; returns its UID."""
    _check(grant, token)
    mailbox = grant.mailbox
    lock = f"draft-lock:{mailbox.pk}:{token}"
    if not cache.add(lock, "1", LOCK_SECONDS):
        raise DraftBusy
    try:
        raw, message_id = message_build(
            mailbox=mailbox, actor=actor, draft=draft, patients=[], keep_bcc=True
        )
        raw = f"{HEADER}: {token}\r\n".encode() + raw
        with MailStore(mailbox.address) as store:
            store.append(DRAFTS, raw, flags=(b"\\Draft", b"\\Seen"))
            copies = store.search_header(DRAFTS, HEADER, token)
            newest = copies[-1]
            store.purge(DRAFTS, copies[:-1])
        audit_record(
            action=Action.DRAFT_SAVED,
            actor=actor,
            target=mailbox,
            structure_id=mailbox.structure_id,
            request=request,
            details={"folder": DRAFTS, "uid": newest, "message_id": message_id},
        )
        return newest
    finally:
        cache.delete(lock)


def _draft_trace(
    grant: Grant,
    actor: User,
    request: HttpRequest | None,
    details: dict[str, Any],
    *,
    error: Exception | None = None,
) -> None:
    code = "" if error is None else getattr(error, "code", "not_found")
    audit_record(
        action=Action.DRAFT_OPENED,
        actor=actor,
        target=grant.mailbox,
        structure_id=grant.mailbox.structure_id,
        success=error is None,
        error_code=code,
        request=request,
        details=details,
    )


def draft_discard(*, grant: Grant, token: str) -> None:
    """After sending: the draft's copies go."""
    require(grant, Access.SEND)
    if not TOKEN.match(token):
        return
    with MailStore(grant.mailbox.address) as store:
        store.purge(DRAFTS, store.search_header(DRAFTS, HEADER, token))


def draft_open(
    *,
    grant: Grant,
    actor: User,
    uid: int,
    purpose: str = "resume",
    request: HttpRequest | None = None,
) -> OpenedDraft:
    """The compose form's initial values, the attachments and the health document of a saved
    draft. Raises Http404 for a missing draft or a message of Drafts that is not one of ours.
    A read of content: traced (``message.draft_opened``, ``purpose`` "resume" or "send"),
    failures too."""
    details: dict[str, Any] = {"folder": DRAFTS, "uid": uid, "purpose": purpose}
    try:
        with MailStore(grant.mailbox.address) as store:
            found = store.fetch(DRAFTS, uid, mark_seen=False)
        if found is None:
            raise Http404
        message = email.message_from_bytes(found[0], policy=email.policy.default)
        if not isinstance(message, EmailMessage) or not TOKEN.match(str(message.get(HEADER, ""))):
            raise Http404  # not one of ours: never resumed
        details["message_id"] = str(message.get("Message-ID", "")).strip()[:998]
    except (PortalError, Http404) as exc:
        _draft_trace(grant, actor, request, details, error=exc)
        raise
    _draft_trace(grant, actor, request, details)
    body = message.get_body(preferencelist=("plain",))
    attachments = []
    pdf: Attachment | None = None
    fields: dict[str, str] = {}
    for part in message.iter_attachments():
        data = part.get_payload(decode=True)
        kind = str(part.get(DRAFT_DOCUMENT_HEADER, "")).strip()
        if kind == "pdf" and isinstance(data, bytes):
            pdf = Attachment(safe_filename(part.get_filename() or ""), "application/pdf", data)
            continue
        if kind == "champs" and isinstance(data, bytes):
            fields = _document_fields(data)
            continue
        attachments.append(
            Attachment(
                safe_filename(part.get_filename() or ""),
                part.get_content_type(),
                data if isinstance(data, bytes) else b"",
            )
        )
    initial = {
        "a": ", ".join(a for _n, a in getaddresses(message.get_all("To", []))),
        "cc": ", ".join(a for _n, a in getaddresses(message.get_all("Cc", []))),
        "cci": ", ".join(a for _n, a in getaddresses(message.get_all("Bcc", []))),
        "objet": str(message.get("Subject", "")),
        "corps": body.get_content() if body is not None else "",
        "accuse_lecture": bool(message.get("Disposition-Notification-To")),
        "en_reponse_a": str(message.get("In-Reply-To", "")),
        "references": str(message.get("References", "")),
        "brouillon": str(message[HEADER]),
        "brouillon_uid": uid,
    }
    document = None
    if pdf is not None:
        document = DraftDocument(pdf.data, pdf.name, fields)
        initial.update(fields, doc_qualifiee=fields.get("doc_qualifiee") == "on")
        initial["doc_du_brouillon"] = True
    return OpenedDraft(initial, attachments, document)


def _document_fields(data: bytes) -> dict[str, str]:
    """The health document's fields as the draft kept them: only the known ones, as short
    strings (the Drafts folder is writable by any IMAP client; the form checks them again
    before anything is sent)."""
    try:
        parsed = json.loads(data[:20_000])
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        name: parsed[name][:100] for name in DOCUMENT_FIELDS if isinstance(parsed.get(name), str)
    }
