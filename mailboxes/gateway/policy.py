"""What the MX of the trust space decides, as plain synchronous functions (the aiosmtpd handler
calls them in a worker thread). Rules: ../shared/reference/mssante-spec.md §1.4 (inbound
algorithm) and §1.5 (TLS); reply codes RFC 5321 §4.2 with RFC 3463 enhanced codes.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.utils import formatdate

from cryptography import x509
from django.conf import settings

from accounts.audit import audit_record
from accounts.models import StructureDomain
from annuaire.models import WhitelistEntry
from annuaire.selectors import whitelist_allows
from annuaire.whitelist import dn_key
from mailboxes.models import Mailbox

LOCAL_STATUSES = (Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED)


@dataclass(frozen=True)
class Peer:
    subject: x509.Name | None
    tls_version: str
    cipher: str

    @property
    def dn(self) -> str:
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
        if WhitelistEntry.objects.filter(
            version__is_current=True, dn_key=dn_key(peer.subject)
        ).exists():
            return None
        return "550 5.7.1 Certificate not listed in the MSSante whitelist"
    domain = _domain(address)
    if not domain or not whitelist_allows(domain, peer.subject):
        return (
            f"550 5.7.1 Sender domain {domain or '?'} not allowed for this certificate "
            "(MSSante whitelist)"
        )
    return None


def check_recipient(address: str) -> str | None:
    """None for a BAL we host that can receive, else the SMTP reply. A suspended BAL keeps
    receiving: mail is never refused for an administrative state (lifecycle rule, issue 3)."""
    if not address or "@" not in address:
        return "501 5.1.3 Bad recipient address syntax"
    mailbox = Mailbox.objects.filter(address=address.strip().lower()).only("status").first()
    if mailbox is None:
        if not StructureDomain.objects.filter(domain=_domain(address)).exists():
            return "550 5.7.1 Relaying denied: we do not host this domain"
        return "550 5.1.1 No such mailbox here"
    if mailbox.status not in LOCAL_STATUSES:
        return "550 5.1.1 Mailbox closed"
    return None


def received_header(peer: Peer, helo: str, client_ip: str) -> bytes:
    """RFC 5321 §4.4 trace header with the TLS version and cipher (RFC 8314 §4.3 style)."""
    line = (
        f"Received: from {helo or 'unknown'} ([{client_ip}])\r\n"
        f"\tby {settings.GATEWAY_HOSTNAME} with ESMTPS "
        f"(version={peer.tls_version} cipher={peer.cipher})\r\n"
        f"\t(peer certificate: {peer.dn}); {formatdate(localtime=True)}\r\n"
    )
    return line.encode("utf-8", "replace")


def deliver(mail_from: str, recipients: list[str], content: bytes) -> str:
    """Hand the message to Dovecot over LMTP. 250 only when every recipient was accepted;
    any failure is temporary (451) so that the sender keeps the message (ARCHITECTURE.md,
    data flow 1)."""
    try:
        with smtplib.LMTP(
            settings.DOVECOT_IMAP_HOST, settings.DOVECOT_LMTP_PORT, timeout=30
        ) as lmtp:
            refused = lmtp.sendmail(mail_from or "<>", recipients, content)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = exc.recipients
    except (TimeoutError, smtplib.SMTPException, OSError):
        return "451 4.3.0 Mail store unavailable, try again later"
    if refused:
        return "451 4.3.0 Delivery to the mail store failed for some recipients, try again later"
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
) -> None:
    """Per-transaction trace (mssante-spec §5.2): peer DN, TLS, envelope, Message-ID, size,
    reply. Never content."""
    audit_record(
        action="gateway.received",
        actor_label=peer.dn[:150] or "inconnu",
        target_type="message",
        target_id=message_id[:128],
        success=reply.startswith("250"),
        error_code="" if reply.startswith("250") else reply[:3],
        details={
            "tls": peer.tls_version,
            "cipher": peer.cipher,
            "from": mail_from,
            "to": recipients,
            "size": size,
            "reply": reply[:200],
            "dsn": dsn or {},
        },
    )
