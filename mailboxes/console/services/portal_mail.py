"""Mail the portal itself writes into our BALs: who may use a personal BAL changed, the
structure's recovery key was replaced.

Such a notice goes where its reader already looks every day (the BAL's INBOX, in the webmail
and in any mail client), through the outbound spool like every message: it is durable in the
caller's transaction, delivered over LMTP by the relay, retried if Dovecot is away, and needs
no table or page of its own. It names people and BALs, never a message's content.
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format

from accounts.models import User
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.transport.relay import Recipient, message_spool

SIGNATURE = (
    "\n\nCe message est écrit automatiquement par le portail de votre messagerie MSSanté ; "
    "ne répondez pas à cette adresse."
)


def person_named(user: User | None) -> str:
    """A person as a notice names them: name and national id; None is the operator."""
    if user is None:
        return "l'opérateur de la messagerie (outil d'administration)"
    ident = f" (identifiant national {user.national_id})" if user.national_id else ""
    return f"{user.display_name}{ident}"


def when_text(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "j F Y à H:i")


def portal_mail_send(*, to: list[Mailbox], subject: str, body: str) -> OutboundMessage | None:
    """Spool one notice to the BALs ``to`` (ours: delivered over LMTP). Call it inside the
    transaction of the change it reports, so that both are committed or neither.

    Null reverse-path (RFC 5321 §4.5.5: nothing answers or bounces a notice) and
    ``Auto-Submitted: auto-generated`` (RFC 3834 §5). Returns None when ``to`` is empty."""
    addresses = sorted({box.address for box in to})
    if not addresses:
        return None
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = f"Portail MSSanté <ne-pas-repondre@{settings.RELAY_HOSTNAME}>"
    message["To"] = ", ".join(addresses)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now().astimezone())
    message_id = make_msgid(domain=settings.RELAY_HOSTNAME)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body + SIGNATURE, subtype="plain", charset="utf-8")
    with transaction.atomic():
        return message_spool(
            origin=OutboundMessage.Origin.NOTICE,
            envelope_from="",
            recipients=[Recipient(a, notify="NEVER") for a in addresses],
            content=message.as_bytes(),
            message_id=message_id,
        )
