"""Certificate revocation (IGC-Santé CRL) over real TLS with the generated PKI: the gateway
refuses a revoked client certificate at the handshake, the relay a revoked peer, the sync puts
only good CRLs in force, and a running gateway picks a new CRL up without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.server
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent
from devtools.pki import Issued, crl_paths, issue_crl
from mailboxes.models import Mailbox, OutboundDelivery
from mailboxes.transport import crl as crls
from mailboxes.transport.crl_sync import crl_expiry_check, crl_sync
from mailboxes.transport.gateway.server import ServerContext, serve_until
from mailboxes.transport.relay import Recipient, message_relay
from tests.factories import make_message
from tests.mailboxes.conftest import _free_port
from tests.mailboxes.conftest import inbox as _inbox
from tests.mailboxes.test_gateway import SENDER, _client, gateway, wait_for_banner
from tests.mailboxes.test_relay import REMOTE, _peer_fixture, _send, relay_settings

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["gateway", "relay_settings"]  # fixtures used here, defined with their tests
NOW = dt.datetime.now(dt.UTC)


def _folder(pki: dict[str, Issued]) -> Path:
    return Path(pki["ca"].cert).parent


@pytest.fixture
def crl_settings(pki: dict[str, Issued], settings, tmp_path: Path):
    """A CRL file in force of this test's own (none yet), the test CA as the only authority."""
    settings.TLS_CRL_FILE = str(tmp_path / "tls" / "crl.pem")
    settings.TLS_CRL_URLS = []
    settings.GATEWAY_CA_BUNDLE = settings.RELAY_CA_BUNDLE = str(pki["ca"].cert)
    settings.GATEWAY_CERT, settings.GATEWAY_KEY = str(pki["gateway"].cert), str(pki["gateway"].key)
    return settings


def _empty_crl(pki: dict[str, Issued], tmp_path: Path, **kw) -> Path:
    """A good CRL that revokes nothing, older than the PKI's own (which may follow it)."""
    path = tmp_path / "vide.crl"
    issue_crl(_folder(pki), revoked=[], last_update=NOW - dt.timedelta(days=2), out=path, **kw)
    return path


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """The gateway logs the refused handshake from its thread, right after the client saw it."""
    deadline = time.monotonic() + 5
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"not logged: {text}"
        time.sleep(0.05)


def _tampered(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    data[-5] ^= 0x01  # inside the signature, the last field of the DER CRL
    target.write_bytes(bytes(data))
    return target


# --- The gateway and the relay ------------------------------------------------------------------


# What the client sees of a refused handshake: the TLS alert (the gateway flushes it before
# closing, handler.AlertingTLS), or a closed connection when it had already gone.
REFUSED = (smtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionError)


def test_a_revoked_client_certificate_fails_the_handshake_and_nothing_is_delivered(
    gateway: int, pki, box: Mailbox, caplog
) -> None:
    with pytest.raises(REFUSED, match="alert certificate revoked"):  # the TLS alert it was sent
        smtp = _client(gateway, pki, cert="revoked")
        smtp.sendmail(SENDER, [box.address], make_message(to=box.address))
    _logged(caplog, "certificate verify failed: certificate revoked")
    assert _inbox(box.address) == []
    assert not AuditEvent.objects.filter(action="gateway.received").exists()


def test_a_valid_client_certificate_is_accepted_with_revocation_checked(
    gateway: int, pki, box: Mailbox, settings
) -> None:
    assert str(crl_paths(_folder(pki))[1]) == settings.TLS_CRL_FILE  # the session's CRL in force
    with _client(gateway, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], make_message(to=box.address)) == {}
    assert len(_inbox(box.address)) == 1


def test_the_relay_keeps_the_message_for_a_peer_whose_certificate_is_revoked(
    pki, relay_settings, listed, box: Mailbox
) -> None:
    for handler in _peer_fixture(pki, relay_settings, "revoked"):
        message = _send(box, [Recipient(REMOTE)])
        message_relay(public_id=str(message.public_id))
        row = OutboundDelivery.objects.get(message=message)
        assert row.status == OutboundDelivery.Status.QUEUED  # temporary: retried later
        assert "certificate revoked" in row.last_reply
        assert not handler.received


@contextlib.contextmanager
def running_gateway(settings) -> Iterator[int]:
    """run_gateway's serving code in a thread, its context built as run_gateway builds it."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    settings.TLS_CRL_RECHECK_SECONDS = 0  # look at the file at every connection
    context = ServerContext.from_settings()
    port = _free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve_until(stop, context, "127.0.0.1", port),)
    )
    thread.start()
    try:
        wait_for_banner(port)
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_a_running_gateway_applies_a_new_crl_to_new_connections_without_restart(
    pki, crl_settings, listed, tmp_path: Path, box: Mailbox
) -> None:
    assert crl_sync(sources=[str(_empty_crl(pki, tmp_path))]).result == "success"
    with running_gateway(crl_settings) as port:
        with _client(port, pki, cert="revoked") as smtp:  # not revoked yet
            assert smtp.sendmail(SENDER, [box.address], make_message(to=box.address)) == {}

        assert crl_sync(sources=[str(crl_paths(_folder(pki))[0])]).result == "success"
        with pytest.raises(REFUSED):
            smtp = _client(port, pki, cert="revoked")
            smtp.sendmail(SENDER, [box.address], make_message(to=box.address))
        with _client(port, pki) as smtp:  # the others still come in
            assert smtp.sendmail(SENDER, [box.address], make_message(to=box.address)) == {}
    assert len(_inbox(box.address)) == 2


def test_an_expired_crl_in_force_closes_the_gateway_to_every_peer_and_alerts(
    pki, crl_settings, listed, tmp_path: Path, box: Mailbox, caplog
) -> None:
    # What OpenSSL does with an expired CRL, on purpose (mailboxes/transport/crl.py: fail closed;
    # the sender keeps its message and retries).
    expired = _empty_crl(pki, tmp_path, next_update=NOW - dt.timedelta(hours=1))
    pem = x509.load_der_x509_crl(expired.read_bytes()).public_bytes(serialization.Encoding.PEM)
    crls.write_atomically(crl_settings.TLS_CRL_FILE, pem)  # as only a past sync can have put it
    with caplog.at_level(logging.ERROR), running_gateway(crl_settings) as port:
        with pytest.raises(REFUSED):
            smtp = _client(port, pki)
            smtp.sendmail(SENDER, [box.address], make_message(to=box.address))
        assert crl_expiry_check() is False
    _logged(caplog, "certificate verify failed: CRL has expired")
    assert "expired on" in caplog.text  # the operator's alert
    assert _inbox(box.address) == []


# --- sync_crl -----------------------------------------------------------------------------------


def test_sync_crl_puts_a_verified_crl_in_force(pki, crl_settings, capsys) -> None:
    call_command("sync_crl", str(crl_paths(_folder(pki))[0]))  # DER, as IGC-Santé publishes

    [in_force] = crls.read_in_force(crl_settings.TLS_CRL_FILE)
    assert in_force.revoked == 1 and in_force.issuer == pki["ca"].subject
    assert "LCR mise en vigueur" in capsys.readouterr().out
    event = AuditEvent.objects.get(action="tls.crl_sync")
    assert event.result == "success" and event.details["crls"][0]["revoked"] == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        ("tampered", "signature invalide"),
        ("expired", "expirée depuis le"),
        ("garbage", "n'est pas une liste de révocation"),
        ("older", "plus ancienne"),
    ],
)
def test_sync_crl_refuses_a_bad_crl_and_keeps_the_one_in_force(
    make: str, reason: str, pki, crl_settings, tmp_path: Path, caplog
) -> None:
    good = crl_paths(_folder(pki))[0]
    call_command("sync_crl", str(good))
    before = Path(crl_settings.TLS_CRL_FILE).read_bytes()
    bad = tmp_path / "mauvaise.crl"
    if make == "tampered":
        _tampered(good, bad)
    elif make == "expired":
        issue_crl(
            _folder(pki),
            last_update=NOW - dt.timedelta(days=10),
            next_update=NOW - dt.timedelta(days=1),
            out=bad,
        )
    elif make == "garbage":
        bad.write_bytes(b"<html>Service indisponible</html>")
    else:
        bad = _empty_crl(pki, tmp_path)  # signed and valid, but older: would un-revoke

    with caplog.at_level(logging.ERROR), pytest.raises(CommandError, match=reason) as refused:
        call_command("sync_crl", str(bad))

    assert "celle en vigueur reste en place" in str(refused.value)
    assert Path(crl_settings.TLS_CRL_FILE).read_bytes() == before
    failure = AuditEvent.objects.filter(action="tls.crl_sync").latest("id")
    assert failure.result == "failure" and reason in failure.details["error"]
    assert "CRL sync failed" in caplog.text


def test_sync_crl_downloads_from_urls(pki, crl_settings, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ac.crl").write_bytes(crl_paths(_folder(pki))[0].read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ac.crl"
        crl_settings.TLS_CRL_URLS = [url]
        assert crl_sync().result == "success"
        assert crl_sync().result == "unchanged"
        with pytest.raises(CommandError, match="Téléchargement impossible"):
            call_command("sync_crl", "--url", url.replace("ac.crl", "absente.crl"))
    finally:
        server.shutdown()
        server.server_close()
    assert len(crls.read_in_force(crl_settings.TLS_CRL_FILE)) == 1


def test_a_crl_near_its_end_raises_an_alert(pki, crl_settings, tmp_path: Path, caplog) -> None:
    soon = tmp_path / "bientot.crl"
    issue_crl(_folder(pki), next_update=NOW + dt.timedelta(hours=5), out=soon)
    with caplog.at_level(logging.ERROR):
        assert crl_sync(sources=[str(soon)]).result == "success"  # still good: in force
    assert "expires on" in caplog.text
    assert crl_expiry_check() is False
