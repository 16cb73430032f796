"""Delivery status notifications (RFC 3464) that the operator emits: bounces for what the relay
could not deliver and success reports for ``NOTIFY=SUCCESS`` deliveries into our BALs
(mssante-spec §3.5: the DSN is the "accusé de réception MSSanté").

A report is ``multipart/report; report-type=delivery-status`` (RFC 6522) with a human part in
French then English, the machine-readable ``message/delivery-status`` part, and the original
message (``RET=FULL``) or only its headers (``RET=HDRS``, and by default for successes,
RFC 3461 §4.3).
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid

from django.conf import settings

from mailboxes.store.headers import header_set

FULL_RETURN_LIMIT = 1024 * 1024  # above this, a bounce returns headers only


@dataclass(frozen=True)
class ReportRecipient:
    final_recipient: str
    action: str  # RFC 3464 §2.3.3: failed | delayed | delivered | relayed | expanded
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str = ""  # the remote reply, "smtp; 550 5.1.1 ..."
    original_recipient: str = ""  # ORCPT, "rfc822;addr"
    remote_mta: str = ""


@dataclass(frozen=True)
class Report:
    to: str
    original: bytes
    recipients: list[ReportRecipient]
    envid: str = ""
    ret: str = ""
    arrival: datetime | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


def _headers_only(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    if end < 0:
        end = original.find(b"\n\n")
    return original if end < 0 else original[: end + 2]


def _original_subject(original: bytes) -> str:
    parsed = email.message_from_bytes(_headers_only(original), policy=email.policy.default)
    try:
        return str(parsed.get("Subject", "") or "")[:200]
    except (ValueError, IndexError):  # a broken encoded word must not stop a report
        return ""


_FR = {
    "failed": "n'a pas pu être remis",
    "delayed": "n'a pas encore pu être remis (nouvel essai en cours)",
    "delivered": "a été remis dans la boîte aux lettres du destinataire",
    "relayed": "a été transmis à l'opérateur du destinataire",
}
_EN = {
    "failed": "could not be delivered",
    "delayed": "has not been delivered yet (still trying)",
    "delivered": "was delivered to the recipient's mailbox",
    "relayed": "was relayed to the recipient's operator",
}


def _human(report: Report) -> str:
    lines = ["Ceci est un message automatique du service de messagerie MSSanté.", ""]
    for r in report.recipients:
        lines.append(f"Votre message pour <{r.final_recipient}> {_FR.get(r.action, r.action)}.")
        if r.action == "failed":
            lines.append(f"  Raison : {r.diagnostic or r.status}")
    if any(r.action == "failed" for r in report.recipients):
        lines += [
            "",
            "Vérifiez l'adresse du destinataire (elle doit appartenir à l'espace de confiance "
            "MSSanté) ou contactez le support de votre structure.",
        ]
    lines += ["", "---", "", "This is an automatic message from the MSSanté mail service.", ""]
    for r in report.recipients:
        lines.append(f"Your message to <{r.final_recipient}> {_EN.get(r.action, r.action)}.")
        if r.action == "failed":
            lines.append(f"  Reason: {r.diagnostic or r.status}")
    return "\n".join(lines) + "\n"


def _status_part(report: Report) -> Message:
    part = Message()
    part.set_type("message/delivery-status")
    blocks: list[Message | str] = []
    # The fields are headers too (RFC 3464 §2.1): one line each, like every header we write.
    per_message = Message()
    if report.envid:
        header_set(per_message, "Original-Envelope-Id", report.envid)  # RFC 3464 §2.2.1
    header_set(per_message, "Reporting-MTA", f"dns; {settings.RELAY_HOSTNAME}")
    if report.arrival is not None:
        header_set(per_message, "Arrival-Date", format_datetime(report.arrival))
    blocks.append(per_message)
    for r in report.recipients:
        block = Message()
        if r.original_recipient:
            header_set(block, "Original-Recipient", r.original_recipient)
        header_set(block, "Final-Recipient", f"rfc822; {r.final_recipient}")
        header_set(block, "Action", r.action)
        header_set(block, "Status", r.status)
        if r.remote_mta:
            header_set(block, "Remote-MTA", f"dns; {r.remote_mta}")
        if r.diagnostic:
            header_set(block, "Diagnostic-Code", r.diagnostic[:900])
        blocks.append(block)
    part.set_payload(blocks)
    return part


def build(report: Report) -> bytes:
    """The report as bytes, ready for the spool."""
    failed = any(r.action == "failed" for r in report.recipients)
    subject = _original_subject(report.original)
    prefix = "Non remis" if failed else "Remis"
    message = EmailMessage(policy=email.policy.SMTP)
    sender = f"Service de messagerie MSSanté <MAILER-DAEMON@{settings.RELAY_HOSTNAME}>"
    header_set(message, "From", sender)
    header_set(message, "To", report.to)
    header_set(message, "Subject", f"{prefix} : {subject}" if subject else prefix)
    header_set(message, "Date", format_datetime(datetime.now().astimezone()))
    header_set(message, "Message-ID", make_msgid(domain=settings.RELAY_HOSTNAME))
    header_set(message, "Auto-Submitted", "auto-replied")  # RFC 3834 §5: never answered
    for name, value in report.extra_headers.items():
        header_set(message, name, value)
    message.set_content(_human(report), subtype="plain", charset="utf-8")
    message.make_mixed()
    message.replace_header("Content-Type", "multipart/report")
    message.set_param("report-type", "delivery-status")
    message.attach(_status_part(report))  # type: ignore[arg-type]  # a plain Message part

    full = report.ret == "FULL" or (
        failed and report.ret != "HDRS" and len(report.original) <= FULL_RETURN_LIMIT
    )
    returned = Message()
    if full:
        returned.set_type("message/rfc822")
        returned.set_payload([email.message_from_bytes(report.original)])
    else:
        returned.set_type("text/rfc822-headers")  # RFC 6522 §4
        # 8-bit headers (RFC 6532) need a charset, or the generator refuses them.
        returned.set_payload(_headers_only(report.original).decode("utf-8", "replace"), "utf-8")
    message.attach(returned)  # type: ignore[arg-type]
    return message.as_bytes()
