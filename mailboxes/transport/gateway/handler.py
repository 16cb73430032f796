"""The aiosmtpd handler of the MX: thin async hooks around mailboxes.transport.gateway.policy.

Database and LMTP work runs in a thread (asyncio.to_thread) so the event loop keeps serving
other sessions.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, AnyStr, TypeVar

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    close_old_connections,
    connection,
    connections,
)

from mailboxes.store.headers import message_id_of
from mailboxes.transport.gateway import policy, stats
from mailboxes.transport.gateway.dedup import resend_key
from mailboxes.transport.gateway.replies import (
    DSN_MAIL,
    DSN_RCPT,
    address_refusal,
    enhanced,
    malformed_path,
    split_dsn,
)

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
    conn = connections[DEFAULT_DB_ALIAS]  # one look-up of this thread's connection
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        conn.close()
        raise
    finally:
        if not conn.settings_dict.get("CONN_MAX_AGE"):
            conn.close()  # no persistent connections configured: none left open


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


LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6: 998 characters at most)"
TOO_MUCH_DATA = "552 5.3.4 Message too big for this system"
# aiosmtpd's replies whose wording we set ourselves; the others get their enhanced code from
# replies.enhanced().
REWORDED = {
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "552 Error: Too much mail data": TOO_MUCH_DATA,
    "553 5.1.3 Error: malformed address": "553 5.1.3 Malformed address",
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
    connection closed; with the alert, its logs say why.

    Its read buffer is DATA_CHUNK octets instead of asyncio's 256 KiB: allocated per TLS
    session, it was most of a session's memory, and SMTP reads no more at a time."""

    max_size = DATA_CHUNK  # asyncio.sslproto.SSLProtocol: "Buffer size passed to read()"

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            stats.session("tls_echec")
            try:
                self._process_outgoing()  # type: ignore[attr-defined]  # the pending alert
            except Exception:  # the peer may be gone already: close anyway
                logger.debug("TLS alert not sent", exc_info=True)
        super()._on_handshake_complete(handshake_exc)


class DrainState:
    """Sessions in progress, in all and per client address, and whether the gateway is
    shutting down. Both counts are capped (GATEWAY_MAX_SESSIONS, ..._PER_ADDRESS; per
    process): one peer, or a crowd, cannot take every session of the MX."""

    def __init__(self) -> None:
        self.draining = False
        self.active: set[GatewaySMTP] = set()
        self.per_address: dict[str, int] = {}
        self.max_sessions = int(settings.GATEWAY_MAX_SESSIONS)
        self.max_per_address = int(settings.GATEWAY_MAX_SESSIONS_PER_ADDRESS)

    def admit(self, session: GatewaySMTP, address: str) -> str | None:
        """Count a new session from ``address``; the reply refusing it instead, if any."""
        if self.draining:
            return "421 4.3.2 Service shutting down, try again later"  # RFC 5321 §3.8
        if len(self.active) >= self.max_sessions:
            return "421 4.7.0 Too many sessions, try again later"
        count = self.per_address.get(address, 0)
        if count >= self.max_per_address:
            return "421 4.7.0 Too many sessions from your address, try again later"
        self.active.add(session)
        self.per_address[address] = count + 1
        return None

    def release(self, session: GatewaySMTP, address: str) -> bool:
        """Uncount a session; False if it was not counted (refused, or released already)."""
        if session not in self.active:
            return False
        self.active.discard(session)
        left = self.per_address.pop(address) - 1
        if left:
            self.per_address[address] = left
        return True


HELP = "214 2.0.0 Commands: DATA EHLO HELO MAIL NOOP QUIT RCPT RSET VRFY"


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP, exact: every reply carries an RFC 3463 enhanced code (RFC 2034), AUTH
    is off (peers authenticate by certificate), one TLS handshake per session (RFC 3207 §4.2).
    A client has GATEWAY_STARTTLS_TIMEOUT seconds and GATEWAY_STARTTLS_COMMANDS command lines
    to start TLS. The DSN extension (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT
    are kept with the envelope (``envelope.dsn``) for post-processing. With a DrainState,
    sessions are capped, and while draining new connections are told 421 and open ones
    finish."""

    state: DrainState | None = None
    _client = ""  # the client's IP address
    _hello = False  # replying to HELO or EHLO
    _starttls_deadline = 0.0
    _lines_left = 0  # command lines the client may still send before TLS

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:  # a new connection (in TLS, it is called again)
            peer = transport.get_extra_info("peername")
            self._client = str(peer[0]) if peer else "?"
            refusal = self.state.admit(self, self._client) if self.state is not None else None
            if refusal is not None:
                stats.session("refusees")
                stats.reply(refusal)
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            stats.session("admises")
            self._starttls_deadline = self.loop.time() + settings.GATEWAY_STARTTLS_TIMEOUT
            self._lines_left = settings.GATEWAY_STARTTLS_COMMANDS
        else:
            vars(self._reader).pop("readuntil", None)  # in TLS: no budget, aiosmtpd's reader
        super().connection_made(transport)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: Any) -> None:
        super()._cb_client_connected(reader, writer)
        # Until TLS, every line read counts (refused ones too): an instance attribute in
        # front of the reader's method, removed once TLS is up (no cost per command there).
        vars(reader)["readuntil"] = self._readuntil_before_tls

    async def _readuntil_before_tls(self, separator: bytes = b"\n") -> bytes:
        line = await asyncio.StreamReader.readuntil(self._reader, separator)
        self._lines_left -= 1
        if self._lines_left < 0:
            # RFC 3207 §4: before TLS, only EHLO, NOOP, STARTTLS and QUIT make sense
            logger.info("%s: too many commands before STARTTLS", self._client)
            self._goodbye("421 4.7.0 Too many commands before STARTTLS")
            raise asyncio.CancelledError  # ends the session as QUIT does
        return line

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not None and not self.state.release(self, self._client):
            return  # refused at once, or lost already: aiosmtpd never started or has ended
        super().connection_lost(exc)

    _idle_deadline = 0.0  # in TLS: when the session times out, unless a command comes first

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer (reset by each valid command), except before TLS: a deadline
        from the connection, which no command extends. In TLS, a command only moves the
        deadline; the timer, when it fires early, waits for the rest (aiosmtpd cancelled and
        scheduled a timer at each command: a measurable share of the CPU per message)."""
        if self._tls_protocol is None:
            if self._timeout_handle is None:
                super()._reset_timeout(max(0.001, self._starttls_deadline - self.loop.time()))
            return
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and handle.when() <= self._idle_deadline:
            return  # it fires first and then waits for the rest (_idle_check)
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() < self._idle_deadline:  # a command came since: wait for the rest
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        logger.info("%s: connection timeout", self._client)
        self._goodbye("421 4.4.2 Timeout, closing connection")  # RFC 5321 §4.5.3.2

    def _goodbye(self, reply: str) -> None:
        """A last reply, then close (RFC 5321 §3.8)."""
        stats.reply(reply)
        transport = self.transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.write(reply.encode() + b"\r\n")
            transport.close()

    async def push(self, status: AnyStr) -> None:
        """Every reply with its RFC 3463 enhanced code (RFC 2034 §3: but the greeting and the
        replies to HELO and EHLO), aiosmtpd's own included. A reply line never carries a
        control character: aiosmtpd echoes unknown commands, whose bytes the client chose (a
        bare CR would split the line; RFC 5321 §4.2)."""
        if isinstance(status, str):
            status = CONTROL.sub("?", status)
            if not self._hello:
                status = REWORDED.get(status) or enhanced(status)
        stats.reply(status)
        await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._hello = bool(hostname)
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._hello = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._hello = bool(hostname)
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._hello = False

    async def smtp_HELP(self, arg: str) -> None:
        """RFC 5321 §4.1.1.8: the commands we serve, whatever the topic; never AUTH."""
        await self.push(HELP)

    async def smtp_AUTH(self, arg: str) -> None:
        """Off, though aiosmtpd has it: an MX of the trust space authenticates its peers by
        their certificate, and does not advertise AUTH."""
        await self.push("502 5.5.1 AUTH not available: peers authenticate by certificate")

    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS (RFC 3207) with AlertingTLS as the TLS layer, once per session
        (§4.2), the handshake within the time left before the STARTTLS deadline."""
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS already active")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 4.7.0 TLS not available")
            return
        await self.push("220 2.0.0 Ready to start TLS")
        waiter = self.loop.create_future()
        # A stalled handshake is cut by asyncio's own timeout (our timer cannot close a
        # connection in the middle of a handshake cleanly).
        left = max(1, math.ceil(self._starttls_deadline - self.loop.time()))
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._tls_protocol = AlertingTLS(self.loop, self, self.tls_context, waiter,
                                         server_side=True, ssl_handshake_timeout=left)  # fmt: skip
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
        if arg and self.session is not None and self.session.host_name:
            if malformed_path(arg, "FROM:"):
                await self.push("501 5.5.4 Syntax: MAIL FROM:<address> (RFC 5321 4.1.2)")
                return
            arg, dsn, refusal = split_dsn(arg, DSN_MAIL)
            if refusal:
                await self.push(refusal)
                return
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None:
            self.envelope.dsn = {"mail": dsn, "rcpt": {}}  # type: ignore[attr-defined]

    async def smtp_RCPT(self, arg: str | None) -> None:
        dsn: dict[str, str] = {}
        envelope = self.envelope
        if arg and envelope is not None and envelope.mail_from is not None:
            if malformed_path(arg, "TO:"):
                await self.push("501 5.5.4 Syntax: RCPT TO:<address> (RFC 5321 4.1.2)")
                return
            arg, dsn, refusal = split_dsn(arg, DSN_RCPT)
            if refusal:
                await self.push(refusal)
                return
        before = len(envelope.rcpt_tos) if envelope is not None else 0
        await super().smtp_RCPT(arg)
        envelope = self.envelope
        if envelope is not None and len(envelope.rcpt_tos) > before and hasattr(envelope, "dsn"):
            envelope.dsn["rcpt"][envelope.rcpt_tos[-1]] = dsn


class GatewayHandler:
    async def handle_exception(self, error: Exception) -> str:
        """A failure of ours (the database unreachable...): temporary, so that the sender
        keeps the message, and nothing about it on the wire (aiosmtpd would send the
        exception's text with a 500)."""
        if isinstance(error, TLSSetupException):  # a refused handshake: no reply is sent
            # An error for the operator too (an expired CRL refuses every peer: crl.py).
            logger.error("TLS handshake refused: %s", error.__cause__)
        else:
            logger.error("gateway session failed", exc_info=error)
        return "451 4.3.0 Temporary failure, try again later"

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
        refusal = address_refusal(address, utf8=envelope.smtp_utf8, sender=True)
        if refusal:
            return refusal
        # One whitelist decision per sender domain and session: a peer sends many messages
        # over one connection, and its certificate is fixed for the session.
        verdicts: dict[str, str | None] = session.__dict__.setdefault("mss_verdicts", {})
        key = address.rpartition("@")[2].strip().lower() if address not in ("", "<>") else "<>"
        if key in verdicts:
            refusal = verdicts[key]
        else:
            refusal = verdicts[key] = await _off_loop(policy.check_sender, _peer(session), address)
        if refusal:
            await _off_loop(
                policy.trace_refusal,
                peer=_peer(session),
                mail_from=address,
                recipient="",
                reply=refusal,
            )
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
        refusal = address_refusal(address, utf8=envelope.smtp_utf8, sender=False)
        if refusal:
            return refusal
        if len(envelope.rcpt_tos) >= policy.max_recipients():
            return "452 4.5.3 Too many recipients"
        found, refusal = policy.known_recipient(address)
        if not found:
            refusal = await _off_loop(policy.check_recipient, address)
        if refusal:
            await _off_loop(
                policy.trace_refusal,
                peer=_peer(session),
                mail_from=envelope.mail_from or "",
                recipient=address.strip().lower(),
                reply=refusal,
            )
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
