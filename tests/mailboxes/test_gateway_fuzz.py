"""A protocol fuzzer against the real gateway (in-process, mutual TLS with the test PKI, a
whitelist, a real Dovecot): random command sequences, lengths, encodings, timing, pipelining
abuse, TLS shutdown and a second handshake inside TLS, disconnects anywhere.

Each session is generated from ``random.Random(SEED + n)``; a failure names its seed, and
``FUZZ_SEED=... pytest`` replays a run. The client knows the server's framing (aiosmtpd reads a
command per LF, DATA until a ``.<CRLF>`` line), so it knows how many replies every write must
bring back and checks each one. Python's ``ssl`` cannot start a TLS 1.2 renegotiation, so the
« renegotiation » atoms are a second STARTTLS and a raw ClientHello record sent inside the
tunnel, which is what a renegotiating client puts on the wire.
"""

from __future__ import annotations

import os
import random
import re
import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from imapclient import IMAPClient

from accounts.models import AuditEvent
from devtools.pki import Issued
from mailboxes.models import Mailbox, OutboundMessage
from tests.factories import make_message
from tests.mailboxes.conftest import mx_client
from tests.mailboxes.test_gateway import SENDER

pytestmark = pytest.mark.django_db(transaction=True)

SEED = int(os.environ.get("FUZZ_SEED", "20261122"))
SESSIONS = int(os.environ.get("FUZZ_SESSIONS", "520"))
BATCH = 40
# RFC 5321 §4.2: Reply-code [ ("-" / SP) textstring ] CRLF, the code being 2xx to 5xx.
REPLY_LINE = re.compile(rb"^[2-5][0-9]{2}([ -][^\r\n]*)?\r\n$")
# RFC 2034 §3: every reply carries an enhanced code (RFC 3463), but the greeting and the replies
# to HELO and EHLO; 354 is intermediate (no class 3 in RFC 3463).
ENHANCED_LINE = re.compile(rb"^[245][0-9]{2}[ -][245]\.[0-9]{1,3}\.[0-9]{1,3} ")
EHLO_KEYWORDS = rb"SIZE [0-9]+|8BITMIME|SMTPUTF8|STARTTLS|PIPELINING|DSN|ENHANCEDSTATUSCODES|HELP"
MARKER = re.compile(rb"^Message-ID:\s*<(fuzz-[0-9]+-[0-9]+)@", re.IGNORECASE | re.MULTILINE)
# A TLS 1.2 ClientHello record, as a client asking for a renegotiation would send it.
CLIENT_HELLO = (
    b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03"
    + bytes(range(32))
    + b"\x00\x00\x02\xc0\x2f\x01\x00"
)


class Closed(Exception):
    """The server closed the connection (a 221, 421 or 502 before it is allowed)."""


@dataclass
class Outcome:
    seed: int
    lines: list[bytes] = field(default_factory=list)
    must: set[str] = field(default_factory=set)  # end of DATA answered 250
    may: set[str] = field(default_factory=set)  # end of DATA sent, reply not read
    never: set[str] = field(default_factory=set)  # cut before the end, or refused
    steps: list[str] = field(default_factory=list)


class Session:
    """One client connection that counts the replies it is owed."""

    def __init__(self, port: int, pki: dict[str, Issued], rng: random.Random, out: Outcome):
        self.rng, self.out, self.pki = rng, out, pki
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=15
        )
        self.raw = self.sock
        self.buffer = b""
        self.owed = 0
        self.slow = rng.random() < 0.15

    # --- wire ---------------------------------------------------------------------------

    def send(self, data: bytes, *, commands: bool = True) -> None:
        if commands:
            self.owed += data.count(b"\n")
        if not self.slow:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            n = self.rng.randint(1, 64)
            self.sock.sendall(view[:n])
            view = view[n:]
            time.sleep(self.rng.random() * 0.004)

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        line += b"\n"
        self.out.lines.append(line)
        return line

    def reply(self) -> int:
        """Read one complete (possibly multi-line) reply; return its code."""
        while True:
            line = self.line()
            if not REPLY_LINE.match(line):
                return -1  # recorded in out.lines; the test reports it
            if line[3:4] != b"-":
                return int(line[:3])

    def sync(self) -> int:
        """Read every reply still owed; return the code of the last one."""
        code = 0
        while self.owed > 0:
            code = self.reply()
            self.owed -= 1
            # 221 to QUIT; 421 and 502 « goodbye » when aiosmtpd's limits close the session.
            if code in (221, 421) or (code == 502 and b"goodbye" in self.out.lines[-1]):
                raise Closed
        return code

    def command(self, text: bytes) -> int:
        self.send(text + b"\r\n")
        return self.sync()

    def starttls(self, cert: str | None = "peer") -> None:
        if self.command(b"STARTTLS") != 220:
            return
        context = ssl.create_default_context(cafile=str(self.pki["ca"].cert))
        context.check_hostname = False
        if cert:
            context.load_cert_chain(str(self.pki[cert].cert), str(self.pki[cert].key))
        self.sock = context.wrap_socket(
            self.raw, server_hostname="mx.test", do_handshake_on_connect=False
        )
        self.buffer = b""
        self.sock.do_handshake()


# --- the generator ------------------------------------------------------------------------


def _garbage(rng: random.Random) -> bytes:
    kind = rng.choice(["bytes", "utf8", "nul", "long", "empty", "cr", "lower", "space", "8bit"])
    if kind == "bytes":
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 80)))
        return data.replace(b"\n", b"") + b"\r\n"
    if kind == "utf8":
        return ("EHLO " + "".join(chr(rng.randint(0xA0, 0x2FFF)) for _ in range(20))).encode(
            "utf-8", "surrogatepass"
        ) + b"\r\n"
    if kind == "nul":
        return b"MAIL FROM:<a\x00b@operateur-test.mssante.fr>\r\n"
    if kind == "long":
        return b"NOOP " + b"x" * rng.choice([500, 998, 1001, 1500, 5000, 70000]) + b"\r\n"
    if kind == "empty":
        return b"\r\n"
    if kind == "cr":
        return b"NOOP\rRSET\r\n"  # a bare CR does not end a command line
    if kind == "lower":
        return b"noop\n"  # bare LF ends it
    if kind == "space":
        return b"   \r\n"
    return b"VRFY \xe9\xe8\xff\xfe\r\n"


def _mail_from(rng: random.Random) -> bytes:
    return rng.choice(
        [
            f"MAIL FROM:<{SENDER}>".encode(),
            f"MAIL FROM:<{SENDER}> BODY=8BITMIME SMTPUTF8 SIZE=1000".encode(),
            f"MAIL FROM:<{SENDER}> RET=HDRS ENVID=x{rng.randrange(999)}".encode(),
            b"MAIL FROM:<>",
            b"MAIL FROM:<labo@inconnu.mssante.fr>",
            b"MAIL FROM:<labo@autre.mssante.fr>",
            b"MAIL FROM: " + SENDER.encode(),
            f"MAIL FROM:<{SENDER}> SIZE=999999999999".encode(),
            f"MAIL FROM:<{SENDER}> FOO=BAR".encode(),
            b"MAIL FROM:<\xc3\xa9l\xc3\xa8ve@operateur-test.mssante.fr> SMTPUTF8",
            b"MAIL FROM:<\xe9l\xe8ve@operateur-test.mssante.fr>",  # not UTF-8
            b"MAIL FROM:<a\x00b@operateur-test.mssante.fr>",
            f"MAIL FROM:<{SENDER}> ENVID=a\x00b".encode(),
            f"MAIL FROM:<{SENDER}> ENVID=\xff\xfe".encode("latin-1"),
            b"MAIL TO:<x>",
        ]
    )


def _rcpt_to(rng: random.Random, box: str) -> bytes:
    return rng.choice(
        [
            f"RCPT TO:<{box}>".encode(),
            f"RCPT TO:<{box.upper()}>".encode(),
            f"RCPT TO:<{box}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{box}".encode(),
            b"RCPT TO:<personne@ehpad-les-tilleuls.mssante.fr>",
            b"RCPT TO:<x@ailleurs.example>",
            b"RCPT TO:<>",
            f"RCPT TO:<{box}\x00>".encode(),
            f"RCPT TO:<{box}> ORCPT=rfc822;\xe9".encode("latin-1"),
            b"RCPT TO:",
            ("RCPT TO:<" + "a" * 300 + "@ehpad-les-tilleuls.mssante.fr>").encode(),
        ]
    )


def _message(rng: random.Random, marker: str, box: str) -> bytes:
    """A body for DATA, ending with its CRLF (the terminating dot is sent separately)."""
    headers = (
        f"From: labo <{SENDER}>\r\nTo: {box}\r\nMessage-ID: <{marker}@fuzz.test>\r\n"
        f"Subject: fuzz {marker}\r\n"
    ).encode()
    lines = []
    for _ in range(rng.randint(0, 12)):
        lines.append(
            rng.choice(
                [
                    b"Texte ordinaire.",
                    "Accents é à ç ü — UTF-8 ✓".encode(),
                    b"Latin-1 \xe9\xe0\xe7",
                    b".Ligne qui commence par un point",
                    b"..",
                    b"Bare LF\nau milieu",
                    b"Bare CR\rau milieu",
                    b"x" * rng.choice([200, 998, 999, 1200]),
                    b"",
                    b"\x00NUL",
                    bytes(rng.randrange(1, 256) for _ in range(40))
                    .replace(b"\r", b"")
                    .replace(b"\n", b""),
                ]
            )
        )
    return headers + b"\r\n" + b"\r\n".join(lines) + b"\r\n"


def _abort(session: Session, rng: random.Random) -> None:
    how = rng.choice(["close", "rst", "tls-shutdown"])
    session.out.steps.append(f"abort:{how}")
    if how == "rst":
        session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "tls-shutdown" and isinstance(session.sock, ssl.SSLSocket):
        try:
            session.sock.settimeout(2)
            plain = session.sock.unwrap()  # close_notify in the middle of the session
            plain.sendall(b"MAIL FROM:<apres@tls.clos>\r\n")
            plain.close()
        except (OSError, ssl.SSLError):
            pass
    session.sock.close()


def _data(session: Session, rng: random.Random, n: int, box: str) -> bool:
    """DATA with a message; False if the session ended."""
    marker = f"fuzz-{session.out.seed}-{n}"
    if session.command(b"DATA") != 354:
        return True
    body = _message(rng, marker, box)
    style = rng.choices(["complete", "cut", "unterminated"], weights=[6, 2, 1])[0]
    if style == "cut":  # disconnect mid-DATA, at any byte
        session.send(body[: rng.randrange(len(body) + 1)], commands=False)
        session.out.never.add(marker)
        _abort(session, rng)
        return False
    if style == "unterminated":  # the whole text, the end never comes
        session.send(body + rng.choice([b".\n", b"\n.\n", b". \r\n"]), commands=False)
        session.out.never.add(marker)
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.05)
        _abort(session, rng)
        return False
    if rng.random() < 0.2:  # the end of DATA goes, the reply is never read
        session.send(body + b".\r\n", commands=False)
        session.out.may.add(marker)
        _abort(session, rng)
        return False
    session.send(body + b".\r\n", commands=False)
    session.owed += 1
    code = session.sync()
    (session.out.must if code == 250 else session.out.never).add(marker)
    session.out.steps.append(f"data:{code}")
    return True


def _pipelined(session: Session, rng: random.Random, n: int, box: str) -> None:
    """RFC 2920 abuse: the whole transaction, body and QUIT in one write, before any reply."""
    marker = f"fuzz-{session.out.seed}-{n}"
    session.out.may.add(marker)
    blob = (
        _mail_from(rng)
        + b"\r\n"
        + _rcpt_to(rng, box)
        + b"\r\nDATA\r\n"
        + _message(rng, marker, box)
        + b".\r\nQUIT\r\n"
    )
    session.send(blob, commands=False)
    session.out.steps.append("pipelined")
    try:
        while True:
            session.reply()
    except (Closed, OSError):
        pass


def run_session(port: int, pki: dict[str, Issued], seed: int, box: str) -> Outcome:
    rng = random.Random(seed)  # noqa: S311 (reproducible fuzzing, not secrets)
    out = Outcome(seed=seed)
    session = Session(port, pki, rng, out)
    try:
        if session.reply() != 220:
            return out
        plain = rng.random() < 0.12
        session.command(rng.choice([b"EHLO smtp.operateur-test.fr", b"HELO x", b"EHLO"]))
        if plain:  # never in TLS: every command must be refused (RFC 3207 §4)
            for _ in range(rng.randint(1, 6)):
                atom = rng.choice(["mail", "garbage", "hello", "starttls-nocert", "starttls-junk"])
                out.steps.append(f"plain:{atom}")
                if atom == "mail":
                    session.command(_mail_from(rng))
                elif atom == "garbage":
                    session.send(_garbage(rng))
                    session.sync()
                elif atom == "hello":  # a TLS handshake where a command is expected
                    session.send(CLIENT_HELLO + b"\r\n")
                    session.sync()
                elif atom == "starttls-nocert":
                    try:
                        session.starttls(cert=None)
                        session.command(b"NOOP")
                    except (ssl.SSLError, OSError, Closed):
                        pass
                    return out
                else:  # STARTTLS answered with garbage instead of a handshake
                    if session.command(b"STARTTLS") == 220:
                        session.raw.sendall(b"MAIL FROM:<pas@de.tls>\r\n" * 3)
                        time.sleep(0.01)
                    return out
            _abort(session, rng)
            return out
        session.starttls()
        session.command(b"EHLO smtp.operateur-test.fr")
        for n in range(rng.randint(1, 14)):
            atom = rng.choices(
                [
                    "txn",
                    "mail",
                    "rcpt",
                    "data",
                    "garbage",
                    "simple",
                    "pipelined",
                    "again-tls",
                    "pause",
                    "abort",
                    "abort-mid-command",
                ],
                weights=[6, 3, 3, 2, 4, 3, 1, 1, 1, 1, 1],
            )[0]
            out.steps.append(atom)
            if atom == "txn":  # mostly a valid envelope, so that DATA is reached
                mail = f"MAIL FROM:<{SENDER}>".encode() if rng.random() < 0.6 else _mail_from(rng)
                rcpt = f"RCPT TO:<{box}>".encode() if rng.random() < 0.7 else _rcpt_to(rng, box)
                session.send(mail + b"\r\n" + rcpt + b"\r\n")
                session.sync()
                if not _data(session, rng, n, box):
                    return out
            elif atom == "mail":
                session.command(_mail_from(rng))
            elif atom == "rcpt":
                session.command(_rcpt_to(rng, box))
            elif atom == "data":
                if not _data(session, rng, n, box):
                    return out
            elif atom == "garbage":
                session.send(_garbage(rng))
                session.sync()
            elif atom == "simple":
                cmds = [b"NOOP", b"RSET", b"HELP", b"HELP MAIL", b"VRFY x", b"EXPN x", b"EHLO y"]
                session.send(b"\r\n".join(rng.sample(cmds, rng.randint(1, 4))) + b"\r\n")
                session.sync()
            elif atom == "pipelined":
                _pipelined(session, rng, n, box)
                return out
            elif atom == "again-tls":  # RFC 3207 §4.2: no second handshake
                if rng.random() < 0.5:
                    session.command(b"STARTTLS")
                else:
                    session.send(CLIENT_HELLO + b"\r\n")
                    session.sync()
            elif atom == "pause":
                time.sleep(rng.random() * 0.15)
            elif atom == "abort":
                _abort(session, rng)
                return out
            else:
                line = _mail_from(rng) + b"\r\n"
                session.send(line[: rng.randrange(len(line))], commands=False)
                _abort(session, rng)
                return out
        if rng.random() < 0.7:
            session.command(b"QUIT")
        else:
            _abort(session, rng)
    except Closed:
        out.steps.append("closed-by-server")
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
        out.steps.append(f"{type(exc).__name__}")
    finally:
        session.sock.close()
    return out


def _healthy(port: int, pki: dict[str, Issued], box: str, marker: str) -> None:
    """A fresh, well-behaved session gets 250 everywhere and delivers."""
    out = Outcome(seed=-1)
    session = Session(port, pki, random.Random(0), out)  # noqa: S311
    session.slow = False
    try:
        assert session.reply() == 220
        assert session.command(b"EHLO smtp.operateur-test.fr") == 250
        session.starttls()
        assert session.command(b"EHLO smtp.operateur-test.fr") == 250
        assert session.command(f"MAIL FROM:<{SENDER}>".encode()) == 250
        assert session.command(f"RCPT TO:<{box}>".encode()) == 250
        assert session.command(b"DATA") == 354
        session.send(
            f"Message-ID: <{marker}@fuzz.test>\r\nSubject: sain\r\n\r\nCorps\r\n.\r\n".encode(),
            commands=False,
        )
        session.owed = 1
        assert session.sync() == 250
        with pytest.raises(Closed):
            session.command(b"QUIT")
        assert out.lines[-1].startswith(b"221")
    finally:
        session.sock.close()


def _delivered(address: str) -> list[str]:
    with IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap:
        imap.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search(["ALL"])
        if not uids:
            return []
        fetched = imap.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    found = []
    for data in fetched.values():
        header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]
        match = MARKER.search(header)
        found.append(match.group(1).decode() if match else header.decode("latin-1"))
    return found


def test_fuzzed_sessions_never_break_the_gateway(mx: int, pki, box: Mailbox) -> None:
    print(f"fuzz seed {SEED}, {SESSIONS} sessions (replay with FUZZ_SEED={SEED})")
    outcomes: list[Outcome] = []
    healthy: set[str] = set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, SESSIONS, BATCH):
            seeds = range(SEED + start, SEED + min(start + BATCH, SESSIONS))
            outcomes += pool.map(lambda s: run_session(mx, pki, s, box.address), seeds)
            marker = f"fuzz-0-{start}"
            _healthy(mx, pki, box.address, marker)  # the server survived the batch
            healthy.add(marker)

    assert len(outcomes) == SESSIONS  # 520 unless FUZZ_SESSIONS says otherwise
    host = re.escape(settings.GATEWAY_HOSTNAME.encode())
    exempt = re.compile(rb"^(220 %b |354 |250[ -](%b|%b)\r\n$)" % (host, host, EHLO_KEYWORDS))
    for out in outcomes:
        bad = [line for line in out.lines if not REPLY_LINE.match(line)]
        assert not bad, (out.seed, out.steps, bad[:3])
        bare = [line for line in out.lines if not (ENHANCED_LINE.match(line) or exempt.match(line))]
        assert not bare, (out.seed, out.steps, bare[:3])
    delivered = _delivered(box.address)
    must = set().union(*(o.must for o in outcomes)) | healthy
    may = set().union(*(o.may for o in outcomes))
    never = set().union(*(o.never for o in outcomes))
    print(
        f"{len(outcomes)} sessions, {sum(len(o.lines) for o in outcomes)} reply lines, "
        f"{len(must)} acknowledged, {len(may)} unacknowledged, {len(never)} cut or refused, "
        f"{len(delivered)} delivered"
    )
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert must <= set(delivered), sorted(must - set(delivered))[:5]
    wrong = set(delivered) & never
    assert not wrong, [(o.seed, o.steps, o.lines[-3:]) for o in outcomes if o.never & wrong]
    assert set(delivered) <= must | may, sorted(set(delivered) - must - may)[:5]
    # Every delivery is traced as a success, and nothing else is.
    traced = {
        target.strip("<>").partition("@")[0]
        for target in AuditEvent.objects.filter(
            action="gateway.received", result="success"
        ).values_list("target_id", flat=True)
    }
    assert traced == set(delivered)
    assert len(must) >= 50 and len(never) >= 50  # the generator reached both sides


# --- What the fuzzer found, one behaviour each --------------------------------------------


def test_control_characters_or_non_utf8_in_addresses_and_dsn_are_refused(
    mx: int, pki, box: Mailbox
) -> None:
    # They used to pass MAIL, get delivered, then break the trace: a 500 after delivery.
    with mx_client(mx, pki) as smtp:
        assert smtp.docmd("MAIL FROM:<a\x00b@operateur-test.mssante.fr>")[0] == 501
        assert smtp.docmd(f"MAIL FROM:<{SENDER}> ENVID=a\x00b")[0] == 501
        smtp.send(b"MAIL FROM:<\xe9l\xe8ve@operateur-test.mssante.fr>\r\n")  # not UTF-8
        assert smtp.getreply()[0] == 501
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.docmd(f"RCPT TO:<{box.address}\x00>")[0] == 501
        assert smtp.rcpt(box.address)[0] == 250
        assert smtp.data(make_message(to=box.address))[0] == 250
    assert not AuditEvent.objects.filter(action="gateway.received", result="failure").exists()


def test_a_reply_never_echoes_a_bare_cr(mx: int, pki) -> None:
    with mx_client(mx, pki) as smtp:
        assert smtp.sock is not None
        smtp.sock.sendall(b"NOOP\rRSET\r\nNOOP\r\n")
        first, second = smtp.getreply(), smtp.getreply()
    assert first[0] == 500 and b"\r" not in first[1]
    assert second[0] == 250


def test_a_success_dsn_for_utf8_headers_keeps_the_250(mx: int, pki, box: Mailbox) -> None:
    raw = make_message(to=box.address, subject="Résultats d'analyse é")  # 8-bit header
    with mx_client(mx, pki) as smtp:
        smtp.mail(SENDER, options=["SMTPUTF8", "RET=HDRS"])
        smtp.rcpt(box.address, options=["NOTIFY=SUCCESS"])
        code, reply = smtp.data(raw)
    assert (code, reply) == (250, b"2.0.0 Message delivered")
    assert len(_delivered(box.address)) == 1
    report = OutboundMessage.objects.get(origin=OutboundMessage.Origin.REPORT)
    assert report.envelope_from == ""


ADDRESS_ARGS = [
    "<a@b.fr>",
    "<Jean.Dupont@ehpad.mssante.fr> SIZE=2048",
    "<a@b.fr>\tBODY=8BITMIME",
    "<>",
    "<a..b@c.fr>",
    "<.a@c.fr>",
    '<"a b"@c.fr>',
    "<@r.fr:a@c.fr>",
    "<a@[127.0.0.1]>",
    "<a@b.fr>SIZE=1",
    "< a@b.fr>",
    "<a@b.fr",
    "a@b.fr",
    "<a@b.fr> ",
    "<a(comment)@b.fr>",
    "<é@b.fr>",
    "<a@b..fr>",
    "<a@-b.fr>",
    "<a@b.fr.>",
    "<" + "x" * 70 + "@b.fr>",
    "<a+tag/x=y@b-c.d.fr> NOTIFY=SUCCESS ORCPT=rfc822;a@b.fr",
    "<a@b.fr> (note) SIZE=1",
    "<a@b.fr>  \t SIZE=1",
    "<a@b.fr>\r\n",
    "<a@b.fr>\n",
]


@pytest.mark.parametrize("arg", ADDRESS_ARGS)
def test_fast_address_parsing_answers_as_aiosmtpd(arg: str) -> None:
    """GatewaySMTP._getaddr's fast path gives aiosmtpd's own answer on every shape."""
    from aiosmtpd.smtp import SMTP

    from mailboxes.transport.gateway.handler import GatewaySMTP

    class Handler:
        pass

    ours, theirs = GatewaySMTP(Handler()), SMTP(Handler())
    assert ours._getaddr(arg) == theirs._getaddr(arg)
    ours.local_part_limit = theirs.local_part_limit = 64  # RFC 5321 §4.5.3.1.1
    assert ours._getaddr(arg) == theirs._getaddr(arg)
