"""The last step of every send, from the webmail or from a software (API LPS, port 587): the
message into the outbound spool with one delivery per recipient, its trace, and its copy in
the BAL's Sent folder, all or nothing (ARCHITECTURE.md, data flow 2)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.db import transaction

from accounts.audit import Action, audit_record
from accounts.models import User
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store.imap import SENT, MailStore
from mailboxes.transport.relay import Recipient, message_spool

if TYPE_CHECKING:
    from django.http import HttpRequest


def message_commit(
    *,
    origin: str,
    mailbox: Mailbox,
    actor: User | None,
    recipients: list[Recipient],
    content: bytes,
    message_id: str,
    details: dict[str, Any],
    request: HttpRequest | None = None,
    ip: str | None = None,
    store: MailStore | None = None,
    actor_label: str = "",
) -> OutboundMessage:
    """Spool ``content`` (already checked and built) from ``mailbox`` to ``recipients``,
    trace ``message.sent`` by ``actor`` (None: a software's certificate, named by
    ``actor_label``) with ``details`` (identifiers and counts only), and
    append the copy to Sent, in one transaction: the relay task is enqueued after commit
    (``message_spool``). Raises StoreUnavailable when the Sent copy cannot be stored: then
    nothing is spooled nor traced. ``store``: an open session on that BAL to file the copy with
    (the submission server keeps one per SMTP session), else one is opened for this message."""
    with transaction.atomic():
        spooled = message_spool(
            origin=origin,
            envelope_from=mailbox.address,
            recipients=recipients,
            content=content,
            message_id=message_id,
            mailbox=mailbox,
            author=actor,
            ret="HDRS",
            envid=uuid.uuid4().hex,
        )
        audit_record(
            action=Action.MESSAGE_SENT,
            actor=actor,
            actor_label=actor_label,
            target=mailbox,
            structure=mailbox.structure,
            request=request,
            ip=ip,
            details=details,
        )
        # Last, still inside the transaction: if Dovecot refuses the Sent copy nothing is sent.
        if store is not None and store.address == mailbox.address:
            store.append(SENT, content)
        else:
            with MailStore(mailbox.address) as opened:
                opened.append(SENT, content)
    return spooled
