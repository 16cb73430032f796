"""Absence messages (« message d'absence »): a personal responder in the sense of RFC 3834.

A BAL with an absence in force answers once per sender and per absence period, with its own
address in From and the text its holder wrote; the reply goes through the outbound spool like
any message of the BAL (the relay's trust-space checks, retries, delivery reports). It is never
a forward: nothing of the original but its subject and Message-ID goes back, and only to the
sender (forwarding stays forbidden in the trust space, seed FAQ).

The delivery paths (gateway, relay's local delivery) call ``absence_arrived`` after the store
took the message: for BALs without an absence it costs a set lookup (the watched addresses
are re-read every 30 s per process); for the others the headers are read and the RFC 3834 §2
rules applied, then a task is enqueued after commit: the 250 never waits for a reply to be
written. The task (``absence_replies.absence_reply``) takes the per-sender row and spools the reply
in one transaction.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import threading
import time
from collections.abc import Iterable
from email.message import Message
from email.utils import getaddresses
from functools import partial

from celery import current_app
from django.db import transaction
from django.utils import timezone

from annuaire.ins import PATIENT_DOMAIN
from mailboxes.models import Absence, Mailbox
from mailboxes.store.headers import decode_text, header_section

logger = logging.getLogger(__name__)

ABSENCE_TASK = "mailboxes.tasks.send_absence_reply"
WATCH_SECONDS = 30.0
# RFC 3834 §2: no response to a sender that is a mailing list, a list request address or a
# mail system (« owner-* », « *-request », « MAILER-DAEMON »; LISTSERV and majordomo alike).
_ROBOT = re.compile(r"^(mailer-daemon|listserv|majordomo|owner-.*|.*-owner|.*-request)$", re.I)

RECIPIENT_FIELDS = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")

_watch_lock = threading.Lock()
_watch: tuple[float, frozenset[str]] = (0.0, frozenset())


def _watched() -> frozenset[str]:
    """The addresses of the BALs whose absence is in force today (per process, 30 s)."""
    global _watch
    loaded_at, addresses = _watch
    if time.monotonic() - loaded_at < WATCH_SECONDS:
        return addresses
    with _watch_lock:
        today = timezone.localdate()
        addresses = frozenset(
            Absence.objects.filter(
                starts_on__lte=today, ends_on__gte=today, mailbox__status=Mailbox.Status.ACTIVE
            ).values_list("mailbox__address", flat=True)
        )
        _watch = (time.monotonic(), addresses)
    return addresses


def absence_watch_reset() -> None:
    """Forget the watched addresses of this process (after an absence was set or stopped)."""
    global _watch
    _watch = (0.0, frozenset())


def _addresses(headers: Message, *names: str) -> list[str]:
    values = [decode_text(v) for name in names for v in (headers.get_all(name) or [])]
    return [a.strip().lower() for _n, a in getaddresses(values) if "@" in a]


def refusal(*, bal: str, mail_from: str, headers: Message) -> str | None:
    """Why ``bal`` must not answer this message automatically, or None when it may.
    ``headers`` is the header section as parsed by ``email`` (compat32 policy: never raises).
    Each rule is RFC 3834 §2 unless said otherwise."""
    bal, sender = bal.lower(), mail_from.strip().strip("<>").lower()
    if not sender:
        return "null_sender"  # a bounce or a report: never answered
    auto = decode_text(headers.get("Auto-Submitted", "")).strip().lower()
    if auto and auto.split(";")[0].strip() != "no":
        return "auto_submitted"  # auto-generated or auto-replied already (§5)
    if decode_text(headers.get("Precedence", "")).strip().lower() in ("bulk", "list", "junk"):
        return "precedence"
    # Microsoft's X-Auto-Response-Suppress ([MS-OXCMAIL]): « OOF » or « All » asks
    # for no out-of-office reply; not RFC 3834, honoured because peers send it.
    suppress = decode_text(headers.get("X-Auto-Response-Suppress", "")).lower()
    if {"oof", "all"} & {v.strip() for v in suppress.split(",")}:
        return "suppressed"
    if any(name.lower().startswith("list-") for name in headers):
        return "list"  # List-Id, List-Unsubscribe... (RFC 2369, RFC 2919)
    local, _, domain = sender.rpartition("@")
    if _ROBOT.match(local):
        return "robot_address"
    if headers.get_content_type() == "multipart/report":
        return "report"  # DSN, MDN (RFC 6522)
    from_header = _addresses(headers, "From")
    # Never write to a patient's Mon Espace Santé address (annuaire/ins.py, mssante-spec §3.7):
    # a patient would learn that a professional is away, and mail to patients is written by a
    # person.
    if domain == PATIENT_DOMAIN or any(a.endswith("@" + PATIENT_DOMAIN) for a in from_header):
        return "patient"
    if sender == bal:
        return "self"
    # §2: an absence notice only where the recipient's address is explicitly in a recipient
    # field (« To, Cc, Bcc, Resent-To, Resent-Cc, or Resent-Bcc »), not for mail that reached
    # the BAL through a list or an alias.
    if bal not in _addresses(headers, *RECIPIENT_FIELDS):
        return "not_addressed"
    return None


def absence_arrived(addresses: Iterable[str], mail_from: str, content: bytes) -> int:
    """Mail from ``mail_from`` was delivered to these addresses: for each BAL with an absence
    in force that may answer it (``refusal``), enqueue the reply task after commit. Reads only
    the header section. Returns how many replies were enqueued."""
    wanted = _watched().intersection(a.lower() for a in addresses)
    if not wanted:
        return 0
    headers = email.message_from_bytes(header_section(content), policy=email.policy.compat32)
    facts = {
        "message_id": decode_text(headers.get("Message-ID", "")).strip(),
        "subject": decode_text(headers.get("Subject", "")),
        "references": decode_text(headers.get("References", "")),
    }
    queued = 0
    for bal in sorted(wanted):
        why = refusal(bal=bal, mail_from=mail_from, headers=headers)
        if why is not None:
            logger.debug("no absence reply from %s: %s", bal, why)
            continue
        sender = mail_from.strip().strip("<>")
        transaction.on_commit(
            partial(current_app.send_task, ABSENCE_TASK, args=[bal, sender, facts])
        )
        queued += 1
    return queued
