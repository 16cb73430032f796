"""The gateway speaks SMTP exactly (issue 15): every reply after EHLO carries an enhanced status
code (RFC 2034), aiosmtpd's own replies included; no second TLS handshake; paths, address sizes
and DSN parameters checked as the RFCs say; HELP without AUTH; sessions capped and timed out
before STARTTLS. A raw client over the real socket, mutual TLS with the test PKI."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from devtools.pki import Issued
from mailboxes.models import Mailbox
from mailboxes.transport.gateway.server import serve_until, tls_context
from tests.factories import make_message
from tests.mailboxes.conftest import _free_port
from tests.mailboxes.test_gateway import SENDER, wait_for_banner

pytestmark = pytest.mark.django_db(transaction=True)

# RFC 2034 §3 with RFC 3463 §2: "class.subject.detail", the class being 2, 4 or 5.
ENHANCED = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


class Wire:
    """One SMTP connection read line by line: what the gateway wrote, exactly."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", timeout: float = 10) -> None:
        self.sock: socket.socket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.buffer = b""

    def line(self) -> bytes:
        """The next line with its CRLF; b"" once the server closed the connection."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def reply(self) -> list[bytes]:
        """Every line of one reply (several for a multi-line one); [] if the server closed."""
        lines = []
        while line := self.line():
            lines.append(line)
            if line[3:4] != b"-":
                break
        return lines

    def command(self, text: bytes) -> list[bytes]:
        self.sock.sendall(text + b"\r\n")
        return self.reply()

    def starttls(self, pki: dict[str, Issued]) -> None:
        assert self.command(b"STARTTLS")[0].startswith(b"220 ")
        context = ssl.create_default_context(cafile=str(pki["ca"].cert))
        context.check_hostname = False
        context.load_cert_chain(str(pki["peer"].cert), str(pki["peer"].key))
        self.sock = context.wrap_socket(self.sock, server_hostname="mx.test")

    def closed(self) -> bool:
        """True when the server closes the connection (everything before is discarded)."""
        while True:
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False

    def close(self) -> None:
        self.sock.close()


def _greeted(port: int, pki: dict[str, Issued], state: str, box: str) -> Wire:
    """A connection brought to ``state``: plain (EHLO without TLS), tls (TLS, no EHLO yet),
    ehlo (TLS and EHLO), mail (a sender given) or rcpt (a recipient too)."""
    wire = Wire(port)
    assert wire.reply()[0].startswith(b"220 ")
    wire.command(b"EHLO smtp.operateur-test.fr")
    if state == "plain":
        return wire
    wire.starttls(pki)
    if state == "tls":
        return wire
    wire.command(b"EHLO smtp.operateur-test.fr")
    if state == "ehlo":
        return wire
    assert wire.command(f"MAIL FROM:<{SENDER}>".encode())[0].startswith(b"250 ")
    if state == "mail":
        return wire
    assert wire.command(f"RCPT TO:<{box}>".encode())[0].startswith(b"250 ")
    return wire


BOX = b"{box}"  # replaced by the test's BAL
COMMANDS = [
    b"EHLO",
    b"HELO",
    b"MAIL FROM:<" + SENDER.encode() + b">",
    b"MAIL FROM:" + SENDER.encode(),
    b"MAIL FROM:<labo@operateur-test.mssante.fr",
    b"MAIL FROM:<labo@@operateur-test.mssante.fr>",
    b"MAIL FROM:<labo@inconnu.mssante.fr>",
    b"MAIL FROM:<" + SENDER.encode() + b"> SIZE=999999999999",
    b"MAIL FROM:<" + SENDER.encode() + b"> FOO=BAR",
    b"MAIL FROM:<" + SENDER.encode() + b"> BODY=9BIT",
    b"MAIL FROM:<" + SENDER.encode() + b"> SMTPUTF8=oui",
    b"MAIL FROM:<" + SENDER.encode() + b"> RET=TOUT",
    "MAIL FROM:<élève@operateur-test.mssante.fr>".encode(),
    b"MAIL FROM:<" + b"x" * 65 + b"@operateur-test.mssante.fr>",
    b"MAIL TO:<x@y.fr>",
    b"MAIL",
    b"RCPT TO:<" + BOX + b">",
    b"RCPT TO:" + BOX,
    b"RCPT TO:<personne@ehpad-les-tilleuls.mssante.fr>",
    b"RCPT TO:<x@ailleurs.example>",
    b"RCPT TO:<" + BOX + b"> NOTIFY=NEVER,SUCCESS",
    b"RCPT TO:<" + BOX + b"> FOO=1",
    b"RCPT TO:<>",
    b"RCPT",
    b"DATA",
    b"DATA maintenant",
    b"RSET",
    b"RSET tout",
    b"NOOP",
    b"VRFY claire.martin",
    b"VRFY",
    b"EXPN liste",
    b"HELP",
    b"HELP MAIL",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"AUTH",
    b"STARTTLS maintenant",
    b"STARTTLS",
    b"BDAT 10 LAST",
    b"BONJOUR",
    b"",
    b"\xff\xfe",
    b"NOOP " + b"x" * 2000,
    b"QUIT maintenant",
    b"QUIT",
]


@pytest.mark.parametrize("state", ["plain", "tls", "ehlo", "mail", "rcpt"])
def test_every_reply_after_ehlo_carries_an_enhanced_status_code(
    mx: int, pki, box: Mailbox, state: str
) -> None:
    """RFC 2034 §3: every reply but the greeting and the replies to HELO/EHLO; 354 is an
    intermediate reply, RFC 3463 has no class 3. One connection per command and state."""
    bad = []
    for template in COMMANDS:
        command = template.replace(BOX, box.address.encode())
        wire = _greeted(mx, pki, state, box.address)
        try:
            lines = wire.command(command)
            if lines and lines[0].startswith(b"354 "):
                lines = wire.command(make_message(to=box.address) + b".")
            if not lines:
                bad.append((command[:60], b"no reply"))
            for line in lines:
                text = line[10:]
                if not ENHANCED.match(line) or text.startswith(b"Error") or len(line) > 120:
                    bad.append((command[:60], line))
        finally:
            wire.close()
    assert not bad, "\n".join(f"{command!r} -> {line!r}" for command, line in bad)


def test_starttls_inside_tls_is_refused_without_a_second_handshake(mx: int, pki) -> None:
    wire = _greeted(mx, pki, "ehlo", "")
    try:
        assert wire.command(b"STARTTLS")[0].startswith(b"503 5.5.1 ")  # RFC 3207 §4.2
        assert wire.command(b"NOOP") == [b"250 2.0.0 OK\r\n"]  # the same TLS session goes on
    finally:
        wire.close()


@pytest.mark.parametrize(
    "path",
    [
        "{address}",  # RFC 5321 §4.1.2: Path = "<" Mailbox ">"
        "<{address}",
        "{address}>",
        "< {address}>",
        "<{address}>SIZE=1000",  # SP before the parameters
        "<{address}>>",
        "<<{address}>>",
    ],
)
def test_a_path_without_its_angle_brackets_is_a_syntax_error(
    mx: int, pki, box: Mailbox, path: str
) -> None:
    wire = _greeted(mx, pki, "ehlo", box.address)
    try:
        mail = wire.command(f"MAIL FROM:{path.format(address=SENDER)}".encode())
        fine = wire.command(f"MAIL FROM: <{SENDER}>".encode())  # a space after the colon is fine
        rcpt = wire.command(f"RCPT TO:{path.format(address=box.address)}".encode())
        quoted = wire.command(f'RCPT TO:<"claire martin"@{OUR_DOMAIN}>'.encode())
    finally:
        wire.close()
    assert mail[0].startswith(b"501 5.5.4 Syntax: MAIL FROM:<address>")
    assert fine[0].startswith(b"250 ")
    assert rcpt[0].startswith(b"501 5.5.4 Syntax: RCPT TO:<address>")
    assert quoted[0].startswith(b"550 5.1.1 ")  # a quoted local part: a path all the same


OUR_DOMAIN = "ehpad-les-tilleuls.mssante.fr"


def _domain(octets: int) -> str:
    """A valid domain of exactly ``octets`` octets (labels of at most 63)."""
    labels, left = [], octets
    while left > 63:
        labels.append("d" * 62)
        left -= 63
    return ".".join([*labels, "d" * left])


@pytest.mark.parametrize(
    ("local", "domain", "refusal"),
    [
        ("x" * 64, OUR_DOMAIN, None),  # RFC 5321 §4.5.3.1.1: 64 octets
        ("x" * 65, OUR_DOMAIN, b"Local part too long"),
        ("é" * 32, OUR_DOMAIN, None),  # octets, not characters
        ("é" * 33, OUR_DOMAIN, b"Local part too long"),
        ("x", _domain(256), b"Domain too long"),  # §4.5.3.1.2: 255 octets
        ("x" * 64, _domain(189), None),  # §4.5.3.1.3: a path of 256 octets, brackets included
        ("x" * 64, _domain(190), b"Path too long"),
        ("x", _domain(255), b"Path too long"),
    ],
)
def test_an_address_beyond_rfc_5321_sizes_is_refused(
    mx: int, pki, box: Mailbox, local: str, domain: str, refusal: bytes | None
) -> None:
    address = f"{local}@{domain}".encode()
    wire = _greeted(mx, pki, "ehlo", box.address)
    try:
        mail = wire.command(b"MAIL FROM:<" + address + b"> SMTPUTF8")[0]
        wire.command(b"RSET")
        wire.command(f"MAIL FROM:<{SENDER}> SMTPUTF8".encode())
        rcpt = wire.command(b"RCPT TO:<" + address + b">")[0]
    finally:
        wire.close()
    if refusal is not None:
        assert mail.startswith(b"501 5.1.7 " + refusal)
        assert rcpt.startswith(b"501 5.1.3 " + refusal)
    else:  # judged on its merits: a domain not listed, a BAL or a domain we do not have
        assert mail.startswith(b"550 5.7.1 ") and rcpt[:8] in (b"550 5.1.", b"550 5.7.")


def test_a_non_ascii_address_needs_smtputf8(mx: int, pki, box: Mailbox) -> None:
    sender = "élève@operateur-test.mssante.fr".encode()
    recipient = "élève@ehpad-les-tilleuls.mssante.fr".encode()
    wire = _greeted(mx, pki, "ehlo", box.address)
    try:
        assert wire.command(b"MAIL FROM:<" + sender + b">")[0].startswith(b"553 5.6.7 ")
        assert wire.command(b"MAIL FROM:<" + SENDER.encode() + b">")[0].startswith(b"250 ")
        assert wire.command(b"RCPT TO:<" + recipient + b">")[0].startswith(b"553 5.6.7 ")
        wire.command(b"RSET")
        assert wire.command(b"MAIL FROM:<" + sender + b"> SMTPUTF8")[0].startswith(b"250 ")
        assert wire.command(b"RCPT TO:<" + recipient + b">")[0].startswith(b"550 5.1.1 ")
    finally:
        wire.close()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"RCPT TO:<{box}> NOTIFY=NEVER", b"250 "),
        (b"RCPT TO:<{box}> NOTIFY=success,FAILURE,DELAY", b"250 "),
        (b"RCPT TO:<{box}> NOTIFY=NEVER,SUCCESS", b"501 5.5.4 "),  # RFC 3461 §4.1
        (b"RCPT TO:<{box}> NOTIFY=FAILURE,NEVER", b"501 5.5.4 "),
        (b"RCPT TO:<{box}> NOTIFY=SUCESS", b"501 5.5.4 "),
        (b"RCPT TO:<{box}> NOTIFY=", b"501 5.5.4 "),
        (b"RCPT TO:<{box}> NOTIFY=SUCCESS NOTIFY=FAILURE", b"501 5.5.4 "),  # §4: once
        (b"RCPT TO:<{box}> ORCPT=rfc822;a@b.fr ORCPT=rfc822;c@d.fr", b"501 5.5.4 "),
    ],
)
def test_dsn_notify_values_follow_rfc_3461(
    mx: int, pki, box: Mailbox, command: bytes, expected: bytes
) -> None:
    wire = _greeted(mx, pki, "mail", box.address)
    try:
        reply = wire.command(command.replace(BOX, box.address.encode()))
    finally:
        wire.close()
    assert reply[0].startswith(expected)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (b"RET=HDRS", b"250 "),
        (b"RET=full", b"250 "),
        (b"RET=TOUT", b"501 5.5.4 "),  # RFC 3461 §4.3: FULL or HDRS
        (b"RET=HDRS RET=FULL", b"501 5.5.4 "),
        (b"ENVID=a ENVID=b", b"501 5.5.4 "),
    ],
)
def test_dsn_ret_values_follow_rfc_3461(mx: int, pki, option: bytes, expected: bytes) -> None:
    wire = _greeted(mx, pki, "ehlo", "")
    try:
        reply = wire.command(b"MAIL FROM:<" + SENDER.encode() + b"> " + option)
    finally:
        wire.close()
    assert reply[0].startswith(expected)


@pytest.mark.parametrize("command", [b"HELP", b"HELP AUTH", b"HELP MAIL", b"HELP BONJOUR"])
def test_help_answers_214_and_never_lists_auth(mx: int, pki, command: bytes) -> None:
    wire = _greeted(mx, pki, "ehlo", "")
    try:
        [reply] = wire.command(command)
        auth = wire.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==")
    finally:
        wire.close()
    assert reply.startswith(b"214 2.0.0 ") and b"AUTH" not in reply.upper()
    assert auth[0].startswith(b"502 5.5.1 ")  # off: peers authenticate by certificate


# --- Resource limits -----------------------------------------------------------------------


@pytest.fixture
def serving(pki: dict[str, Issued], listed: None, settings) -> Iterator[int]:
    """run_gateway's serving code (serve_until) in a thread, with the settings in force when
    the fixture starts; yields its port."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    context = tls_context(
        cert=str(pki["gateway"].cert), key=str(pki["gateway"].key), ca_bundle=str(pki["ca"].cert)
    )
    port = _free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve_until(stop, context, "127.0.0.1", port),)
    )
    thread.start()
    try:
        wait_for_banner(port)
        time.sleep(0.3)  # the probe's session is over before the test counts sessions
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


@pytest.fixture
def capped(settings) -> None:
    settings.GATEWAY_MAX_SESSIONS = 3  # read when the gateway starts
    settings.GATEWAY_MAX_SESSIONS_PER_ADDRESS = 2


def _first_line(port: int, source: str) -> tuple[Wire, bytes]:
    wire = Wire(port, source=source)
    return wire, wire.line()


def _admitted(port: int, source: str) -> tuple[Wire, bytes]:
    """The first line of a new connection, retried for up to 3 s while it is a 421 (the
    gateway frees a slot when it has seen the end of a session)."""
    deadline = time.monotonic() + 3
    while True:
        wire, line = _first_line(port, source)
        if line.startswith(b"220 ") or time.monotonic() > deadline:
            return wire, line
        wire.close()
        time.sleep(0.05)


def test_sessions_are_capped_per_client_address_and_in_all(capped: None, serving: int) -> None:
    open_ = []
    try:
        for _ in range(2):
            wire, greeting = _first_line(serving, "127.0.0.2")
            open_.append(wire)
            assert greeting.startswith(b"220 ")
        wire, refused = _first_line(serving, "127.0.0.2")
        assert refused.startswith(b"421 4.7.0 ") and wire.closed()
        wire, greeting = _first_line(serving, "127.0.0.3")  # another address: 3 in all
        open_.append(wire)
        assert greeting.startswith(b"220 ")
        wire, refused = _first_line(serving, "127.0.0.4")
        assert refused.startswith(b"421 4.7.0 ") and wire.closed()

        open_.pop(0).close()  # a slot of 127.0.0.2 is free again
        wire, greeting = _admitted(serving, "127.0.0.2")
        open_.append(wire)
        assert greeting.startswith(b"220 ")
    finally:
        for wire in open_:
            wire.close()


@pytest.fixture
def quick(settings) -> None:
    settings.GATEWAY_STARTTLS_TIMEOUT = 1  # read at each new connection


def test_an_idle_client_before_starttls_is_cut_off(quick: None, mx: int) -> None:
    wire = Wire(mx, timeout=5)
    started = time.monotonic()
    try:
        assert wire.line().startswith(b"220 ")
        assert wire.command(b"EHLO smtp.operateur-test.fr")[-1] == b"250 HELP\r\n"
        assert wire.line() == b"421 4.4.2 Timeout, closing connection\r\n"
        assert wire.closed()
    finally:
        wire.close()
    assert time.monotonic() - started < 3  # not the 300 s of a session in TLS


def test_commands_before_starttls_do_not_extend_its_time(quick: None, mx: int) -> None:
    wire = Wire(mx, timeout=5)
    started = time.monotonic()
    replies: list[bytes] = []
    try:
        wire.line()
        while not replies or replies[-1].startswith(b"250 "):
            replies += wire.command(b"NOOP")
            wire.sock.settimeout(0.3)  # a pause, unless the server speaks first
            with contextlib.suppress(TimeoutError):
                replies.append(wire.line())
            wire.sock.settimeout(5)
    finally:
        wire.close()
    assert time.monotonic() - started < 3
    assert len(replies) > 2 and replies[-1] == b"421 4.4.2 Timeout, closing connection\r\n"


def test_a_session_in_tls_is_not_held_to_the_starttls_timeout(quick: None, mx: int, pki) -> None:
    wire = _greeted(mx, pki, "ehlo", "")
    try:
        time.sleep(1.5)
        assert wire.command(b"NOOP") == [b"250 2.0.0 OK\r\n"]
    finally:
        wire.close()


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions in TLS time out after 1 s without a command (aiosmtpd's 300 s otherwise)."""
    from mailboxes.transport.gateway import server

    real = server.smtp_kwargs
    monkeypatch.setattr(server, "smtp_kwargs", lambda context: {**real(context), "timeout": 1.0})


def test_a_session_in_tls_lives_while_it_talks_and_is_cut_off_when_idle(
    short_idle: None, mx: int, pki
) -> None:
    """Each command gives the session its whole idle time again (RFC 5321 §4.5.3.2); once
    the client says nothing for that long, 421 and the connection closed."""
    wire = _greeted(mx, pki, "ehlo", "")
    try:
        for _ in range(4):  # 1.6 s in all, longer than the idle time
            time.sleep(0.4)
            assert wire.command(b"NOOP") == [b"250 2.0.0 OK\r\n"]
        started = time.monotonic()
        assert wire.line() == b"421 4.4.2 Timeout, closing connection\r\n"
        assert wire.closed()
    finally:
        wire.close()
    assert 0.5 < time.monotonic() - started < 3


def test_a_stalled_tls_handshake_is_cut_off(quick: None, mx: int) -> None:
    wire = Wire(mx, timeout=5)
    started = time.monotonic()
    try:
        wire.line()
        assert wire.command(b"STARTTLS")[0].startswith(b"220 2.0.0 ")
        assert wire.closed()  # no ClientHello ever comes
    finally:
        wire.close()
    assert time.monotonic() - started < 3


@pytest.fixture
def one_per_address(settings) -> None:
    settings.GATEWAY_MAX_SESSIONS_PER_ADDRESS = 1


@pytest.mark.parametrize("last", [b"EHLO smtp.operateur-test.fr", b"STARTTLS"])
def test_an_idle_or_stalled_client_never_holds_a_slot_for_long(
    quick: None, one_per_address: None, serving: int, last: bytes
) -> None:
    """Silent after EHLO, or after the 220 to STARTTLS (a handshake that never starts)."""
    idle = Wire(serving, source="127.0.0.2")
    try:
        assert idle.line().startswith(b"220 ")
        idle.command(last)
        wire, refused = _first_line(serving, "127.0.0.2")
        wire.close()
        assert refused.startswith(b"421 4.7.0 ")  # the one slot of this address is taken
        assert idle.closed()
        wire, greeting = _admitted(serving, "127.0.0.2")
        wire.close()
    finally:
        idle.close()
    assert greeting.startswith(b"220 ")


def test_the_command_budget_before_tls_ends_the_session(settings, mx: int, pki) -> None:
    settings.GATEWAY_STARTTLS_COMMANDS = 5
    wire = Wire(mx)
    try:
        wire.line()
        replies = [wire.command(b"MAIL FROM:<x@y.fr>")[0] for _ in range(5)]
        assert all(r.startswith(b"530 5.7.0 ") for r in replies)
        assert wire.command(b"NOOP") == [b"421 4.7.0 Too many commands before STARTTLS\r\n"]
        assert wire.closed()
    finally:
        wire.close()
    wire = _greeted(mx, pki, "ehlo", "")  # 2 command lines before TLS; many after
    try:
        assert all(wire.command(b"NOOP") == [b"250 2.0.0 OK\r\n"] for _ in range(20))
    finally:
        wire.close()


def test_a_pipelined_flood_before_tls_gets_one_421(settings, mx: int) -> None:
    settings.GATEWAY_STARTTLS_COMMANDS = 5
    wire = Wire(mx)
    try:
        wire.line()
        wire.sock.sendall(b"NOOP\r\n" * 5000)
        lines = []
        while line := wire.line():
            lines.append(line)
    finally:
        wire.close()
    assert lines == [b"250 2.0.0 OK\r\n"] * 5 + [b"421 4.7.0 Too many commands before STARTTLS\r\n"]


def test_an_internal_failure_is_a_temporary_451_without_details(mx: int, pki, settings) -> None:
    wire = _greeted(mx, pki, "ehlo", "")
    database = settings.DATABASES["default"]
    saved = database["PORT"]
    database["PORT"] = _free_port()  # the gateway's next database connection fails
    try:
        reply = wire.command(f"MAIL FROM:<{SENDER}>".encode())
    finally:
        database["PORT"] = saved
        wire.close()
    assert reply == [b"451 4.3.0 Temporary failure, try again later\r\n"]


def test_a_message_many_times_the_tls_read_buffer_arrives_whole(
    mx: int, pki: dict[str, Issued], box: Mailbox
) -> None:
    """The TLS layer reads 64 KiB at a time (AlertingTLS.max_size, a fourth of asyncio's):
    a 2 MB text arrives byte for byte, its end and its last line included."""
    from mailboxes.transport.gateway.handler import AlertingTLS
    from tests.mailboxes.conftest import inbox, mx_client

    lines = "\r\n".join(f"ligne {n:07d} " + "x" * 60 for n in range(30_000))
    raw = make_message(to=box.address, subject="Gros compte rendu", body=lines + "\r\nFIN")
    assert len(raw) > 30 * AlertingTLS.max_size
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    [stored] = inbox(box.address)
    assert stored.endswith(raw.split(b"\r\n\r\n", 1)[1]) and b"ligne 0029999 " in stored
