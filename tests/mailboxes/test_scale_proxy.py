"""Beyond one machine (issue 17, docs/deployment.md): two gateways, two relay workers and two
Dovecot backends behind a Dovecot proxy, the BALs shared between the backends by the portal's
database (Mailbox.dovecot_backend). A few hundred messages go both ways over real STARTTLS with
the test PKI; each is then found once, in the Maildir of its BAL's backend and nowhere else,
and the portal's webmail reads each BAL through the proxy."""

from __future__ import annotations

import asyncio
import email
import json
import shutil
import smtplib
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from devtools.pki import Issued
from mailboxes.access import Grant
from mailboxes.console.services.lifecycle import (
    dovecot_backend_users,
    dovecot_backend_users_sync,
    dovecot_users_sync,
)
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store import dovecot as store
from mailboxes.store.imap import MailStore
from mailboxes.store.sizes import home_sizes
from mailboxes.transport.gateway.server import serve_until, tls_context
from mailboxes.transport.relay import BATCH_ROWS, Recipient, message_relay, message_spool
from mailboxes.webmail.selectors import unread_counts
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import _free_port, wait_provisioned
from tests.mailboxes.test_gateway import SENDER, wait_for_banner
from tests.mailboxes.test_relay import Peer, _start_peer

pytestmark = pytest.mark.django_db(transaction=True)

BACKENDS = ("b1", "b2")
BALS = 8  # shared between the two backends by the portal (the least loaded takes the next)
INBOUND = 240  # through the two gateways, one in eight to two BALs (on both backends)
OUTBOUND = 160  # relayed by the two workers to another operator's MX over TLS
LOCAL = 40  # from a BAL of one backend to a BAL of the other, through the relay
REMOTE = "dr.durand@operateur-test.mssante.fr"


@dataclass
class Shard:
    proxy: store.Instance
    backends: dict[str, store.Instance]


def _stop_all(procs: list) -> None:
    """Stop the Dovecots together (each takes about 3 s to exit: platform-notes §2)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except Exception:
            proc.kill()
            proc.wait()


@pytest.fixture
def sharded(settings) -> Iterator[Shard]:
    """Two backends listening on loopback ports picked now (IMAP and LMTP), and a proxy that
    takes the portal's place: its sockets are the ones the portal uses (DOVECOT_DIR)."""
    base = Path(tempfile.mkdtemp(prefix="mss-shard-"))
    base.chmod(0o755)  # Dovecot's unprivileged services traverse it
    procs = []
    try:
        backends = {}
        for name in BACKENDS:
            backends[name] = store.Instance(
                base_dir=base / name,
                mail_root=base / name / "mail",
                imap_port=_free_port(),
                lmtp_port=_free_port(),
            )
        settings.DOVECOT_BACKENDS = [
            f"{name}=127.0.0.1:{b.imap_port}:{b.lmtp_port}" for name, b in backends.items()
        ]
        settings.DOVECOT_DIR = base / "proxy"
        settings.DOVECOT_MAIL_ROOT = base / "proxy" / "mail"
        settings.DOVECOT_IMAP_PORT = _free_port()
        proxy = store.instance_from_settings()
        assert proxy.proxy
        for instance in (*backends.values(), proxy):
            store.write_instance(
                instance,
                master_user=django_settings.DOVECOT_MASTER_USER,
                master_password=django_settings.DOVECOT_MASTER_PASSWORD,
            )
            procs.append(store.start(instance, instance.base_dir / "foreground.log"))
        yield Shard(proxy=proxy, backends=backends)
    finally:
        _stop_all(procs)
        shutil.rmtree(base, ignore_errors=True)
        # The tasks asking each backend's host to rewrite its list (no such host here).
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(
            *(f"dovecot-{name}" for name in BACKENDS)
        )


def _provision(shard: Shard) -> list[Mailbox]:
    """BALs created as the console creates them; each backend is given its own BAL list."""
    structure = make_structure()
    boxes = [
        make_mailbox(
            structure=structure,
            owner=make_professional(),
            local_part=f"soignant{i:02d}",
        )
        for i in range(BALS)
    ]
    dovecot_users_sync()
    for name, instance in shard.backends.items():
        # What the task of the queue dovecot-<name> does on that backend's host.
        with override_settings(DOVECOT_DIR=instance.base_dir):
            dovecot_backend_users_sync(name)
    wait_provisioned(*(box.address for box in boxes))  # through the proxy: both know them
    return boxes


def _maildirs(root: Path) -> Counter[tuple[str, str]]:
    """(BAL address, Message-ID) of every message stored under a mail root, counted."""
    found: Counter[tuple[str, str]] = Counter()
    for path in root.glob("*/*/Maildir/**/*"):
        if path.is_file() and path.parent.name in ("new", "cur"):
            domain, local = path.relative_to(root).parts[:2]
            message = email.message_from_bytes(path.read_bytes())
            found[(f"{local}@{domain}", str(message["Message-ID"]))] += 1
    return found


def _gateway(pki: dict[str, Issued]) -> tuple[int, asyncio.AbstractEventLoop, asyncio.Event]:
    """run_gateway's serving code (serve_until) on its own port, loop and thread."""
    context = tls_context(
        cert=str(pki["gateway"].cert), key=str(pki["gateway"].key), ca_bundle=str(pki["ca"].cert)
    )
    port = _free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(serve_until(stop, context, "127.0.0.1", port),),
        daemon=True,
    )
    thread.start()
    wait_for_banner(port)
    return port, loop, stop


def _inbound_session(port: int, pki: dict[str, Issued], batch: list[tuple[str, list[str]]]):
    """One peer session over mutual TLS sending a batch of (Message-ID, recipients)."""
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    context.check_hostname = False
    context.load_cert_chain(str(pki["peer"].cert), str(pki["peer"].key))
    refused = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("smtp.operateur-test.fr")
        smtp.starttls(context=context)
        smtp.ehlo("smtp.operateur-test.fr")
        for message_id, rcpts in batch:
            raw = (
                f"From: Laboratoire <{SENDER}>\r\nTo: {', '.join(rcpts)}\r\n"
                f"Subject: Resultats {message_id}\r\nDate: Mon, 16 Nov 2026 09:30:00 +0100\r\n"
                f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour,\r\nci-joint.\r\n"
            ).encode()
            refused.append(smtp.sendmail(SENDER, rcpts, raw))
    connection.close()
    return refused


def _worker(public_ids: list[str], done: list[int]) -> None:
    """A relay worker: what the Celery task does for each message it is given, with the batch
    of other due rows it also takes (the other worker competes for the same rows)."""
    try:
        for public_id in public_ids:
            done.append(message_relay(public_id=public_id, also_due=BATCH_ROWS))
    finally:
        connection.close()


def test_two_gateways_two_workers_two_backends_behind_a_proxy_store_each_message_once(
    sharded: Shard, pki: dict[str, Issued], listed: None, settings
) -> None:
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0  # threads open their own connections
    boxes = _provision(sharded)
    backend_of = {box.address: box.dovecot_backend for box in boxes}
    assert Counter(backend_of.values()) == {"b1": BALS // 2, "b2": BALS // 2}

    # --- Inbound: two gateways, eight peer sessions ------------------------------------------
    inbound: list[tuple[str, list[str]]] = []
    for i in range(INBOUND):
        rcpts = [boxes[i % BALS].address]
        if i % 8 == 0:  # a second recipient on the other backend: the proxy splits the RCPTs
            rcpts.append(boxes[(i + 1) % BALS].address)
        inbound.append((f"<in-{i:04d}@operateur-test.mssante.fr>", rcpts))
    gateways = [_gateway(pki) for _ in range(2)]
    try:
        sessions = 8
        with ThreadPoolExecutor(sessions) as pool:
            replies = list(
                pool.map(
                    lambda s: _inbound_session(gateways[s % 2][0], pki, inbound[s::sessions]),
                    range(sessions),
                )
            )
    finally:
        for _port, loop, stop in gateways:
            loop.call_soon_threadsafe(stop.set)
    assert all(refused == {} for batch in replies for refused in batch)

    # --- Outbound: two relay workers, to another operator's MX and across the backends -------
    peer = Peer()
    settings.RELAY_CERT = str(pki["gateway"].cert)
    settings.RELAY_KEY = str(pki["gateway"].key)
    settings.RELAY_CA_BUNDLE = str(pki["ca"].cert)
    settings.RELAY_HOSTNAME = "mx.ehpad-les-tilleuls.mssante.fr"
    controller, port = _start_peer(pki, "peer", peer)
    settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{port}"]
    try:
        spooled: list[tuple[str, Mailbox, str]] = []
        for i in range(OUTBOUND + LOCAL):
            sender = boxes[i % BALS]
            if i < OUTBOUND:
                to = REMOTE
            else:  # the next BAL is on the other backend
                to = boxes[(i + 1) % BALS].address
                assert backend_of[to] != sender.dovecot_backend
            message_id = f"<out-{i:04d}@ehpad-les-tilleuls.mssante.fr>"
            raw = (
                f"From: <{sender.address}>\r\nTo: <{to}>\r\nSubject: Envoi {i}\r\n"
                f"Message-ID: {message_id}\r\nX-MSS-NIL: 12345\r\n\r\nBonjour,\r\n"
            ).encode()
            message = message_spool(
                origin=OutboundMessage.Origin.WEBMAIL,
                envelope_from=sender.address,
                recipients=[Recipient(to)],
                content=raw,
                message_id=message_id,
                mailbox=sender,
            )
            spooled.append((str(message.public_id), sender, to))
        ids = [public_id for public_id, _s, _t in spooled]
        done: list[int] = []
        workers = [threading.Thread(target=_worker, args=(ids[w::2], done)) for w in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    finally:
        controller.stop()
    assert sum(done) == OUTBOUND + LOCAL  # every row handled once, by one worker or the other
    statuses = Counter(OutboundDelivery.objects.values_list("local", "status"))
    assert statuses == {(False, "relayed"): OUTBOUND, (True, "delivered"): LOCAL}

    # --- Each message once, in its BAL's backend, and nowhere else ---------------------------
    expected: dict[str, Counter[tuple[str, str]]] = {name: Counter() for name in BACKENDS}
    for message_id, rcpts in inbound:
        for address in rcpts:
            expected[backend_of[address]][(address, message_id)] += 1
    for i, (_public_id, _sender, to) in enumerate(spooled[OUTBOUND:], start=OUTBOUND):
        expected[backend_of[to]][(to, f"<out-{i:04d}@ehpad-les-tilleuls.mssante.fr>")] += 1
    for name, instance in sharded.backends.items():
        assert _maildirs(instance.mail_root) == expected[name], name
    assert not any(sharded.proxy.mail_root.iterdir())  # the proxy stores nothing
    sent_to_peer = Counter(
        email.message_from_bytes(envelope.original_content or b"")["Message-ID"]
        for envelope in peer.received
    )
    assert sent_to_peer == Counter(
        f"<out-{i:04d}@ehpad-les-tilleuls.mssante.fr>" for i in range(OUTBOUND)
    )

    # --- The portal reads each BAL through the proxy ----------------------------------------
    per_bal: dict[str, set[str]] = {box.address: set() for box in boxes}
    for name in BACKENDS:
        for address, message_id in expected[name]:
            per_bal[address].add(message_id)
    grants = [
        Grant(mailbox=box, read=True, organise=True, send=True, manage=False, relation="owner")
        for box in boxes
    ]
    assert {g.mailbox.address: n for g, n in unread_counts(grants)} == {
        a: len(ids) for a, ids in per_bal.items()
    }
    for box in boxes:
        with MailStore(box.address) as mail:
            _validity, uids = mail.folder_uids("INBOX")
            assert set(mail.message_ids("INBOX", uids).values()) == per_bal[box.address]
    # The consoles' sizes and the quota too: the proxy stores nothing, the backends answer.
    sizes = home_sizes([box.address for box in boxes])
    assert all(sizes[address] for address, ids in per_bal.items() if ids), sizes


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder Dovecot's unprivileged services could traverse (not pytest's 0700 tmp)."""
    path = Path(tempfile.mkdtemp(prefix="mss-conf-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_backend_host_gets_its_ports_and_only_its_bals(settings, folder: Path) -> None:
    """``dovecot_config --backend`` on a backend's host: LMTP over TCP for the proxy, and the
    users file lists only the BALs this backend stores (a misrouted delivery is refused)."""
    settings.DOVECOT_BACKENDS = ["b1=10.0.0.11:10143:10024", "b2=10.0.0.12:10143:10024"]
    settings.DOVECOT_DIR = folder / "dovecot"
    settings.DOVECOT_MAIL_ROOT = folder / "mail"
    structure = make_structure()
    first, second, third = (
        make_mailbox(structure=structure, owner=make_professional(), local_part=f"bal{i}")
        for i in range(3)
    )
    assert [first.dovecot_backend, second.dovecot_backend, third.dovecot_backend] == [
        "b1",
        "b2",
        "b1",
    ]
    Mailbox.objects.filter(pk=third.pk).update(dovecot_backend="")  # before sharding: b1

    call_command("dovecot_config", backend="b2", stdout=StringIO())

    config = (folder / "dovecot" / "dovecot.conf").read_text()
    assert "inet_listener lmtp {\n    address = 127.0.0.1\n    port = 10024\n" in config
    assert "lmtp_proxy" not in config
    users = (folder / "dovecot" / "users").read_text()
    assert [line.split(":")[0] for line in users.splitlines()] == [second.address]
    assert sorted(dovecot_backend_users("b1")) == sorted([first.address, third.address])


def test_the_proxy_names_each_bal_backend_and_leaves_out_an_unknown_one(
    settings, folder: Path
) -> None:
    settings.DOVECOT_BACKENDS = ["b1=10.0.0.11:10143:10024", "b2=10.0.0.12:10143:10025"]
    settings.DOVECOT_DIR = folder / "dovecot"
    settings.DOVECOT_MAIL_ROOT = folder / "mail"
    structure = make_structure()
    first, second, gone = (
        make_mailbox(structure=structure, owner=make_professional(), local_part=f"bal{i}")
        for i in range(3)
    )
    Mailbox.objects.filter(pk=gone.pk).update(dovecot_backend="b3")  # no longer listed

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("dovecot-b1", "dovecot-b2")
    call_command("dovecot_config", stdout=StringIO())

    for name in ("b1", "b2"):  # each backend's host is asked to rewrite its own list
        [queued] = [json.loads(m) for m in broker.lrange(f"dovecot-{name}", 0, -1)]
        broker.delete(f"dovecot-{name}")
        assert queued["headers"]["task"] == "mailboxes.tasks.dovecot_backend_sync"
        assert queued["headers"]["argsrepr"] == repr([name])
    assert "lmtp_proxy = yes" in (folder / "dovecot" / "dovecot.conf").read_text()
    with pytest.raises(FileNotFoundError):  # closing a BAL never says "nothing to delete" here
        store.remove_mail_home(store.instance_from_settings(), first.address)
    lines = {
        line.split(":")[0]: line.split(":", 7)[7]
        for line in (folder / "dovecot" / "users").read_text().splitlines()
    }
    assert lines == {
        first.address: "proxy=y host=10.0.0.11 port=%{if;%s;eq;lmtp;10024;10143} "
        f"master={settings.DOVECOT_MASTER_USER} proxy_timeout={settings.DOVECOT_TIMEOUT}",
        second.address: "proxy=y host=10.0.0.12 port=%{if;%s;eq;lmtp;10025;10143} "
        f"master={settings.DOVECOT_MASTER_USER} proxy_timeout={settings.DOVECOT_TIMEOUT}",
    }


@pytest.mark.parametrize(
    "entry", ["b1", "b1=10.0.0.11:10143", "b 1=10.0.0.11:10143:24", "=10.0.0.11:1:2"]
)
def test_a_malformed_backend_list_is_refused_in_french(settings, entry: str) -> None:
    settings.DOVECOT_BACKENDS = [entry]
    with pytest.raises(store.InstanceError, match="n'est pas de la forme"):
        store.backends_from_settings()


def test_without_backends_the_single_instance_neither_proxies_nor_listens_for_lmtp(
    settings, folder: Path
) -> None:
    settings.DOVECOT_DIR = folder / "dovecot"
    settings.DOVECOT_MAIL_ROOT = folder / "mail"
    box = make_mailbox(structure=make_structure(), owner=make_professional())

    call_command("dovecot_config", stdout=StringIO())

    config = (folder / "dovecot" / "dovecot.conf").read_text()
    assert config.rstrip().endswith("}") and "lmtp_proxy" not in config
    assert "inet_listener lmtp" not in config
    assert box.dovecot_backend == ""
    [line] = (folder / "dovecot" / "users").read_text().splitlines()
    assert line.startswith(f"{box.address}:{{SSHA512}}") and line.endswith("::::::")
