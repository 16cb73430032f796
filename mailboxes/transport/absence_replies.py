"""The absence reply itself (the task of mailboxes/transport/absence.py): one per sender and
per absence period, spooled as a message of the BAL with the null return path."""

from __future__ import annotations

import email
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import Action, audit_record
from mailboxes.models import Absence, AbsenceReply, Mailbox, OutboundMessage
from mailboxes.store.headers import header_set, header_text
from mailboxes.transport.relay import Recipient, message_spool

SUBJECT_PREFIX = "Absence : "
# RFC 5322 §3.6.4: msg-id = "<" id-left "@" id-right ">"; anything else is left out.
MSG_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")


def _reply(*, absence: Absence, to: str, facts: dict[str, Any]) -> bytes:
    mailbox = absence.mailbox
    local, _, domain = mailbox.address.rpartition("@")
    subject = header_text(str(facts.get("subject", "")))
    original_id = str(facts.get("message_id", "")).strip()
    original_id = original_id if MSG_ID.fullmatch(original_id) else ""
    message = EmailMessage()
    name = mailbox.display_name or mailbox.address
    header_set(message, "From", Address(display_name=name, username=local, domain=domain))
    header_set(message, "To", to)
    # RFC 3834 §3.1.5: the subject says it is an automatic answer to the original one.
    header_set(message, "Subject", f"{SUBJECT_PREFIX}{subject}"[:250])
    header_set(message, "Date", format_datetime(timezone.now()))
    header_set(message, "Message-ID", make_msgid(domain=domain))
    if original_id:
        # RFC 3834 §3.1.3 / §3.1.4: In-Reply-To the original, References its chain then it.
        references = [r for r in MSG_ID.findall(str(facts.get("references", "")))][-10:]
        header_set(message, "In-Reply-To", original_id)
        header_set(message, "References", " ".join([*references, original_id]))
    header_set(message, "Auto-Submitted", "auto-replied")  # RFC 3834 §3.1.7, §5
    header_set(message, "X-MSS-NIL", settings.MSS_NIL)  # Référentiel #2 ECO.2.4.3
    message.set_content(
        f"{absence.text}\n\n"
        f"-- \nRéponse automatique de {mailbox.address} (absence du "
        f"{absence.starts_on:%d/%m/%Y} au {absence.ends_on:%d/%m/%Y}). "
        "Votre message a bien été remis dans cette boîte aux lettres ; il n'a été transféré "
        "à personne.\n"
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def absence_reply(*, bal: str, sender: str, facts: dict[str, Any]) -> bool:
    """Spool the absence reply of ``bal`` to ``sender`` (the task). False when the absence is
    no longer in force today, the BAL not active, or this sender already had the reply of
    this period (the AbsenceReply row, inserted in the same transaction as the spooled
    message: a second task, or a concurrent one, finds it and sends nothing)."""
    today = timezone.localdate()
    absence = (
        Absence.objects.select_related("mailbox")
        .filter(
            mailbox__address=bal.lower(),
            mailbox__status=Mailbox.Status.ACTIVE,
            starts_on__lte=today,
            ends_on__gte=today,
        )
        .first()
    )
    if absence is None:
        return False
    sender = sender.strip().lower()
    try:
        with transaction.atomic():
            AbsenceReply.objects.create(
                mailbox=absence.mailbox, sender=sender, period_start=absence.starts_on
            )
            content = _reply(absence=absence, to=sender, facts=facts)
            # RFC 3834 §3.3 and RFC 5230 §5.1 (Sieve vacation): the response goes out with
            # the null return path, so that nothing (a bounce, another responder) comes
            # back to the responder. RFC 3834 §4: an absence notice goes to the Return-Path,
            # that is the envelope sender.
            spooled = message_spool(
                origin=OutboundMessage.Origin.AUTOREPLY,
                envelope_from="",
                recipients=[Recipient(sender)],
                content=content,
                message_id=email.message_from_bytes(content).get("Message-ID", ""),
                mailbox=absence.mailbox,
            )
            audit_record(
                action=Action.ABSENCE_REPLIED,
                actor_label="systeme",
                target=absence.mailbox,
                structure_id=absence.mailbox.structure_id,
                details={"message": str(spooled.public_id)},
            )
    except IntegrityError:
        return False  # this sender already had the reply of this period
    return True
