"""The aiosmtpd handler of the MX: thin async hooks around mailboxes.transport.gateway.policy.

Database and LMTP work runs in a thread (asyncio.to_thread) so the event loop keeps serving
other sessions.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, AnyStr, TypeVar

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException
from django.db import DatabaseError, close_old_connections, connection

from mailboxes.store.headers import message_id_of
from mailboxes.transport.gateway import policy
from mailboxes.transport.gateway.dedup import resend_key

T = TypeVar("T")
logger = logging.getLogger(__name__)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BARE_LF = re.compile(rb"(?<!\r)\n")
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 §3.2.3
SIMPLE_PATH = re.compile(
    rf"<({ATEXT}(?:\.{ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?=[ \t]|\Z)"
)


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


LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6: 998 characters at most)"
TOO_MUCH_DATA = "552 5.3.4 Message too big for this system"
ENHANCED = {
    "500 Line too long": LINE_TOO_LONG,
    "500 Command line too long": "500 5.5.2 Command line too long",
    "552 Error: Too much mail data": TOO_MUCH_DATA,
}
DATA_CHUNK = 65536  # the most DATA read per await (and the reader's buffer while in DATA)
HEAD = 65536  # what is kept of a refused text, for the Message-ID of its trace


def data_refusal(wire: bytes, size_limit: int | None, line_limit: int) -> str | None:
    """aiosmtpd's verdict on a DATA text as sent (dot-stuffed, lines split at CRLF only), in
    bulk instead of line by line: the first of a line longer than ``line_limit`` octets with
    its CRLF (RFC 5321 §4.5.3.1.6, 500) and of the text passing ``size_limit`` (RFC 1870, 552);
    None when the text is fine."""
    fits = not size_limit or len(wire) <= size_limit
    if fits and max(map(len, wire.split(b"\r\n"))) + 2 <= line_limit:
        return None
    end = 0
    for line in wire.split(b"\r\n"):
        end += len(line) + 2
        crossed = bool(size_limit) and end > size_limit  # type: ignore[operator]
        # aiosmtpd sees a line longer than its reader's limit before counting its bytes
        if len(line) + 2 > line_limit and (not crossed or len(line) > line_limit):
            return LINE_TOO_LONG
        if crossed:
            return TOO_MUCH_DATA
    return None


class AlertingTLS(sslproto.SSLProtocol):
    """asyncio's server-side TLS, sending the alert of a refused handshake before it closes
    the connection. asyncio drops what OpenSSL wrote for the peer (RFC 8446 §6.2: "certificate
    revoked", "unknown ca", "certificate expired"...) and the sending operator only sees the
    connection closed; with the alert, its logs say why."""

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            try:
                self._process_outgoing()  # type: ignore[attr-defined]  # the pending alert
            except Exception:  # the peer may be gone already: close anyway
                logger.debug("TLS alert not sent", exc_info=True)
        super()._on_handshake_complete(handshake_exc)


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

    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS (RFC 3207) with AlertingTLS as the TLS layer."""
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        waiter = self.loop.create_future()
        self._tls_protocol = AlertingTLS(self.loop, self, self.tls_context, waiter,
                                         server_side=True)  # fmt: skip
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the text in chunks of up to DATA_CHUNK octets instead of
        one await per line, with the same verdicts: too long a line (500) or too much data
        (552) answered once the terminating dot came (RFC 5321 §4.2.5), dot-unstuffing (RFC
        5321 §4.5.2), nothing handed over when the client leaves before the dot. A refused
        text is traced like any other transaction."""
        if self._decode_data:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # A client gone before the dot cancels this task (aiosmtpd's eof_received) or ends
        # the read: either way the text is dropped, nothing is delivered.
        wire, refusal, head, size = await self._read_data()
        if refusal is not None:
            await self.event_handler.handle_DATA_refused(
                self, self.session, self.envelope, refusal, head, size
            )
            self._set_post_data_state()
            await self.push(refusal)
            return
        if wire[:1] == b".":  # RFC 5321 §4.5.2: a leading dot was added by the client
            wire = wire[1:]
        content = wire.replace(b"\r\n.", b"\r\n")
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes, str | None, bytes, int]:
        """The DATA text as sent, without its terminating line, or the refusal; then the
        first octets (for the trace of a refusal) and the size. Reads up to each ".<CRLF>"
        (the end when a line starts there) or DATA_CHUNK octets; what the client pipelined
        after the dot stays in the reader for the next command (RFC 2920)."""
        reader = self._reader
        line_limit, size_limit = self.line_length_limit, self.data_size_limit
        parts: list[bytes] = []
        size, head, refusal = 0, b"", None
        before = b"\r\n"  # the two octets before the next one; DATA starts a line
        reader._limit = DATA_CHUNK  # type: ignore[attr-defined]  # asyncio's own field
        try:
            while True:
                try:
                    chunk = await reader.readuntil(b".\r\n")
                    last = chunk[-5:-3] if len(chunk) >= 5 else (before + chunk[:-3])[-2:]
                    end = last == b"\r\n"  # the dot starts a line alone: the end
                except asyncio.LimitOverrunError as overrun:
                    chunk, end = await reader.read(overrun.consumed), False
                except asyncio.IncompleteReadError as eof:
                    raise ConnectionResetError("connection closed during DATA") from eof
                size += len(chunk)
                if refusal is None:
                    parts.append(chunk)
                    if size_limit and size > size_limit + 3:  # over, even without the dot
                        wire = b"".join(parts)
                        head = wire[:HEAD]
                        refusal = data_refusal(wire, size_limit, line_limit) or TOO_MUCH_DATA
                        parts = []  # memory: what follows is only read to find the end
                before = chunk[-2:] if len(chunk) >= 2 else (before + chunk)[-2:]
                if end:
                    break
        finally:
            reader._limit = line_limit  # type: ignore[attr-defined]
        size -= 3
        if refusal is not None:
            return b"", refusal, head, size
        wire = b"".join(parts)[:-3] if len(parts) > 1 else parts[0][:-3]
        refusal = data_refusal(wire, size_limit, line_limit)
        return wire, refusal, wire[:HEAD] if refusal else b"", size

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parsing, with a fast path for the common ``<dot-atom@domain>``
        (RFC 5321 §4.1.2 Mailbox without quoting): the email header parser it uses builds a
        token tree and a Protocol class per call, a tenth of the gateway's CPU per message.
        Anything else (quoted local parts, comments, source routes, ``<>``) goes through it."""
        found = SIMPLE_PATH.match(arg)
        rest = arg[found.end() :].lstrip(" \t") if found else "("
        if rest.startswith("("):  # not ours, or a comment (CFWS) the parser would swallow
            return super()._getaddr(arg)
        assert found is not None
        address = found.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

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
        message_id = message_id_of(raw)
        text: bytes | None = None  # None: it holds a NUL, refused
        received = b""
        if b"\x00" not in raw:
            if raw.count(b"\n") != raw.count(b"\r\n"):
                raw = BARE_LF.sub(b"\r\n", raw)  # be liberal: bare LF line ends become CRLF
            client_ip = (session.peer or ("?",))[0]
            received = policy.received_header(peer, session.host_name or "", str(client_ip))
            text = raw
        return await _off_loop(
            _deliver_and_trace,
            peer,
            envelope.mail_from or "",
            list(envelope.rcpt_tos),
            received,
            text,
            getattr(envelope, "dsn", None),
            message_id,
            len(raw),
        )

    async def handle_DATA_refused(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        reply: str,
        head: bytes,
        size: int,
    ) -> None:
        """Trace a text refused while it was read (too long a line, too big), before the
        reply goes: every transaction that reached DATA leaves one trace. A trace that cannot
        be written does not change the refusal (nothing was delivered)."""
        try:
            await _off_loop(
                policy.trace,
                peer=_peer(session),
                mail_from=envelope.mail_from or "",
                recipients=list(envelope.rcpt_tos),
                message_id=message_id_of(head),
                size=size,
                reply=reply,
                dsn=getattr(envelope, "dsn", None),
            )
        except DatabaseError:
            logger.exception("trace of a refused DATA could not be written")


def _deliver_and_trace(
    peer: policy.Peer,
    mail_from: str,
    recipients: list[str],
    received: bytes,
    text: bytes | None,
    dsn: dict[str, Any] | None,
    message_id: str,
    size: int,
) -> str:
    """One trip to a worker thread per message: deliver ``text`` (None: it held a NUL) with
    our ``received`` header before it, then trace the transaction. The resend key is computed
    here, off the event loop (a digest of the whole text)."""
    key = ""
    if text is None:
        # RFC 5322 §2.3: NUL is never allowed; permanent, the sender must fix it.
        reply = "554 5.6.0 Message contains NUL characters"
    else:
        key = resend_key(message_id=message_id, sender=mail_from, peer=peer.dn, content=text)
        reply = policy.deliver(mail_from, recipients, text, dsn, message_id, peer.subject,
                               received=received, key=key)  # fmt: skip
    try:
        policy.trace(
            peer=peer,
            mail_from=mail_from,
            recipients=recipients,
            message_id=message_id,
            size=size,
            reply=reply,
            dsn=dsn,
            key=key,
        )
    except DatabaseError:
        # The message is delivered (or refused) already: the reply must say so, or the sender
        # would bounce or resend it. A resend is still recognised by its attempt marker.
        logger.exception("gateway trace could not be written (%s)", reply[:3])
        connection.close()
    return reply
