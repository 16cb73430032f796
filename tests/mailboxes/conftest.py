"""A private Dovecot for the whole test session (real IMAP, real LMTP)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from imapclient import IMAPClient

from annuaire.models import WhitelistEntry, WhitelistVersion
from annuaire.whitelist import dn_key
from devtools.pki import Issued, crl_paths, make_test_pki
from mailboxes.models import Mailbox
from mailboxes.store import dovecot as store
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.pgp import Keys, recovery_keys_in


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def dovecot_instance() -> Iterator[store.Instance]:
    if shutil.which("dovecot") is None:
        pytest.fail("dovecot is not installed (make test installs dovecot-imapd and dovecot-lmtpd)")
    base = Path(tempfile.mkdtemp(prefix="mssante-dovecot-"))
    saved = {
        k: getattr(settings, k) for k in ("DOVECOT_DIR", "DOVECOT_MAIL_ROOT", "DOVECOT_IMAP_PORT")
    }
    settings.DOVECOT_DIR = base
    settings.DOVECOT_MAIL_ROOT = base / "mail"
    settings.DOVECOT_IMAP_PORT = _free_port()
    instance = store.instance_from_settings()
    store.write_instance(
        instance,
        master_user=settings.DOVECOT_MASTER_USER,
        master_password=settings.DOVECOT_MASTER_PASSWORD,
    )
    proc = store.start(instance, base / "foreground.log")
    try:
        yield instance
    finally:
        store.stop(proc)
        for key, value in saved.items():
            setattr(settings, key, value)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_instance: store.Instance) -> store.Instance:
    """The session's Dovecot, with no BAL and no mail at the start of each test."""
    store.write_users(dovecot_instance, [])
    # A browser test that just ended may still have requests in flight (frames loading),
    # whose IMAP sessions write index files while we delete: retry until nothing is left.
    deadline = time.monotonic() + 10
    while leftovers := list(dovecot_instance.mail_root.iterdir()):
        for child in leftovers:
            shutil.rmtree(child, ignore_errors=True)
        if time.monotonic() > deadline:
            raise RuntimeError(f"mail left from an earlier test: {leftovers}")
        time.sleep(0.05)
    return dovecot_instance


def deliver(
    address: str, raw: bytes, *, sender: str = "expediteur@autre-operateur.mssante.fr"
) -> None:
    """Deliver a message over LMTP, as the gateway will.

    Dovecot stats its passwd-file at most once per second, so a BAL provisioned less than a
    second ago may still be unknown: retry "user doesn't exist" for up to 2 s.
    """
    deadline = time.monotonic() + 2
    while True:
        try:
            with smtplib.LMTP(str(store.instance_from_settings().lmtp_socket)) as lmtp:
                lmtp.sendmail(sender, [address], raw)
            return
        except smtplib.SMTPRecipientsRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_provisioned(*addresses: str) -> None:
    """Wait until Dovecot knows these BALs (it re-reads its users file at most once a second)."""
    deadline = time.monotonic() + 3
    pending = set(addresses)
    while pending:
        with smtplib.LMTP(str(store.instance_from_settings().lmtp_socket)) as lmtp:
            for address in list(pending):
                lmtp.mail("sonde@localhost")
                code, _ = lmtp.rcpt(address)
                lmtp.rset()
                if code == 250:
                    pending.discard(address)
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot does not know {pending}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Issued]]:
    """The test PKI; its CA's CRL (revoking « revoked ») is the CRL in force for the whole
    session, so every gateway and relay test runs with revocation checks on."""
    folder = tmp_path_factory.mktemp("pki")
    issued = make_test_pki(folder)
    saved = settings.TLS_CRL_FILE
    settings.TLS_CRL_FILE = str(crl_paths(folder)[1])
    try:
        yield issued
    finally:
        settings.TLS_CRL_FILE = saved


@pytest.fixture
def box(dovecot) -> Mailbox:
    mailbox = make_mailbox(structure=make_structure(), owner=make_professional())
    wait_provisioned(mailbox.address)
    return mailbox


@pytest.fixture
def listed(pki: dict[str, Issued]) -> None:
    version = WhitelistVersion.objects.create(
        generated_at="2026-11-01T00:00:00Z",
        source="test",
        sha256="0" * 64,
        signer_subject="test",
        is_current=True,
    )
    for domain, issued in (
        ("operateur-test.mssante.fr", pki["peer"]),
        ("autre.mssante.fr", pki["gateway"]),
    ):
        WhitelistEntry.objects.create(
            version=version, domain=domain, dn=issued.subject, dn_key=dn_key(issued.subject)
        )


def inbox(address: str, folder: str = "INBOX") -> list[bytes]:
    """The messages of a folder of the BAL as stored (the INBOX by default)."""
    with IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap:
        imap.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)
        imap.select_folder(folder, readonly=True)
        uids = imap.search(["ALL"])
        return [d[b"BODY[]"] for d in imap.fetch(uids, ["BODY.PEEK[]"]).values()] if uids else []


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    """The structure's recovery key pair (and refused keys), once per session."""
    with recovery_keys_in(tmp_path_factory.mktemp("gpg")) as generated:
        yield generated


@pytest.fixture
def mx(pki: dict[str, Issued], listed: None, settings) -> Iterator[int]:
    """The gateway (MX) served in a thread with the test PKI, as test_gateway.py starts it;
    yields its port. Tests using it need ``django_db(transaction=True)``: the gateway's
    threads open their own database connections."""
    import warnings

    from aiosmtpd.controller import Controller

    from mailboxes.transport.gateway.handler import GatewayHandler, GatewaySMTP
    from mailboxes.transport.gateway.server import smtp_kwargs, tls_context

    class _Controller(Controller):
        def factory(self) -> GatewaySMTP:
            return GatewaySMTP(self.handler, **self.SMTP_kwargs)

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0  # no connection outlives the test db
    warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
    context = tls_context(
        cert=str(pki["gateway"].cert), key=str(pki["gateway"].key), ca_bundle=str(pki["ca"].cert)
    )
    kwargs = smtp_kwargs(context)
    announced = kwargs.pop("hostname")
    port = _free_port()
    controller = _Controller(
        GatewayHandler(), hostname="127.0.0.1", port=port, server_hostname=announced, **kwargs
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def mx_client(port: int, pki: dict[str, Issued], identity: str = "peer") -> smtplib.SMTP:
    """An SMTP session to the MX over mutual TLS, as the listed operator « peer » (or another
    certificate of the test PKI)."""
    import ssl

    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    smtp.ehlo("smtp.operateur-test.fr")
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    context.check_hostname = False
    context.load_cert_chain(str(pki[identity].cert), str(pki[identity].key))
    smtp.starttls(context=context)
    smtp.ehlo("smtp.operateur-test.fr")
    return smtp
