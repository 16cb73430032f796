"""The aiosmtpd handler of the MX: thin async hooks around mailboxes.gateway.policy.

Database and LMTP work runs in a thread (asyncio.to_thread) so the event loop keeps serving
other sessions.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any, AnyStr, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session
from django.db import DatabaseError, close_old_connections, connection

from mailboxes.gateway import policy

T = TypeVar("T")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BARE_LF = re.compile(rb"(?<!\r)\n")
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(.+?)\r?$", re.IGNORECASE | re.MULTILINE)


_hygiene = threading.local()


def _sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in a worker thread with Django's request-like connection hygiene: stale,
    broken or expired database connections are closed (CONN_MAX_AGE still applies). Done at
    most once a second per thread: each check costs a round trip (CONN_HEALTH_CHECKS), and a
    message takes several hops; a failed query closes its connection at once."""
    now = time.monotonic()
    if now - getattr(_hygiene, "checked", 0.0) > 1.0:
        close_old_connections()
        _hygiene.checked = now
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        connection.close()
        raise
    finally:
        if not connection.settings_dict.get("CONN_MAX_AGE"):
            connection.close()  # no persistent connections configured: none left open


async def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(_sync, fn, *args, **kwargs)


def _peer(session: Session) -> policy.Peer:
    """The TLS peer of the session, parsed once (the certificate cannot change after
    STARTTLS: RFC 3207 §4.2 forbids a second one)."""
    known: policy.Peer | None = getattr(session, "mss_peer", None)
    if known is not None:
        return known
    info = session.ssl or {}
    ssl_object = info.get("ssl_object")
    if ssl_object is None:
        return policy.Peer(subject=None, tls_version="", cipher="")
    cipher = ssl_object.cipher()
    peer = policy.peer_from_der(
        ssl_object.getpeercert(binary_form=True), ssl_object.version(), cipher[0] if cipher else ""
    )
    session.mss_peer = peer  # type: ignore[attr-defined]
    return peer


def _unusable(address: str) -> bool:
    """Control characters (NUL among them) or bytes that are not UTF-8 (aiosmtpd keeps them as
    surrogates): no valid mailbox (RFC 5321 §4.1.2, RFC 6531 §3.3) and nothing PostgreSQL can
    store in a trace, so the transaction would fail after delivery."""
    return any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in address)


DSN_MAIL = ("RET", "ENVID")  # RFC 3461 §4.3, §4.4
DSN_RCPT = ("NOTIFY", "ORCPT")  # RFC 3461 §4.1, §4.2


def _split_dsn(arg: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Remove the DSN parameters from a MAIL/RCPT argument; return the rest and their values."""
    kept, found = [], {}
    for token in arg.split(" "):
        key, sep, value = token.partition("=")
        if sep and key.upper() in names:
            found[key.upper()] = value
        else:
            kept.append(token)
    return " ".join(kept), found


ENHANCED = {
    "500 Line too long": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6: 998 characters at most)",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this system",
}


class DrainState:
    """Sessions in progress, and whether the gateway is shutting down."""

    def __init__(self) -> None:
        self.draining = False
        self.active: set[GatewaySMTP] = set()


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with the DSN extension (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT
    on RCPT are accepted and kept with the envelope (``envelope.dsn``) for post-processing.
    While draining, new connections are told 421 (RFC 5321 §3.8) and open ones finish."""

    state: DrainState | None = None

    def connection_made(self, transport: Any) -> None:
        if self.state is not None and self.state.draining:
            transport.write(b"421 4.3.2 Service shutting down, try again later\r\n")
            transport.close()
            return
        if self.state is not None:
            self.state.active.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not None:
            self.state.active.discard(self)
        super().connection_lost(exc)

    async def push(self, status: AnyStr) -> None:
        """aiosmtpd's own refusals, with RFC 3463 enhanced codes like ours. A reply line never
        carries a control character: aiosmtpd echoes unknown commands, whose bytes the client
        chose (a bare CR would split the line; RFC 5321 §4.2)."""
        if isinstance(status, str):
            status = CONTROL.sub("?", status)
            for prefix, better in ENHANCED.items():
                if status.startswith(prefix):
                    await super().push(better)
                    return
        await super().push(status)

    async def smtp_MAIL(self, arg: str | None) -> None:
        dsn: dict[str, str] = {}
        if arg:
            arg, dsn = _split_dsn(arg, DSN_MAIL)
            if any(_unusable(value) for value in dsn.values()):
                await self.push("501 5.5.4 Invalid DSN parameter")  # RFC 3461 §4: xtext
                return
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None:
            self.envelope.dsn = {"mail": dsn, "rcpt": {}}  # type: ignore[attr-defined]

    async def smtp_RCPT(self, arg: str | None) -> None:
        dsn: dict[str, str] = {}
        if arg:
            arg, dsn = _split_dsn(arg, DSN_RCPT)
            if any(_unusable(value) for value in dsn.values()):
                await self.push("501 5.5.4 Invalid DSN parameter")  # RFC 3461 §4: xtext
                return
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        envelope = self.envelope
        if envelope is not None and len(envelope.rcpt_tos) > before and hasattr(envelope, "dsn"):
            envelope.dsn["rcpt"][envelope.rcpt_tos[-1]] = dsn


class GatewayHandler:
    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Advertise what we do (RFC 2920 PIPELINING, RFC 3461 DSN, RFC 2034 ENHANCEDSTATUSCODES);
        never AUTH: an MX of the trust space authenticates peers by certificate."""
        session.host_name = hostname
        lines = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        return [*lines, "250-PIPELINING", "250-DSN", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if _unusable(address):
            return "501 5.1.7 Bad sender address syntax"
        # One whitelist decision per sender domain and session: a peer sends many messages
        # over one connection, and its certificate is fixed for the session.
        verdicts: dict[str, str | None] = session.__dict__.setdefault("mss_verdicts", {})
        key = address.rpartition("@")[2].strip().lower() if address not in ("", "<>") else "<>"
        if key in verdicts:
            refusal = verdicts[key]
        else:
            refusal = verdicts[key] = await _off_loop(policy.check_sender, _peer(session), address)
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if _unusable(address):
            return "501 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= policy.max_recipients():
            return "452 4.5.3 Too many recipients"
        found, refusal = policy.known_recipient(address)
        if not found:
            refusal = await _off_loop(policy.check_recipient, address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address.strip().lower())
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        peer = _peer(session)
        content: Any = envelope.original_content or b""
        raw = (
            content
            if isinstance(content, bytes)
            else str(content).encode("utf-8", "surrogateescape")
        )
        found = MESSAGE_ID.search(raw[:65536])
        message_id = found.group(1).decode("utf-8", "replace").strip() if found else ""
        message_id = message_id.replace("\x00", "")  # traced: PostgreSQL text holds no NUL
        message = b""
        if b"\x00" not in raw:
            raw = BARE_LF.sub(b"\r\n", raw)  # be liberal: bare LF line ends become CRLF
            client_ip = (session.peer or ("?",))[0]
            message = policy.received_header(peer, session.host_name or "", str(client_ip)) + raw
        return await _off_loop(
            _deliver_and_trace,
            peer,
            envelope.mail_from or "",
            list(envelope.rcpt_tos),
            message,
            getattr(envelope, "dsn", None),
            message_id,
            len(raw),
        )


def _deliver_and_trace(
    peer: policy.Peer,
    mail_from: str,
    recipients: list[str],
    message: bytes,
    dsn: dict[str, Any] | None,
    message_id: str,
    size: int,
) -> str:
    """One trip to a worker thread per message: deliver, then trace the transaction."""
    if not message:
        # RFC 5322 §2.3: NUL is never allowed; permanent, the sender must fix it.
        reply = "554 5.6.0 Message contains NUL characters"
    else:
        reply = policy.deliver(mail_from, recipients, message, dsn, message_id, peer.subject)
    policy.trace(
        peer=peer,
        mail_from=mail_from,
        recipients=recipients,
        message_id=message_id,
        size=size,
        reply=reply,
        dsn=dsn,
    )
    return reply
