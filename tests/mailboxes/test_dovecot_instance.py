"""The private Dovecot as the portal generates and uses it: LMTP and the portal's IMAP only on
unix sockets that only the portal's user may open (no network path for the master login or for
delivery), failed logins delayed, plaintext logins refused off the machine; and the compose
file wiring the sockets between containers through the shared volume."""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
from pathlib import Path

import pytest

from mailboxes.store import dovecot as store
from mailboxes.store import lmtp
from mailboxes.store.imap import MailStore, StoreUnavailable
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import _free_port, inbox, wait_provisioned

ROOT = Path(__file__).resolve().parents[2]
RAW = b"From: a@autre.mssante.fr\r\nSubject: socket\r\nMessage-ID: <s1@t>\r\n\r\nCorps\r\n"


def _doveconf(instance: store.Instance, *args: str) -> str:
    return subprocess.run(
        ["doveconf", "-c", str(instance.config_path), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _block(config: str, header: str) -> str:
    """One listener block of ``doveconf service/<name>`` output."""
    match = re.search(rf"^  {re.escape(header)} \{{\n(.*?)^  \}}", config, re.M | re.S)
    return match.group(1) if match else ""


def test_lmtp_listens_on_a_socket_only_the_portal_user_opens(dovecot: store.Instance) -> None:
    service = _doveconf(dovecot, "service/lmtp")

    assert "inet_listener" not in service  # no TCP port: not reachable from the network
    listener = _block(service, f"unix_listener {dovecot.lmtp_socket.name}")
    assert "mode = 0600" in listener
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert f"user = {user}" in listener
    info = os.stat(dovecot.lmtp_socket)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()


def test_the_portal_imap_is_a_socket_and_logins_are_not_in_clear(dovecot: store.Instance) -> None:
    login = _doveconf(dovecot, "service/imap-login")
    listener = _block(login, f"unix_listener {dovecot.imap_socket.name}")

    assert "mode = 0600" in listener
    assert stat.S_IMODE(os.stat(dovecot.imap_socket).st_mode) == 0o600
    # A password login over a connection that is neither local nor TLS is refused.
    assert _doveconf(dovecot, "-h", "disable_plaintext_auth").strip() == "yes"


def test_failed_logins_are_delayed(dovecot: store.Instance) -> None:
    delay = _doveconf(dovecot, "-h", "auth_failure_delay").strip()

    assert re.fullmatch(r"[1-9]\d* secs?", delay), delay


@pytest.mark.django_db
def test_delivery_and_reading_need_no_tcp_port(dovecot: store.Instance, settings) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    wait_provisioned(box.address)
    settings.DOVECOT_IMAP_PORT = _free_port()  # nothing listens there: the portal never asks

    outcomes = lmtp.deliver("a@autre.mssante.fr", [box.address], RAW)
    with MailStore(box.address) as mail:
        mail.client.select_folder("INBOX", readonly=True)
        listed = mail.client.search(["ALL"])

    assert outcomes[box.address].delivered and len(listed) == 1


@pytest.mark.django_db
def test_without_the_sockets_the_store_is_unavailable(dovecot, tmp_path: Path, settings) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    wait_provisioned(box.address)
    settings.DOVECOT_DIR = tmp_path  # another instance folder: no socket there

    with pytest.raises(lmtp.StoreUnreachable):
        lmtp.deliver("a@autre.mssante.fr", [box.address], RAW)
    with pytest.raises(StoreUnavailable), MailStore(box.address):
        pass
    assert inbox(box.address) == []


def _service(compose: str, name: str) -> str:
    match = re.search(rf"^  {name}:\n(.*?)(?=^  \S|^\S|\Z)", compose, re.M | re.S)
    assert match, name
    return match.group(1)


def test_compose_wires_the_sockets_through_the_shared_volume_only() -> None:
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    portal_user = re.findall(r"^USER (\S+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    dovecot_service = _service(compose, "dovecot")

    # Dovecot listens on its own loopback only and hands its sockets to the portal's user.
    assert "ports:" not in dovecot_service and "DOVECOT_LISTEN" not in dovecot_service
    assert f"DOVECOT_SOCKET_USER: {portal_user}" in dovecot_service
    assert "DOVECOT_IMAP_HOST" not in compose and "DOVECOT_IMAP_HOST" not in env
    # Every process that delivers or reads mail sees Dovecot's folder (with run/lmtp and
    # run/imap-portal) where it expects it.
    shared = f"dovecot-config:{env['DOVECOT_DIR']}"
    assert shared in compose.split("services:")[0]  # the web process (x-portal)
    for name in ("worker", "gateway", "dovecot"):
        assert shared in _service(compose, name), name
    assert env["DOVECOT_LISTEN"] in ("", "127.0.0.1")
