"""Delivery and read reports that come back for what we sent (mssante-spec §3.5): a DSN
(RFC 3464) from the recipient's operator says « remis » or « échec », an MDN (RFC 8098) says
« lu ». They update the sender's view of each recipient; the report itself is still delivered
to the BAL like any message."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from email.message import Message

from cryptography import x509
from django.db import transaction
from django.utils import timezone

from annuaire.selectors import whitelist_allows
from mailboxes.models import OutboundDelivery

Status = OutboundDelivery.Status


def _address(value: str) -> str:
    """« rfc822; a@b.fr » -> a@b.fr (RFC 3464 §2.3.2 address-type; value)."""
    return value.partition(";")[2].strip().strip("<>").lower() if ";" in value else value.lower()


def _blocks(report: Message, content_type: str) -> list[Message]:
    for part in report.walk():
        if part.get_content_type() == content_type:
            payload = part.get_payload()
            if isinstance(payload, list):
                return [p for p in payload if isinstance(p, Message)]
            if isinstance(payload, str):  # some parsers leave it as text: parse the fields
                return [email.message_from_string(b) for b in payload.split("\n\n") if b.strip()]
    return []


def is_report(raw: bytes) -> bool:
    head = raw[:8192].lower()
    return b"multipart/report" in head


@transaction.atomic
def report_apply(raw: bytes, *, reporter: x509.Name | None = None) -> int:
    """Apply a DSN or an MDN to the deliveries it is about; returns rows updated. Unknown or
    malformed reports change nothing. ``reporter``: the certificate of the operator that
    brought it (gateway); a report about a recipient is only believed from an operator listed
    for that recipient's domain (None: one of our own BALs reports, over LMTP)."""
    report = email.message_from_bytes(raw, policy=email.policy.compat32)
    param = report.get_param("report-type")
    kind = param.lower() if isinstance(param, str) else ""

    def vouched(recipient: str) -> bool:
        domain = recipient.rpartition("@")[2]
        return reporter is None or (bool(domain) and whitelist_allows(domain, reporter))

    if kind == "delivery-status":
        return _apply_dsn(report, vouched)
    if kind == "disposition-notification":
        return _apply_mdn(report, vouched)
    return 0


def _apply_dsn(report: Message, vouched: Callable[[str], bool]) -> int:
    blocks = _blocks(report, "message/delivery-status")
    if len(blocks) < 2:
        return 0
    envid = str(blocks[0].get("Original-Envelope-Id", "")).strip()
    if not envid:
        return 0
    updated = 0
    for block in blocks[1:]:
        recipient = _address(
            str(block.get("Original-Recipient") or block.get("Final-Recipient") or "")
        )
        action = str(block.get("Action", "")).strip().lower()
        if not vouched(recipient):
            continue
        rows = OutboundDelivery.objects.filter(message__envid=envid, recipient=recipient)
        if action == "delivered":
            updated += rows.exclude(status=Status.DELIVERED).update(
                status=Status.DELIVERED, delivered_at=timezone.now()
            )
        elif action == "failed":
            reason = str(block.get("Diagnostic-Code") or block.get("Status") or "")[:500]
            updated += rows.exclude(status=Status.FAILED).update(
                status=Status.FAILED, last_reply=reason
            )
    return updated


def _apply_mdn(report: Message, vouched: Callable[[str], bool]) -> int:
    blocks = _blocks(report, "message/disposition-notification")
    fields: dict[str, str] = {}
    for block in blocks:
        fields.update({k.lower(): str(v) for k, v in block.items()})
    message_id = fields.get("original-message-id", "").strip()
    recipient = _address(fields.get("original-recipient") or fields.get("final-recipient") or "")
    disposition = fields.get("disposition", "").lower()
    if not message_id or "displayed" not in disposition or not vouched(recipient):
        return 0
    return OutboundDelivery.objects.filter(
        message__message_id=message_id, recipient=recipient, read_at__isnull=True
    ).update(read_at=timezone.now())
