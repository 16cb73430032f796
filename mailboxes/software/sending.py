"""A message submitted by a software or a mail client (API LPS, port 587): the webmail's checks
and outbound spool (mailboxes.webmail.services.compose, then .outbound like the webmail's
send), for a message the client wrote whole.

RFC 6409 §8 lets the submission server complete and correct the header: `From:` becomes the
BAL (labelled as the webmail labels it, Référentiel #2 ECO.2.2.7), `Sender:` the author when
they are not the holder of a PER BAL, `Bcc:` is removed (RFC 5322 §3.6.3), `X-MSS-NIL` is set
(ECO.2.4.3), `Date:` and `Message-ID:` are added when missing (RFC 6409 §8.2, §8.3).
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, make_msgid

from django.conf import settings

from mailboxes.access import MISSING, Access, grant_for, require
from mailboxes.errors import MailboxSuspended, RightMissing
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.software.sessions import SoftwareSession, certificate_still_bound
from mailboxes.store.headers import header_set
from mailboxes.store.imap import MailStore
from mailboxes.transport.relay import Recipient
from mailboxes.webmail.services.compose import (
    MES_LIMIT,
    MessageTooLarge,
    RecipientsRefused,
    author_header,
    recipients_review,
    sender_label,
)
from mailboxes.webmail.services.outbound import message_commit

REPLACED = ("From", "Sender", "Bcc", "Return-Path", "X-MSS-NIL")


def message_submit(
    *,
    session: SoftwareSession,
    recipients: list[str],
    raw: bytes,
    remote: str | None,
    store: MailStore | None = None,
) -> OutboundMessage:
    """Send ``raw`` (a whole message) from the BAL of ``session`` to ``recipients`` (the
    envelope's RCPT TO). ``store``: an open MailStore on that BAL to file the Sent copy with
    (the submission server keeps one per SMTP session), else one is opened for this message.

    Raises RightMissing without the send right, MailboxSuspended on a suspended BAL,
    RecipientsRefused when any address may not receive (the verdicts attached),
    MessageTooLarge beyond the webmail's limits, StoreUnavailable when the Sent copy cannot be
    stored (nothing is sent then). On success the message is in the spool (durable), in
    Sent, and traced with the software's name."""
    actor = session.user
    if actor is None:
        # A software's certificate (APP BAL): still bound now, not only at AUTH.
        if not certificate_still_bound(session):
            raise RightMissing("Ce certificat n'ouvre plus cette BAL.")
        mailbox = Mailbox.objects.select_related("structure").get(pk=session.grant.mailbox.pk)
    else:
        # The rights as they are now, not as they were at AUTH: a revoked delegation stops
        # the next message of an open session.
        grant = grant_for(actor, session.grant.mailbox)
        if grant is None:
            raise RightMissing(MISSING[Access.SEND])
        require(grant, Access.SEND)
        mailbox = grant.mailbox
    if mailbox.status != Mailbox.Status.ACTIVE:
        raise MailboxSuspended()
    verdicts = recipients_review(recipients)
    if not verdicts or any(not v.ok for v in verdicts):
        raise RecipientsRefused(verdicts)
    patients = [v.patient for v in verdicts if v.patient is not None]
    message = email.message_from_bytes(raw, policy=email.policy.SMTP)
    for name in REPLACED:
        del message[name]
    local, _, domain = mailbox.address.rpartition("@")
    header_set(message, "From", Address(sender_label(mailbox), local, domain))
    # The software that owns an APP BAL writes as the BAL itself: no `Sender:`.
    author = author_header(mailbox=mailbox, actor=actor) if actor is not None else None
    if author is not None:
        header_set(message, "Sender", author)
    if message["Date"] is None:
        header_set(message, "Date", format_datetime(datetime.now().astimezone()))
    message_id = str(message["Message-ID"] or "").strip()
    if not message_id:
        message_id = make_msgid(domain=domain)
        header_set(message, "Message-ID", message_id)
    header_set(message, "X-MSS-NIL", settings.MSS_NIL)  # Référentiel #2 ECO.2.4.3
    content = message.as_bytes()
    limit = MES_LIMIT if patients else settings.COMPOSE_MAX_MESSAGE_BYTES
    if len(content) > limit:
        raise MessageTooLarge(
            user_message=f"Message too large: {len(content)} bytes, the limit is {limit}."
        )
    return message_commit(
        origin=OutboundMessage.Origin.SOFTWARE,
        mailbox=mailbox,
        actor=actor,
        actor_label=session.actor_label,
        recipients=[Recipient(a, "", f"rfc822;{a}") for a in recipients],
        content=content,
        message_id=message_id,
        ip=remote,
        store=store,
        details={
            "message_id": message_id,
            "recipients": len(recipients),
            "patients": len(patients),
            "size": len(content),
            "service": "submission",
            "software": session.software,
        },
    )
