"""What the MX of the trust space decides, as plain synchronous functions (the aiosmtpd handler
calls them in a worker thread). Rules: ../shared/reference/mssante-spec.md §1.4 (inbound
algorithm) and §1.5 (TLS); reply codes RFC 5321 §4.2 with RFC 3463 enhanced codes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from functools import cached_property
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.utils import timezone

from accounts.audit import Action, TargetType, audit_event, audit_record_many
from accounts.models import AuditEvent, StructureDomain
from annuaire.selectors import whitelist_allows, whitelist_lists_certificate
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store import lmtp
from mailboxes.transport import dsn as report_dsn
from mailboxes.transport.absence import absence_arrived
from mailboxes.transport.delivery_reports import is_report, report_apply
from mailboxes.transport.gateway.dedup import KEY, TRACE_ACTION, delivery_start, hot_query
from mailboxes.transport.notices import mail_arrived
from mailboxes.transport.quota import FULL_REPLY, usage_of
from mailboxes.transport.relay import Recipient, message_spool
from mailboxes.transport.smtp import orcpt_decode, xtext_decode

logger = logging.getLogger(__name__)

LOCAL_STATUSES = (Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED)


@dataclass(frozen=True)
class Peer:
    subject: x509.Name | None
    tls_version: str
    cipher: str

    @cached_property
    def dn(self) -> str:  # a peer sends many messages: formatted once
        return self.subject.rfc4514_string() if self.subject is not None else ""


def peer_from_der(der: bytes | None, tls_version: str | None, cipher: str | None) -> Peer:
    subject = x509.load_der_x509_certificate(der).subject if der else None
    return Peer(subject=subject, tls_version=tls_version or "", cipher=cipher or "")


def max_recipients() -> int:
    return int(settings.GATEWAY_MAX_RECIPIENTS)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def check_sender(peer: Peer, address: str) -> str | None:
    """None when the sender may send, else the SMTP reply.

    The sender's domain must be in the whitelist and the client certificate's DN listed for
    that domain (§1.4 step 2). The null sender (bounces) is accepted from any listed
    certificate (RFC 5321 §4.5.5)."""
    if peer.subject is None:
        return "530 5.7.0 Client certificate required"
    if address in ("", "<>"):
        if whitelist_lists_certificate(peer.subject):
            return None
        return "550 5.7.1 Certificate not listed in the MSSante whitelist"
    domain = _domain(address)
    if not domain or not whitelist_allows(domain, peer.subject):
        return (
            f"550 5.7.1 Sender domain {domain or '?'} not allowed for this certificate "
            "(MSSante whitelist)"
        )
    return None


RECIPIENT_TTL = 5.0  # seconds a recipient decision is reused (Dovecot itself lags ~1 s)
_recipients: dict[str, tuple[float, str | None]] = {}


def recipient_verdicts_forget() -> None:
    """Forget every recent recipient decision (tests: a verdict of one test must not answer the
    next one's RCPT within RECIPIENT_TTL)."""
    _recipients.clear()


def known_recipient(address: str) -> tuple[bool, str | None]:
    """A recent decision for ``address`` (found, refusal), without touching the database: a
    peer sends many messages to the same BALs, and a BAL closed is refused at most
    RECIPIENT_TTL seconds later."""
    hit = _recipients.get(address.strip().lower())
    if hit is None or time.monotonic() - hit[0] > RECIPIENT_TTL:
        return False, None
    return True, hit[1]


def check_recipient(address: str) -> str | None:
    refusal = _check_recipient(address)
    if len(_recipients) > 50_000:
        _recipients.clear()
    _recipients[address.strip().lower()] = (time.monotonic(), refusal)
    return refusal


def _check_recipient(address: str) -> str | None:
    """None for a BAL we host that can receive, else the SMTP reply. A suspended BAL refuses
    new mail with a temporary code (console rule, issue 7): the sending operator keeps the
    message and retries, so nothing is lost if the BAL is reactivated in time."""
    if not address or "@" not in address:
        return "501 5.1.3 Bad recipient address syntax"
    mailbox = (
        Mailbox.objects.filter(address=address.strip().lower())
        .only("address", "status", "quota_bytes")
        .first()
    )
    if mailbox is None:
        if not StructureDomain.objects.filter(domain=_domain(address)).exists():
            return "550 5.7.1 Relaying denied: we do not host this domain"
        return "550 5.1.1 No such mailbox here"
    if mailbox.status == Mailbox.Status.SUSPENDED:
        return "450 4.2.1 Mailbox temporarily suspended, try again later"
    if mailbox.status not in LOCAL_STATUSES:
        return "550 5.1.1 Mailbox closed"
    if mailbox.quota_bytes is not None and usage_of(mailbox).full:
        return FULL_REPLY  # temporary: the sender keeps the message until room is made
    return None


_date: tuple[int, str] = (0, "")


def _now_rfc5322() -> str:
    """The date of a Received header (RFC 5322 §3.3, local time), formatted once a second."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, formatdate(second, localtime=True))
    return _date[1]


def received_header(peer: Peer, helo: str, client_ip: str) -> bytes:
    """RFC 5321 §4.4 trace header with the TLS version and cipher (RFC 8314 §4.3 style)."""
    line = (
        f"Received: from {helo or 'unknown'} ([{client_ip}])\r\n"
        f"\tby {settings.GATEWAY_HOSTNAME} with ESMTPS "
        f"(version={peer.tls_version} cipher={peer.cipher})\r\n"
        f"\t(peer certificate: {peer.dn}); {_now_rfc5322()}\r\n"
    )
    return line.encode("utf-8", "replace")


def _dsn_of(dsn: dict[str, Any] | None, rcpt: str) -> tuple[str, str]:
    """NOTIFY and ORCPT of a recipient, ORCPT decoded from xtext (RFC 3461 §4.2): kept and
    reported as text, encoded again by the relay."""
    params = ((dsn or {}).get("rcpt") or {}).get(rcpt) or {}
    return str(params.get("NOTIFY", "")).upper(), orcpt_decode(str(params.get("ORCPT", "")))


def _envid_of(dsn: dict[str, Any] | None) -> str:
    """ENVID decoded from xtext (RFC 3461 §4.4); "" when it is not printable text."""
    return xtext_decode(str(((dsn or {}).get("mail") or {}).get("ENVID", ""))) or ""


def _success_report(
    mail_from: str, delivered: list[str], content: bytes, dsn: dict[str, Any] | None
) -> bytes | None:
    """RFC 3464 "delivered" report for the recipients that asked NOTIFY=SUCCESS (RFC 3461
    §6.2.2: the final MTA reports a successful delivery)."""
    wanted = [r for r in delivered if "SUCCESS" in _dsn_of(dsn, r)[0].split(",")]
    if not wanted or not mail_from:
        return None
    mail = (dsn or {}).get("mail") or {}
    return report_dsn.build(
        report_dsn.Report(
            to=mail_from,
            original=content,
            envid=_envid_of(dsn),
            ret=str(mail.get("RET", "")).upper(),
            arrival=timezone.now(),
            recipients=[
                report_dsn.ReportRecipient(
                    final_recipient=r,
                    action="delivered",
                    status="2.0.0",
                    original_recipient=_dsn_of(dsn, r)[1],
                )
                for r in wanted
            ],
        )
    )


def deliver(
    mail_from: str,
    recipients: list[str],
    content: bytes,
    dsn: dict[str, Any] | None = None,
    message_id: str = "",
    reporter: x509.Name | None = None,
    *,
    received: bytes = b"",
    key: str = "",
) -> str:
    """Hand the message to Dovecot over LMTP and answer for it (ARCHITECTURE.md, data flow 1).

    ``content`` is the text as received, ``received`` our trace header to put before it,
    ``key`` its resend key (dedup.resend_key; "" turns the resend check off).
    250 once every recipient has it, or once those Dovecot refused for now are in the durable
    retry spool (PostgreSQL, same transaction as the success reports). Nothing delivered and
    a store failure: 451, the sender keeps the message. Every recipient refused for good: 550.
    """
    # A resend of a message we already delivered (the sender lost our 250): those recipients
    # are answered again without a second copy; this attempt is recorded before Dovecot sees
    # the message (mailboxes/transport/gateway/dedup.py). The check runs while Dovecot reads
    # the envelope (lmtp.deliver's before_data): one wait for both.
    done: set[str] = set()

    def mark() -> set[str]:
        found = delivery_start(key=key, message_id=message_id, recipients=recipients,
                               sender=mail_from, content=content)  # fmt: skip
        done.update(found)
        return done

    text = received + content
    try:
        outcomes = lmtp.deliver(mail_from, recipients, text, before_data=mark)
    except DatabaseError:
        logger.exception("duplicate check failed: the sender keeps the message")
        return "451 4.3.0 Temporary failure, try again later"
    except lmtp.StoreUnreachable:
        return "451 4.3.0 Mail store unavailable, try again later"
    recipients = [r for r in recipients if r not in done]
    if not recipients:
        return "250 2.0.0 Message delivered"
    content = text
    delivered = [r for r in recipients if outcomes[r].delivered]
    failed = [r for r in recipients if not outcomes[r].delivered]
    if not delivered:
        # Every recipient passed check_recipient: a refusal from Dovecot means a BAL it does
        # not know yet (it re-reads its users at most once a second) or a passing fault.
        return "451 4.3.0 Mailbox not available yet, try again later"
    try:
        mail_arrived(delivered)  # new-mail notices (no health data), never delays the reply
    except DatabaseError:
        logger.exception("new-mail notice could not be queued")
    try:
        # Absence messages (RFC 3834): decided from the headers, written by a task after
        # commit: the 250 does not wait for them.
        absence_arrived(delivered, mail_from, content)
    except DatabaseError:
        logger.exception("absence reply could not be queued")
    if is_report(content):
        # A DSN or MDN about something we sent: update the sender's view (« remis », « lu »).
        try:
            report_apply(content, reporter=reporter)
        except (DatabaseError, ValueError, LookupError):
            logger.exception("delivery report could not be applied")  # it is delivered anyway
    try:
        report = _success_report(mail_from, delivered, content, dsn)
    except (ValueError, LookupError, TypeError):
        # It is delivered: a report we cannot build must not turn the 250 into an error.
        logger.exception("success DSN could not be built")
        report = None
    if not failed and report is None:
        return "250 2.0.0 Message delivered"
    mail = (dsn or {}).get("mail") or {}
    try:
        with transaction.atomic():
            if failed:
                # Some BALs could not take it now: keep it for them, the relay retries over
                # LMTP and reports per recipient; the others already have it (no duplicate).
                message_spool(
                    origin=OutboundMessage.Origin.GATEWAY,
                    envelope_from=mail_from,
                    recipients=[Recipient(r, *_dsn_of(dsn, r)) for r in failed],
                    content=content,
                    message_id=message_id,
                    ret=str(mail.get("RET", "")).upper(),
                    envid=_envid_of(dsn),
                )
            if report is not None:
                message_spool(
                    origin=OutboundMessage.Origin.REPORT,
                    envelope_from="",
                    recipients=[Recipient(mail_from)],
                    content=report,
                )
    except DatabaseError:
        if failed:
            # Could not make the rest durable: the sender must retry (those delivered may get
            # a second copy, which is better than a lost one).
            return "451 4.3.0 Temporary failure, try again later"
        logger.exception("success DSN could not be spooled")  # the mail itself is delivered
    if failed:
        return "250 2.0.0 Message accepted (some recipients queued for a new attempt)"
    return "250 2.0.0 Message delivered"


def trace(
    *,
    peer: Peer,
    mail_from: str,
    recipients: list[str],
    message_id: str,
    size: int,
    reply: str,
    dsn: dict[str, object] | None = None,
    key: str = "",
) -> None:
    """Per-transaction trace (mssante-spec §5.2): peer DN, TLS, envelope, Message-ID, size,
    reply, and the resend key (dedup.resend_key) that a resend is recognised by. Never
    content. Committed without waiting for the WAL flush (PostgreSQL
    synchronous_commit off for this transaction only): a database crash may lose the last
    fraction of a second of traces, never a message, and the SMTP reply does not wait.

    On PostgreSQL, one round trip: ``SET LOCAL`` and the INSERT go as one simple-protocol
    query, which the server runs as one implicit transaction (protocol docs, "Multiple
    Statements in a Simple Query"); BEGIN, SET, INSERT and COMMIT would be four per message."""
    success = reply.startswith("250")
    details = {
        "tls": peer.tls_version,
        "cipher": peer.cipher,
        "from": mail_from,
        "to": recipients,
        "size": size,
        "reply": reply[:200],
        "dsn": dsn or {},
    }
    if key:
        details[KEY] = key
    # psycopg's client-side cursors (Django's default) may send several statements at once
    conn = connections[DEFAULT_DB_ALIAS]
    simple_protocol = conn.vendor == "postgresql" and not conn.settings_dict["OPTIONS"].get(
        "server_side_binding"
    )
    if not simple_protocol or not conn.get_autocommit():
        event = audit_event(
            action=TRACE_ACTION,
            actor_label=peer.dn[:150] or "inconnu",
            target_type=TargetType.MESSAGE,
            target_id=message_id[:128],
            success=success,
            error_code="" if success else reply[:3],
            details=details,
        )
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            audit_record_many([event])
        return
    # The same row as audit_event() builds, from a statement prepared once per process: a
    # trace per message, and the ORM's INSERT compilation was a tenth of the gateway's CPU.
    result = AuditEvent.Result.SUCCESS if success else AuditEvent.Result.FAILURE
    params = [str(uuid.uuid4()), peer.dn[:150] or "inconnu", message_id[:128], result,
              "" if success else reply[:3], json.dumps(details)]  # fmt: skip
    hot_query(_trace_sql(), params)


def trace_refusal(*, peer: Peer, mail_from: str, recipient: str, reply: str) -> None:
    """Trace a sender or a recipient the policy refused (whitelist, certificate, unknown or
    full BAL): the operator's console counts refusals by peer and reason from these. Never
    raises for a trace that cannot be written: the refusal goes out all the same."""
    event = audit_event(
        action=Action.GATEWAY_REFUSED,
        actor_label=peer.dn[:150] or "inconnu",
        success=False,
        error_code=reply[:3],
        details={"tls": peer.tls_version, "from": mail_from, "to": recipient, "reply": reply[:200]},
    )
    try:
        audit_record_many([event])
    except DatabaseError:
        logger.exception("gateway refusal trace could not be written (%s)", reply[:3])


_TRACE_SQL: str | None = None


def _trace_sql() -> str:
    """INSERT of a gateway trace (the columns left out are NULL: no actor, structure or IP),
    then SET LOCAL for the implicit transaction of this one simple-protocol query."""
    global _TRACE_SQL
    if _TRACE_SQL is None:  # names and constants of ours only; values go as parameters
        table = AuditEvent._meta.db_table
        _TRACE_SQL = (
            f"INSERT INTO {table} (public_id, occurred_at, actor_label,"  # noqa: S608
            " action, target_type, target_id, result, error_code, details)"
            f" VALUES (%s, now(), %s, '{TRACE_ACTION}', '{TargetType.MESSAGE.value}', %s, %s, %s,"
            " %s::jsonb);"
            " SET LOCAL synchronous_commit TO OFF"
        )
    return _TRACE_SQL
