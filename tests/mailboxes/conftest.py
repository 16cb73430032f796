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

from mailboxes.store import dovecot as store


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
        k: getattr(settings, k)
        for k in ("DOVECOT_DIR", "DOVECOT_MAIL_ROOT", "DOVECOT_IMAP_PORT", "DOVECOT_LMTP_PORT")
    }
    settings.DOVECOT_DIR = base
    settings.DOVECOT_MAIL_ROOT = base / "mail"
    settings.DOVECOT_IMAP_PORT = _free_port()
    settings.DOVECOT_LMTP_PORT = _free_port()
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
    for child in dovecot_instance.mail_root.iterdir():
        shutil.rmtree(child, ignore_errors=True)
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
            with smtplib.LMTP("127.0.0.1", settings.DOVECOT_LMTP_PORT) as lmtp:
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
        with smtplib.LMTP("127.0.0.1", settings.DOVECOT_LMTP_PORT) as lmtp:
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
