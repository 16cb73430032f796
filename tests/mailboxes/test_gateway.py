"""The MX of the trust space over real TLS with the generated PKI, delivering to a real Dovecot."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings

from accounts.models import AuditEvent
from devtools.pki import Issued
from mailboxes.models import Mailbox
from mailboxes.transport.gateway.handler import GatewayHandler, GatewaySMTP
from mailboxes.transport.gateway.server import serve_until, smtp_kwargs, tls_context
from tests.factories import make_message
from tests.mailboxes.conftest import _free_port
from tests.mailboxes.conftest import inbox as _inbox


def wait_for_banner(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not start")


pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "labo@operateur-test.mssante.fr"


class _Controller(Controller):
    """aiosmtpd's test controller (a server in a thread), serving our SMTP subclass."""

    def factory(self) -> GatewaySMTP:
        return GatewaySMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def gateway(pki: dict[str, Issued], listed: None, settings) -> Iterator[int]:
    # The gateway's worker threads open their own connections: no persistence in tests, so
    # that none outlives the test database.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
    context = tls_context(
        cert=str(pki["gateway"].cert), key=str(pki["gateway"].key), ca_bundle=str(pki["ca"].cert)
    )
    kwargs = smtp_kwargs(context)
    announced = kwargs.pop("hostname")
    port = _free_port()
    handler = GatewayHandler()
    controller = _Controller(
        handler, hostname="127.0.0.1", port=port, server_hostname=announced, **kwargs
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def _client(port: int, pki: dict[str, Issued], cert: str | None = "peer") -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    smtp.ehlo("smtp.operateur-test.fr")
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    context.check_hostname = False
    if cert:
        context.load_cert_chain(str(pki[cert].cert), str(pki[cert].key))
    smtp.starttls(context=context)
    smtp.ehlo("smtp.operateur-test.fr")
    return smtp


def test_a_listed_operator_delivers_over_mutual_tls(gateway: int, pki, box: Mailbox) -> None:
    raw = make_message(to=box.address, extra_headers="X-MSS-NIL: 1\r\n")
    with _client(gateway, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}

    [stored] = _inbox(box.address)
    assert b"X-MSS-NIL: 1" in stored
    assert b"with ESMTPS (version=TLSv1.3" in stored
    assert b"peer certificate: CN=smtp.operateur-test.fr" in stored
    event = AuditEvent.objects.get(action="gateway.received")
    assert event.result == "success" and event.details["to"] == [box.address]
    assert event.target_id.endswith("@chu-exemple.mssante.fr>")


def test_without_starttls_mail_is_refused(gateway: int, box: Mailbox) -> None:
    with smtplib.SMTP("127.0.0.1", gateway, timeout=10) as smtp:
        smtp.ehlo("x")
        code, message = smtp.mail(SENDER)
    assert code == 530 and b"STARTTLS" in message
    assert _inbox(box.address) == []


@pytest.mark.parametrize("cert", [None, "foreign", "expired"])
def test_a_missing_foreign_or_expired_client_certificate_ends_the_session(
    gateway: int, pki, box: Mailbox, cert
) -> None:
    with pytest.raises((smtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionError)):
        smtp = _client(gateway, pki, cert=cert)
        smtp.sendmail(SENDER, [box.address], make_message(to=box.address))
    assert _inbox(box.address) == []


def test_a_certificate_not_listed_for_the_sender_domain_is_refused(
    gateway: int, pki, box: Mailbox
) -> None:
    with _client(gateway, pki) as smtp:
        wrong_domain = smtp.mail("labo@autre.mssante.fr")  # listed, but with another DN
        smtp.rset()
        unknown_domain = smtp.mail("labo@inconnu.mssante.fr")
    assert wrong_domain[0] == 550 and b"5.7.1" in wrong_domain[1]
    assert unknown_domain[0] == 550 and b"whitelist" in unknown_domain[1]


def test_recipients_must_be_bals_we_host(gateway: int, pki, box: Mailbox) -> None:
    with _client(gateway, pki) as smtp:
        smtp.mail(SENDER)
        unknown = smtp.rcpt("personne@ehpad-les-tilleuls.mssante.fr")
        foreign = smtp.rcpt("quelquun@ailleurs.mssante.fr")
        ours = smtp.rcpt(box.address)
    assert unknown[0] == 550 and b"5.1.1" in unknown[1]
    assert foreign[0] == 550 and b"Relaying denied" in foreign[1]
    assert ours[0] == 250


def test_the_null_sender_is_accepted_from_a_listed_certificate(
    gateway: int, pki, box: Mailbox
) -> None:
    with _client(gateway, pki) as smtp:
        assert (
            smtp.sendmail(
                "", [box.address], make_message(to=box.address, subject="Avis de non-remise")
            )
            == {}
        )
    assert len(_inbox(box.address)) == 1


def test_oversize_is_refused_with_552(gateway: int, pki, box: Mailbox, settings) -> None:
    with _client(gateway, pki) as smtp:
        assert int(smtp.esmtp_features["size"]) == settings.GATEWAY_MAX_SIZE
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            smtp.sendmail(
                SENDER,
                [box.address],
                make_message(to=box.address),
                mail_options=[f"SIZE={settings.GATEWAY_MAX_SIZE + 1}"],
            )
    assert exc.value.smtp_code == 552


def test_store_down_answers_451_so_the_sender_keeps_the_message(
    gateway: int, pki, box: Mailbox, settings, tmp_path: Path
) -> None:
    settings.DOVECOT_DIR = tmp_path  # no Dovecot socket there

    with _client(gateway, pki) as smtp, pytest.raises(smtplib.SMTPDataError) as exc:
        smtp.sendmail(SENDER, [box.address], make_message(to=box.address))

    assert exc.value.smtp_code == 451 and b"4.3.0" in exc.value.smtp_error
    assert AuditEvent.objects.get(action="gateway.received").error_code == "451"


def test_pki_files_exist(pki) -> None:
    assert all(Path(i.cert).exists() for i in pki.values())


def test_ehlo_advertises_the_extensions_and_no_auth(gateway: int, pki) -> None:
    with _client(gateway, pki) as smtp:
        features = smtp.esmtp_features
    for extension in ("size", "8bitmime", "smtputf8", "pipelining", "dsn", "enhancedstatuscodes"):
        assert extension in features, extension
    assert "auth" not in features and "starttls" not in features  # already in TLS


def test_dsn_parameters_are_accepted_and_kept(gateway: int, pki, box: Mailbox) -> None:
    with _client(gateway, pki) as smtp:
        refused = smtp.sendmail(
            SENDER,
            [box.address],
            make_message(to=box.address),
            mail_options=["RET=HDRS", "ENVID=QQ314159"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{box.address}"],
        )
    assert refused == {}
    dsn = AuditEvent.objects.get(action="gateway.received").details["dsn"]
    assert dsn["mail"] == {"RET": "HDRS", "ENVID": "QQ314159"}
    assert dsn["rcpt"][box.address]["NOTIFY"] == "SUCCESS,FAILURE"


def test_sigterm_drains_open_sessions_and_refuses_new_ones_with_421(
    pki, listed, box: Mailbox, settings
) -> None:
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
        with _client(port, pki) as smtp:
            smtp.mail(SENDER)
            smtp.rcpt(box.address)
            loop.call_soon_threadsafe(stop.set)
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
                assert late.recv(200).startswith(b"421 4.3.2")
            code, _ = smtp.data(make_message(to=box.address, subject="Fini pendant l'arrêt"))
        assert code == 250
        thread.join(10)
        assert not thread.is_alive()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    assert len(_inbox(box.address)) == 1


def test_a_client_that_disconnects_mid_data_delivers_nothing(
    gateway: int, pki, box: Mailbox
) -> None:
    smtp = _client(gateway, pki)
    smtp.mail(SENDER)
    smtp.rcpt(box.address)
    smtp.putcmd("DATA")
    assert smtp.getreply()[0] == 354
    smtp.send(b"From: a@b\r\nSubject: coupe\r\n\r\nDebut du message sans fin")
    assert smtp.sock is not None
    smtp.sock.close()
    time.sleep(0.5)
    assert _inbox(box.address) == []
    assert not AuditEvent.objects.filter(action="gateway.received").exists()


def test_protocol_abuse_gets_clear_replies(gateway: int, pki, box: Mailbox, settings) -> None:
    settings.GATEWAY_MAX_RECIPIENTS = 2
    with _client(gateway, pki) as smtp:
        assert smtp.docmd("RCPT TO:<" + box.address + ">")[0] == 503  # before MAIL
        assert smtp.docmd("DATA")[0] == 503
        assert (
            smtp.docmd("MAIL FROM:<" + "x" * 600 + "@operateur-test.mssante.fr>")[0] == 500
        )  # line too long
        assert smtp.docmd("BONJOUR")[0] == 500
        smtp.mail(SENDER)
        assert smtp.rcpt(box.address)[0] == 250
        assert smtp.rcpt(box.address)[0] == 250
        assert smtp.rcpt(box.address)[0] == 452  # too many recipients
        assert smtp.data(b"Subject: NUL \x00\r\n\r\nCorps\r\n")[0] == 554
        smtp.mail(SENDER)
        smtp.rcpt(box.address)
        assert (
            smtp.data(b"Subject: LF seuls\nFrom: a@operateur-test.mssante.fr\n\nCorps\n")[0] == 250
        )
    [stored] = _inbox(box.address)
    assert b"Subject: LF seuls\r\n" in stored and b"Corps" in stored


def _gateway_env(pki: dict[str, Issued]) -> dict[str, str]:
    db = settings.DATABASES["default"]
    return {
        **os.environ,
        "PORTAL_ENV": "test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DOVECOT_DIR": str(settings.DOVECOT_DIR),
        "DOVECOT_IMAP_PORT": str(settings.DOVECOT_IMAP_PORT),
        "GATEWAY_CERT": str(pki["gateway"].cert),
        "GATEWAY_KEY": str(pki["gateway"].key),
        "GATEWAY_CA_BUNDLE": str(pki["ca"].cert),
    }


def test_kill_9_during_data_leaves_nothing_delivered_and_no_250(pki, listed, box: Mailbox) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[2],
        env=_gateway_env(pki),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_banner(port)
        smtp = _client(port, pki)
        assert smtp.mail(SENDER)[0] == 250  # the gateway process reads the test database
        assert smtp.rcpt(box.address)[0] == 250
        smtp.putcmd("DATA")
        assert smtp.getreply()[0] == 354
        smtp.send(make_message(to=box.address)[:200])
        proc.kill()  # SIGKILL in the middle of DATA
        proc.wait(10)
        with pytest.raises((smtplib.SMTPServerDisconnected, ssl.SSLError, OSError)):
            smtp.send(b"\r\n.\r\n")  # the end of DATA reaches a dead server: no reply, no 250
            smtp.getreply()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _inbox(box.address) == []


def test_tls_below_1_2_is_refused_and_1_2_accepted(gateway: int, pki, box: Mailbox) -> None:
    def context(version: ssl.TLSVersion) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(pki["peer"].cert), str(pki["peer"].key))
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        ctx.minimum_version = version
        ctx.maximum_version = version
        return ctx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = context(ssl.TLSVersion.TLSv1_1)
    with smtplib.SMTP("127.0.0.1", gateway, timeout=10) as smtp:
        smtp.ehlo("x")
        with pytest.raises(ssl.SSLError) as exc:
            smtp.starttls(context=old)
    # The client could offer TLS 1.1 (no local "no ciphers/protocols available"): the server cut it.
    assert "AVAILABLE" not in str(exc.value).upper()

    with smtplib.SMTP("127.0.0.1", gateway, timeout=10) as smtp:
        smtp.ehlo("x")
        smtp.starttls(context=context(ssl.TLSVersion.TLSv1_2))
        smtp.ehlo("x")
        assert smtp.sendmail(SENDER, [box.address], make_message(to=box.address)) == {}
    assert b"version=TLSv1.2" in _inbox(box.address)[0]


def test_a_client_that_floods_commands_without_reading_is_cut_off_and_the_server_survives(
    gateway: int, pki
) -> None:
    smtp = _client(gateway, pki)
    assert smtp.sock is not None
    smtp.sock.sendall(b"NOOP\r\n" * 1200)
    received = b""
    smtp.sock.settimeout(10)
    while b"421" not in received:
        chunk = smtp.sock.recv(65536)
        if not chunk:
            break
        received += chunk
    assert b"421 4.7.0 NOOP sent too many times" in received
    with _client(gateway, pki) as again:
        assert again.noop()[0] == 250


def test_an_overlong_line_is_refused_and_the_session_goes_on(
    gateway: int, pki, box: Mailbox
) -> None:
    with _client(gateway, pki) as smtp:
        smtp.mail(SENDER)
        smtp.rcpt(box.address)
        code, reply = smtp.data(make_message(body="x" * 2000))
        assert (code, reply[:9]) == (500, b"5.5.2 Lin")
        assert _inbox(box.address) == []
        smtp.mail(SENDER)  # the session is still usable
        smtp.rcpt(box.address)
        assert smtp.data(make_message(subject="Bien formé"))[0] == 250
    assert len(_inbox(box.address)) == 1


@pytest.fixture
def small_limit(settings) -> int:
    settings.GATEWAY_MAX_SIZE = 8192  # read by the gateway fixture when it starts
    return 8192


def test_a_text_refused_during_data_is_traced_and_nothing_delivered(
    small_limit: int, gateway: int, pki, box: Mailbox
) -> None:
    with _client(gateway, pki) as smtp:
        smtp.mail(SENDER)
        smtp.rcpt(box.address)
        too_long = smtp.data(make_message(subject="Ligne", body="x" * 1000))
        smtp.mail(SENDER)
        smtp.rcpt(box.address)
        too_big = smtp.data(make_message(subject="Gros", body="y" * 70 + ("\r\n" + "y" * 70) * 200))
    assert too_long[0] == 500 and too_big[:2] == (552, b"5.3.4 Message too big for this system")
    assert _inbox(box.address) == []
    events = AuditEvent.objects.filter(action="gateway.received").order_by("pk")
    assert [(e.result, e.error_code, e.details["to"]) for e in events] == [
        ("failure", "500", [box.address]),
        ("failure", "552", [box.address]),
    ]
    assert events[1].details["size"] > small_limit
    assert events[1].details["reply"].startswith("552 5.3.4")
    assert events[0].target_id.endswith("@chu-exemple.mssante.fr>")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"x" * 999], 250),  # aiosmtpd's limit: 1001 octets with CRLF
        ([b"x" * 1000], 500),
        ([b"." + b"x" * 998], 250),  # counted as sent, dot included
        ([b"y" * 70] * 120 + [b"x" * 2000], 552),  # past the size first
        ([b"x" * 2000] + [b"y" * 70] * 120, 500),
    ],
)
def test_line_and_size_limits_are_aiosmtpds(
    small_limit: int, gateway: int, pki, box: Mailbox, lines: list[bytes], expected: int
) -> None:
    with _client(gateway, pki) as smtp:
        smtp.mail(SENDER)
        smtp.rcpt(box.address)
        smtp.putcmd("DATA")
        assert smtp.getreply()[0] == 354
        smtp.send(b"Subject: limites\r\n\r\n" + b"\r\n".join(lines) + b"\r\n.\r\n")
        assert smtp.getreply()[0] == expected
        assert smtp.noop()[0] == 250  # the session goes on


def test_dots_are_unstuffed_and_pipelined_commands_after_the_dot_are_kept(
    gateway: int, pki, box: Mailbox
) -> None:
    body = b"Subject: points\r\n\r\n..\r\n.debut\r\nfin.\r\n...\r\n"
    with _client(gateway, pki) as smtp:
        smtp.mail(SENDER)
        smtp.rcpt(box.address)
        smtp.putcmd("DATA")
        assert smtp.getreply()[0] == 354
        # RFC 2920: the next transaction may follow the text in the same write
        smtp.send(body + b".\r\nMAIL FROM:<" + SENDER.encode() + b">\r\nRSET\r\n")
        assert [smtp.getreply()[0] for _ in range(3)] == [250, 250, 250]
    [stored] = _inbox(box.address)
    assert stored.endswith(b"\r\n\r\n.\r\ndebut\r\nfin.\r\n..\r\n")


def test_a_long_header_folded_over_many_lines_is_delivered_intact(
    gateway: int, pki, box: Mailbox
) -> None:
    references = "\r\n ".join(f"<ref-{n}@operateur-test.mssante.fr>" for n in range(300))
    raw = make_message(subject="Fil de discussion").replace(
        b"\r\n\r\n", f"\r\nReferences: {references}\r\n\r\n".encode(), 1
    )
    assert len(references) > 10_000
    with _client(gateway, pki) as smtp:
        smtp.sendmail(SENDER, [box.address], raw)
    [delivered] = _inbox(box.address)
    assert references.encode() in delivered


def test_several_processes_share_the_port_and_all_stop_on_sigterm(
    pki, listed, box: Mailbox
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway", "--port", str(port), "--processes", "2"],
        cwd=Path(__file__).resolve().parents[2],
        env=_gateway_env(pki),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_banner(port)
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 2
        for n in range(6):  # new connections, spread by the kernel over both processes
            with _client(port, pki) as smtp:
                smtp.sendmail(SENDER, [box.address], make_message(subject=f"Message {n}"))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Passerelle arrêtée." in out.decode()
    assert len(_inbox(box.address)) == 6
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
