"""Delivery into Dovecot over LMTP, with one reply per recipient after DATA (RFC 2033 §4.2).

``smtplib.LMTP`` reads a single reply after DATA, as SMTP does: with several recipients it
would report the first recipient's outcome for all of them and leave the others unread. This
client reads them all, so that the gateway and the relay know who really has the message.

Connections are kept per thread and reused (RSET only after a transaction left open, RFC 5321
§4.1.1.5): the gateway delivers every message over LMTP and a new connection each time costs a
handshake on both sides. A transaction's commands go in one write (RFC 2920 PIPELINING), so a
message costs two round trips to Dovecot, not five. A stale connection is only ever replaced
*before* DATA is sent, so a retry can never deliver a message twice.

Dovecot's LMTP has no authentication: it listens only on a unix socket in the instance folder
that the portal's user alone may open (mailboxes/store/dovecot.py), never on the network.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message

from django.conf import settings

from mailboxes.store.dovecot import instance_from_settings

IDLE_SECONDS = 20  # Dovecot closes idle LMTP sessions; do not reuse ours past this
_local = threading.local()
EOLS = re.compile(rb"\r\n|\n|\r(?!\n)")
# Where routine reports go instead of the INBOX: a read receipt (RFC 8098) or a DSN that only
# says « remis » / « transmis » (RFC 3464 actions delivered, relayed, expanded) has already
# updated the Sent list's status (mailboxes.transport.delivery_reports); it is kept, out of
# the way. A failure or a delay stays in the INBOX: someone must act on it. Dovecot files a
# delivery to "bal#Accuses@domaine" into that folder (recipient_delimiter and
# lmtp_save_to_detail_mailbox); "#" is a character no BAL address may hold
# (console.services.lifecycle.LOCAL_PART_RE).
REPORTS_FOLDER = "Accuses"
DETAIL_DELIMITER = "#"
ROUTINE_ACTIONS = {"delivered", "relayed", "expanded"}


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


def _outcome(code: int, text: bytes) -> Outcome:
    return Outcome(code, text.decode("utf-8", "replace"))


# RFC 5321 §4.1.2 Mailbox as dot-atom@domain: quoted as is, "<address>". smtplib.quoteaddr
# parses every address with email.utils (a tenth of the gateway's CPU per message).
_PLAIN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def _path(address: str) -> str:
    """The SMTP path of ``address`` as smtplib.quoteaddr writes it."""
    if _PLAIN.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


class _Client(smtplib.LMTP):
    target: str = ""  # the socket it is connected to
    last_used: float = 0.0
    open_transaction: bool = False  # a MAIL was accepted and no DATA finished since

    def transaction(
        self, mail_from: str, recipients: list[str]
    ) -> tuple[dict[str, Outcome], tuple[int, bytes]]:
        """MAIL, each RCPT and DATA in one write (RFC 2920: Dovecot's LMTP offers PIPELINING),
        preceded by RSET if an earlier transaction was left open; then their replies. Returns
        each recipient's outcome and the reply to DATA. The message is not sent yet: a
        connection that breaks here has delivered nothing."""
        rset = self.send_envelope(mail_from, recipients)
        return self.read_envelope(recipients, rset=rset)

    def send_envelope(self, mail_from: str, recipients: list[str]) -> bool:
        """The write of ``transaction``, without waiting for the replies; True when it began
        with RSET (its reply comes first)."""
        rset = self.open_transaction
        commands = [f"MAIL FROM:{_path(mail_from) if mail_from else '<>'}"]
        commands += [f"RCPT TO:{_path(r)}" for r in recipients]
        if rset:
            commands.insert(0, "RSET")
        text = "\r\n".join([*commands, "DATA", ""])
        crlf = text.count("\r\n")
        if text.count("\r") != crlf or text.count("\n") != crlf:  # as smtplib.putcmd
            raise ValueError("command and arguments contain prohibited newline characters")
        self.send(text.encode(self.command_encoding))
        self.open_transaction = True  # until the MAIL's reply says otherwise
        return rset

    def read_envelope(
        self, recipients: list[str], *, rset: bool
    ) -> tuple[dict[str, Outcome], tuple[int, bytes]]:
        """The replies to what ``send_envelope`` wrote."""
        if rset:
            self.getreply()  # RSET: 250, or the session is broken and the next read says so
        code, reply = self.getreply()
        self.open_transaction = code == 250
        outcomes = {}
        for rcpt in recipients:
            rcpt_reply = self.getreply()  # 503 after a refused MAIL: report the MAIL's reply
            outcomes[rcpt] = _outcome(*(rcpt_reply if code == 250 else (code, reply)))
        return outcomes, self.getreply()

    def data_per_recipient(self, content: bytes, count: int) -> list[tuple[int, bytes]]:
        """The message after DATA's 354, then ``count`` replies (RFC 2033 §4.2), one per
        accepted RCPT, in order."""
        content = as_delivered(content)
        if content[:1] == b".":  # RFC 5321 §4.5.2: every line starting with a dot
            content = b"." + content
        self.send(content.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        replies = [self.getreply() for _ in range(count)]
        self.open_transaction = False
        return replies


def as_delivered(content: bytes) -> bytes:
    """``content`` as Dovecot is given it, and as IMAP gives its copy back: every line ended by
    CRLF (a bare CR or LF ends a line too, RFC 5321 §2.3.8), the last one included."""
    crlf = content.count(b"\r\n")
    if content.count(b"\n") != crlf or content.count(b"\r") != crlf:
        content = EOLS.sub(b"\r\n", content)
    return content if content.endswith(b"\r\n") else content + b"\r\n"


def _connect(target: str) -> _Client:
    client = _Client(target, timeout=30)  # a path: smtplib.LMTP opens a unix socket
    client.target = target
    client.ehlo_or_helo_if_needed()
    return client


_socket: tuple[str, str] = ("", "")  # DOVECOT_DIR, and the LMTP socket path it gives


def _target() -> str:
    """The LMTP socket of the Dovecot instance in the settings (computed once per value of
    DOVECOT_DIR: pathlib at each message was measurable)."""
    global _socket
    base = str(settings.DOVECOT_DIR)
    if _socket[0] != base:
        _socket = (base, str(instance_from_settings().lmtp_socket))
    return _socket[1]


def _client(fresh: bool) -> _Client:
    target = _target()
    client: _Client | None = getattr(_local, "client", None)
    if client is not None and (
        fresh or client.target != target or time.monotonic() - client.last_used > IDLE_SECONDS
    ):
        _discard()
        client = None
    if client is None:
        client = _connect(target)
        _local.client = client
    return client


def _discard() -> None:
    client = getattr(_local, "client", None)
    _local.client = None
    if client is not None:
        with contextlib.suppress(OSError):
            client.close()


def _report_actions(report: Message) -> list[str]:
    for part in report.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks = (
            [p for p in payload if isinstance(p, Message)]
            if isinstance(payload, list)
            else [email.message_from_string(b) for b in str(payload).split("\n\n") if b.strip()]
        )
        return [str(b.get("Action", "")).strip().lower() for b in blocks if b.get("Action")]
    return []


def folder_for(content: bytes) -> str | None:
    """The folder a message is filed in at delivery: REPORTS_FOLDER for a routine report
    (read receipt, DSN of success), None (the INBOX) for everything else."""
    if b"multipart/report" not in content[:8192].lower():
        return None
    message = email.message_from_bytes(content, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        return None
    kind = str(message.get_param("report-type") or "").lower()
    if kind == "disposition-notification":
        return REPORTS_FOLDER
    actions = _report_actions(message) if kind == "delivery-status" else []
    if actions and all(action in ROUTINE_ACTIONS for action in actions):
        return REPORTS_FOLDER
    return None


def _with_detail(address: str, folder: str) -> str:
    local, _at, domain = address.rpartition("@")
    return f"{local}{DETAIL_DELIMITER}{folder}@{domain}"


def deliver(
    mail_from: str,
    recipients: list[str],
    content: bytes,
    *,
    before_data: Callable[[], set[str]] | None = None,
) -> dict[str, Outcome]:
    """Deliver ``content`` to each recipient; returns each recipient's outcome (keyed by the
    addresses given). A routine report is filed in REPORTS_FOLDER (``folder_for``).

    ``before_data`` runs once the envelope is written and before any reply is read, so that
    Dovecot works on MAIL and RCPT while it runs (the gateway's duplicate check and attempt
    marker, a round trip to PostgreSQL); the message itself is only sent after it returned.
    It returns the recipients to leave out (they have the message already): they get no
    outcome. When it raises, the LMTP session is dropped before the message was sent, and
    the exception goes to the caller.

    Raises StoreUnreachable when Dovecot cannot be reached or the session breaks during DATA
    (nobody may be counted as delivered then). A reused connection that turns out to be dead
    is replaced once, before anything was sent.
    """
    folder = folder_for(content)
    filed = {_with_detail(r, folder): r for r in recipients} if folder else None
    hook = before_data
    if before_data is not None and filed is not None:

        def hook() -> set[str]:
            skip = before_data()
            return {f for f, r in filed.items() if r in skip}

    if filed is not None:
        outcomes = _deliver(mail_from, list(filed), content, hook)
        return {filed[r]: outcome for r, outcome in outcomes.items()}
    return _deliver(mail_from, recipients, content, hook)


def _envelope(
    mail_from: str, recipients: list[str], before_data: Callable[[], set[str]] | None
) -> tuple[_Client, list[str], dict[str, Outcome], tuple[int, bytes]]:
    """Write the envelope (on the kept connection, or a new one if it had died), run
    ``before_data`` once, then read the replies: the client, the recipients still wanted,
    their outcomes and the reply to DATA. Nothing of the message is sent here."""
    fresh = False
    try:
        client = _client(fresh=False)
        rset = client.send_envelope(mail_from, recipients)
    except (smtplib.SMTPServerDisconnected, OSError):
        client, fresh = _client(fresh=True), True  # the kept connection had died
        rset = client.send_envelope(mail_from, recipients)
    wanted = recipients
    if before_data is not None:
        try:
            skip = before_data()
        except BaseException:
            _discard()  # in DATA without the message: Dovecot drops the transaction
            raise
        if skip:
            _discard()
            wanted = [r for r in recipients if r not in skip]
            if not wanted:
                return client, [], {}, (0, b"")
            client, fresh = _client(fresh=True), True
            rset = client.send_envelope(mail_from, wanted)
    try:
        outcomes, data_reply = client.read_envelope(wanted, rset=rset)
    except (smtplib.SMTPServerDisconnected, OSError):
        if fresh:
            raise
        client = _client(fresh=True)  # the kept connection had died: nothing was sent yet
        outcomes, data_reply = client.transaction(mail_from, wanted)
    return client, wanted, outcomes, data_reply


def _deliver(
    mail_from: str,
    recipients: list[str],
    content: bytes,
    before_data: Callable[[], set[str]] | None = None,
) -> dict[str, Outcome]:
    try:
        client, recipients, outcomes, (code, reply) = _envelope(mail_from, recipients, before_data)
        if not recipients:
            return {}
        accepted = [r for r in recipients if outcomes[r].delivered]
        if code == 354 and not accepted:
            # DATA accepted without a recipient: not LMTP (RFC 2033 §4.2), and the session
            # now waits for a message; nothing was sent, start a new one.
            _discard()
            raise StoreUnreachable("DATA accepted without any recipient")
        if code == 354:
            replies = client.data_per_recipient(content, len(accepted))
        else:  # DATA refused: every accepted recipient gets that reply
            replies = [(code, reply)] * len(accepted)
        for rcpt, (rcpt_code, text) in zip(accepted, replies, strict=True):
            outcomes[rcpt] = _outcome(rcpt_code, text)
        client.last_used = time.monotonic()
        return outcomes
    except (smtplib.SMTPException, OSError) as exc:
        _discard()
        raise StoreUnreachable(str(exc)) from exc
