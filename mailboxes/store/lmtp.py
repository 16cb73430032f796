"""Delivery into Dovecot over LMTP, with one reply per recipient after DATA (RFC 2033 §4.2).

``smtplib.LMTP`` reads a single reply after DATA, as SMTP does: with several recipients it
would report the first recipient's outcome for all of them and leave the others unread. This
client reads them all, so that the gateway and the relay know who really has the message.

Connections are kept per thread and reused (RSET between transactions, RFC 5321 §4.1.1.5):
the gateway delivers every message over LMTP and a new connection each time costs a
handshake on both sides. A stale connection is only ever replaced *before* DATA is sent, so a
retry can never deliver a message twice.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import threading
import time
from dataclasses import dataclass

from django.conf import settings

IDLE_SECONDS = 20  # Dovecot closes idle LMTP sessions; do not reuse ours past this
_local = threading.local()
EOLS = re.compile(rb"\r\n|\n|\r(?!\n)")
DOT_START = re.compile(rb"(?m)^\.")


class StoreUnreachable(Exception):
    """Dovecot could not be reached or broke the session before DATA completed: nothing can
    be assumed about any recipient but "not delivered"."""


@dataclass(frozen=True)
class Outcome:
    code: int
    text: str

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def reply(self) -> str:
        return f"{self.code} {self.text}"


class _Client(smtplib.LMTP):
    last_used: float = 0.0

    def data_per_recipient(self, content: bytes, count: int) -> list[tuple[int, bytes]]:
        """DATA, then ``count`` replies (RFC 2033 §4.2), one per accepted RCPT, in order."""
        code, reply = self.docmd("data")
        if code != 354:
            return [(code, reply)] * count
        quoted = DOT_START.sub(b"..", EOLS.sub(b"\r\n", content))  # RFC 5321 §4.5.2
        if not quoted.endswith(b"\r\n"):
            quoted += b"\r\n"
        self.send(quoted + b".\r\n")
        return [self.getreply() for _ in range(count)]


def _connect() -> _Client:
    client = _Client(settings.DOVECOT_IMAP_HOST, settings.DOVECOT_LMTP_PORT, timeout=30)
    client.ehlo_or_helo_if_needed()
    return client


def _client(fresh: bool) -> _Client:
    client: _Client | None = getattr(_local, "client", None)
    if client is not None and (fresh or time.monotonic() - client.last_used > IDLE_SECONDS):
        _discard()
        client = None
    if client is None:
        client = _connect()
        _local.client = client
    return client


def _discard() -> None:
    client = getattr(_local, "client", None)
    _local.client = None
    if client is not None:
        with contextlib.suppress(OSError):
            client.close()


def _envelope(client: _Client, mail_from: str, recipients: list[str]) -> dict[str, Outcome]:
    client.rset()
    code, text = client.mail(mail_from or "<>")
    if code != 250:
        return {r: Outcome(code, text.decode("utf-8", "replace")) for r in recipients}
    outcomes = {}
    for rcpt in recipients:
        code, text = client.rcpt(rcpt)
        outcomes[rcpt] = Outcome(code, text.decode("utf-8", "replace"))
    return outcomes


def deliver(mail_from: str, recipients: list[str], content: bytes) -> dict[str, Outcome]:
    """Deliver ``content`` to each recipient; returns each recipient's outcome.

    Raises StoreUnreachable when Dovecot cannot be reached or the session breaks during DATA
    (nobody may be counted as delivered then). A reused connection that turns out to be dead
    is replaced once, before anything was sent.
    """
    try:
        try:
            client = _client(fresh=False)
            outcomes = _envelope(client, mail_from, recipients)
        except (smtplib.SMTPServerDisconnected, OSError):
            client = _client(fresh=True)  # the kept connection had died: nothing was sent yet
            outcomes = _envelope(client, mail_from, recipients)
        accepted = [r for r in recipients if outcomes[r].delivered]
        if accepted:
            replies = client.data_per_recipient(content, len(accepted))
            for rcpt, (code, text) in zip(accepted, replies, strict=True):
                outcomes[rcpt] = Outcome(code, text.decode("utf-8", "replace"))
        client.last_used = time.monotonic()
        return outcomes
    except (smtplib.SMTPException, OSError) as exc:
        _discard()
        raise StoreUnreachable(str(exc)) from exc
