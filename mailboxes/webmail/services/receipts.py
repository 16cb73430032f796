"""Read receipts we send (RFC 8098, reference §3.5): never automatically. When a person opens a
message that asks for one (Disposition-Notification-To), the portal asks; « Envoyer » sends
a `manual-action/MDN-sent-manually; displayed` report, « Ne pas envoyer » sends nothing. Both
set the `$MDNSent` keyword so that the question is asked once per message, whoever opens it
(an ORG BAL is read by several people)."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import Action, audit_record
from accounts.models import User
from mailboxes.access import Access, Grant, require
from mailboxes.errors import MailboxSuspended
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store.headers import header_set, header_text
from mailboxes.store.imap import MDN_SENT, MailStore
from mailboxes.store.mime import parse_message
from mailboxes.transport.relay import Recipient, message_spool
from mailboxes.webmail.services.compose import recipients_review, sender_label
from mssante_portal.errors import PortalError

# RFC 5322 §3.6.4: msg-id = "<" id-left "@" id-right ">", no white space. Anything else in the
# original's Message-ID (a peer's garbage) is left out of the report rather than quoted.
MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")


class ReceiptAlreadySettled(PortalError):
    user_message = "L'accusé de lecture de ce message a déjà été traité."
    code = "mdn.settled"
    http_status = 409


class ReceiptImpossible(PortalError):
    code = "mdn.impossible"
    http_status = 400


def _report(*, mailbox: Mailbox, to: list[str], original_id: str, subject: str) -> bytes:
    own = mailbox.address
    local, _, domain = own.rpartition("@")
    # The original's, as decoded: also written in the text and in the report fields below.
    subject, original_id = header_text(subject), header_text(original_id)
    message = EmailMessage()
    header_set(
        message, "From", Address(display_name=sender_label(mailbox), username=local, domain=domain)
    )
    header_set(message, "To", ", ".join(to))
    header_set(message, "Subject", f"Accusé de lecture : {subject}"[:250])
    header_set(message, "Date", format_datetime(timezone.now()))
    header_set(message, "Message-ID", make_msgid(domain=domain))
    if original_id:
        header_set(message, "In-Reply-To", original_id)
        header_set(message, "References", original_id)
    header_set(message, "X-MSS-NIL", settings.MSS_NIL)
    message.set_content(
        f"Votre message « {subject} » a été affiché dans la boîte {own}.\n\n"
        "Cet accusé indique seulement que le message a été ouvert ; il ne signifie pas qu'il a "
        "été lu, compris ou accepté.\n\n"
        f'Your message "{subject}" was displayed in the mailbox {own}.\n'
    )
    notification = EmailMessage()
    lines = [
        f"Reporting-UA: {settings.RELAY_HOSTNAME}; Portail MSSante",  # ASCII (RFC 8098 §3.2.1)
        f"Final-Recipient: rfc822;{own}",
    ]
    if original_id:
        lines.append(f"Original-Message-ID: {original_id}")
    lines.append("Disposition: manual-action/MDN-sent-manually; displayed")
    notification["Content-Type"] = "message/disposition-notification"
    notification.set_payload("\r\n".join(lines) + "\r\n")
    message.make_mixed()
    message.attach(notification)
    message.replace_header(
        "Content-Type", 'multipart/report; report-type="disposition-notification"'
    )
    message.set_boundary(make_msgid(domain=domain)[1:-1].replace("@", "."))
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def receipt_answer(
    *,
    grant: Grant,
    actor: User,
    folder: str,
    uid: int,
    send: bool,
    request: HttpRequest | None = None,
) -> None:
    """Settle the read-receipt question of one message: send the MDN (``send``) or not.
    Raises RightMissing without the send right (either answer is the BAL's)."""
    require(grant, Access.SEND)  # an MDN is sent in the BAL's name (RFC 8098 §2.1)
    mailbox = grant.mailbox
    if mailbox.status != Mailbox.Status.ACTIVE:
        raise MailboxSuspended
    with MailStore(mailbox.address) as store:
        if not store.folder_exists(folder):
            raise ReceiptImpossible("Ce dossier n'existe pas.")
        found = store.fetch(folder, uid, mark_seen=False)
        if found is None:
            raise ReceiptImpossible("Ce message n'existe plus.")
        raw, summary = found
        if summary.mdn_sent:
            raise ReceiptAlreadySettled
        parsed = parse_message(raw)
        targets = [a for _n, a in getaddresses([parsed.wants_mdn]) if "@" in a][:3]
        if not targets:
            raise ReceiptImpossible("Ce message ne demande pas d'accusé de lecture.")
        if send:
            original_id = parsed.message_id if MSG_ID.fullmatch(parsed.message_id) else ""
            refused = [v for v in recipients_review(targets) if not v.ok]
            if refused:
                raise ReceiptImpossible(
                    f"Accusé impossible : {refused[0].address} — {refused[0].reason}"
                )
            with transaction.atomic():
                # RFC 8098 §3: an MDN goes with a null return path (no DSN about an MDN).
                message_spool(
                    origin=OutboundMessage.Origin.REPORT,
                    envelope_from="",
                    recipients=[Recipient(t, notify="NEVER") for t in targets],
                    content=_report(
                        mailbox=mailbox,
                        to=targets,
                        original_id=original_id,
                        subject=parsed.subject or "(sans objet)",
                    ),
                    mailbox=mailbox,
                    author=actor,
                )
                audit_record(
                    action=Action.MDN_SENT,
                    actor=actor,
                    target=mailbox,
                    structure_id=mailbox.structure_id,
                    request=request,
                    details={"message_id": parsed.message_id[:255]},
                )
        else:
            audit_record(
                action=Action.MDN_DECLINED,
                actor=actor,
                target=mailbox,
                structure_id=mailbox.structure_id,
                request=request,
                details={"message_id": parsed.message_id[:255]},
            )
        store.set_flag(folder, [uid], MDN_SENT, True)
