"""A Dovecot with the API LPS listeners on, its Lua passdb calling the live portal,
and mail clients we did not write (imaplib, smtplib, curl) that connect from 127.0.0.2, so
that Dovecot does not take them for local connections (secured without TLS)."""

from __future__ import annotations

import contextlib
import imaplib
import shutil
import socket
import ssl
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings

from devtools.pki import Issued
from devtools.psc_mock import tokens
from mailboxes.software.submission import (
    SubmissionHandler,
    SubmissionSMTP,
    smtp_kwargs,
    tls_context,
)
from mailboxes.store import dovecot as store

CLIENT_ADDRESS = "127.0.0.2"
DISCOVERY_PATH = "/_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LpsImap(imaplib.IMAP4):
    """imaplib's client, from CLIENT_ADDRESS."""

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout or 10, source_address=(CLIENT_ADDRESS, 0)
        )


class LpsImapTls(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout: Any) -> socket.socket:
        sock = socket.create_connection(
            (self.host, self.port), timeout or 10, source_address=(CLIENT_ADDRESS, 0)
        )
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def client_tls(pki: dict[str, Issued], certificate: str = "") -> ssl.SSLContext:
    """The client's TLS: trusts the test CA; presents ``pki[certificate]`` when given (a
    software's client certificate, for SASL EXTERNAL)."""
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    if certificate:
        context.load_cert_chain(str(pki[certificate].cert), str(pki[certificate].key))
    return context


def xoauth2(address: str, token: str) -> bytes:
    """SASL XOAUTH2 initial response (Google's format, SC.MSS/CONF.07)."""
    return f"user={address}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(address: str, token: str) -> bytes:
    """RFC 7628 §3.1 client response."""
    return f"n,a={address},\x01auth=Bearer {token}\x01\x01".encode()


def token(national_id: str, *, lifetime: int = tokens.TOKEN_TTL) -> str:
    """A token from the PSC mock for the software client (its issuing function, as its token
    endpoint calls it; one test gets its tokens through the real HTTP flow)."""
    return tokens.access_issue(
        sub=national_id, mode="CARD", client_id=settings.PSC_MOCK_LPS_CLIENT_ID,
        auth_time=int(time.time()), lifetime=lifetime,
    )  # fmt: skip


@contextlib.contextmanager
def submission_server(pki: dict[str, Issued], settings: Any) -> Iterator[int]:
    """Our submission server in a thread, as run_submission serves it (its TLS asks for a
    client certificate of LPS_CLIENT_CA_BUNDLE, for SASL EXTERNAL). Yields the port."""

    class _Controller(Controller):
        def factory(self) -> SubmissionSMTP:
            return SubmissionSMTP(self.handler, **self.SMTP_kwargs)

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    kwargs = smtp_kwargs(tls_context(cert=str(pki["gateway"].cert), key=str(pki["gateway"].key)))
    announced = kwargs.pop("hostname")
    port = free_port()
    controller = _Controller(
        SubmissionHandler(), hostname="127.0.0.1", port=port, server_hostname=announced, **kwargs
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def lps_dovecot(live_server: Any, pki: dict[str, Issued]) -> Iterator[dict[str, Any]]:
    """Dovecot with LPS IMAP (STARTTLS) and IMAPS listeners; the portal (live server) answers
    its logins and the PSC mock its introspections. Yields the ports."""
    if shutil.which("dovecot") is None or shutil.which("curl") is None:
        pytest.fail("dovecot and curl are needed (make test installs them)")
    names = (
        "DOVECOT_DIR", "DOVECOT_MAIL_ROOT", "DOVECOT_IMAP_PORT", "LPS_IMAP_PORT",
        "LPS_IMAPS_PORT", "LPS_LISTEN", "LPS_TLS_CERT", "LPS_TLS_KEY", "LPS_AUTH_URL",
        "PSC_DISCOVERY_URL", "LPS_CLIENT_CA_BUNDLE",
    )  # fmt: skip
    saved = {name: getattr(settings, name) for name in names}
    base = Path(tempfile.mkdtemp(prefix="mssante-lps-"))
    ports = {"imap": free_port(), "imaps": free_port()}
    settings.DOVECOT_DIR = base
    settings.DOVECOT_MAIL_ROOT = base / "mail"
    settings.DOVECOT_IMAP_PORT = free_port()
    settings.LPS_IMAP_PORT = str(ports["imap"])
    settings.LPS_IMAPS_PORT = str(ports["imaps"])
    settings.LPS_LISTEN = "127.0.0.1"
    settings.LPS_TLS_CERT = str(pki["gateway"].cert)
    settings.LPS_TLS_KEY = str(pki["gateway"].key)
    settings.LPS_AUTH_URL = f"{live_server.url}/logiciels/dovecot/auth"
    settings.PSC_DISCOVERY_URL = f"{live_server.url}{DISCOVERY_PATH}"
    settings.LPS_CLIENT_CA_BUNDLE = str(pki["ca"].cert)  # the software certificates' CA
    instance = store.instance_from_settings()
    store.write_instance(
        instance,
        master_user=settings.DOVECOT_MASTER_USER,
        master_password=settings.DOVECOT_MASTER_PASSWORD,
    )
    proc = store.start(instance, base / "foreground.log")
    try:
        yield {**ports, "instance": instance, "log": base / "dovecot.log"}
    finally:
        store.stop(proc)
        for name, value in saved.items():
            setattr(settings, name, value)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lps(lps_dovecot: dict[str, Any]) -> dict[str, Any]:
    """The LPS Dovecot with no BAL and no mail at the start of each test."""
    instance = lps_dovecot["instance"]
    store.write_users(instance, [])
    for child in instance.mail_root.iterdir():
        shutil.rmtree(child, ignore_errors=True)
    return lps_dovecot
