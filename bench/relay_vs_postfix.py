"""Outbound relay throughput: our relay (the real Celery worker) against a tuned Postfix 3.7
(issues 5 and 21).

Two workloads, 2 KB messages: one recipient per message (the common case; the recipients
spread over 5 domains) and 50 recipients over 5 domains (10 per domain). All five domains are
served by one local TLS sink that this script starts. Both relays present a client
certificate, require TLS >= 1.2 and verify the sink's certificate (Postfix: its fingerprint
and chain; ours: the chain and its DN against the whitelist entry of each domain).

The sink must not be the bottleneck (issue 21): a lean asyncio SMTP server (STARTTLS required,
the « peer » certificate of the test PKI, client certificates required and verified,
PIPELINING offered), in several processes sharing the port with SO_REUSEPORT (one per core by
default). Its own ceiling is measured first in the same run, for each workload: messages per
second it accepts from trivial pipelining clients (2 per sink process, whose CPU is on the
same cores: a lower bound), printed with the sink's CPU per message; the summary prints the
ceiling over each relay's rate (goal >= 3x). The sink counts a transaction's recipients only
once its DATA is answered 250; a run ends when it has counted every recipient, then waits one
second: one more would be a duplicate and fails the run.

- Postfix, configured as a careful operator would: `smtp_tls_connection_reuse = yes` with
  the `tlsproxy` service enabled in master.cf (TLS connections reused through `scache`),
  `smtp_connection_cache_on_demand = yes`, the sink's next hop in
  `smtp_connection_cache_destinations`, `smtp_connection_cache_time_limit = 10s`,
  `default_destination_concurrency_limit = 50` (and the smtp transport's), no slow start
  (`initial_destination_concurrency = 20`), `default_process_limit = 100`, the TLS session
  cache, no chroot. Messages are injected over SMTP into the hold queue (not counted), then
  released at once (`postsuper -H ALL`, `postqueue -f`).
- Ours: messages are spooled with `message_spool` (one OutboundDelivery per recipient, not
  counted) while no worker runs; then one Celery worker (prefork, RELAY_WORKERS processes,
  4 per core by default) drains the relay queue: claims, the whitelist check of each domain
  on the sink's DN, TLS sessions reused, each recipient's outcome and the traces recorded.

Rounds alternate which side goes first; the load average is printed before each run. The
clock of a run goes from the first recipient the sink accepts to the last (the time to drain
from the release / the worker's start is printed too). CPU per message, by process group, over
the same interval: the whole Postfix process tree (reaped children included), our worker's
process tree, the PostgreSQL backends of the bench database, the sink (Redis, shared with
other work on this machine, is not counted). Also printed: the peak RSS (VmHWM) of the largest
process of each relay. Figures: median msg/s per side and workload, per-round ratios and
their median. Goal: ours >= 2x Postfix on both workloads.

    scripts/system-deps.sh bench   # postfix
    .venv/bin/python bench/relay_vs_postfix.py [--messages 6000] [--wide-messages 1500] [--rounds 3]
    RELAY_SPY=/tmp/relay PY_SPY=.venv/bin/py-spy [RELAY_SPY_ARGS="--gil -r 500"] ...   # py-spy
    # of the worker's processes, one raw file per run (/tmp/relay.<workload>-ours-<round>)

History (issue 5, the earlier bench: one single-process aiosmtpd sink without PIPELINING,
Postfix with default settings, 50 recipients per message only).
Measured (2 cores, AMD EPYC, the machine shared with other engineers' test runs, load 4-17):
- before batching (one task = one message, one transaction per domain), 1,000 messages:
  ours 18-24 msg/s vs Postfix 42-51 (ratio 0.42-0.43); again here: 20.1 vs 29.5 (0.68).
- batches (a task claims up to 1,000 due rows, 50 messages; 8 sessions per peer; outcomes,
  traces and the rest recorded in a few statements per batch) and one transaction per
  message and peer, 1,000 messages, three full runs at load 8-11: ours 26.3, 21.7, 31.6
  msg/s vs Postfix 18.9, 21.0, 43.4 (ratios 1.39, 1.04, 0.73; medians 26.3 vs 21.0).
  Ours-only runs at lower load reached 46-62 msg/s: the figures follow the load of the
  machine more than anything we changed, so only compare runs made together.
- 10,000 messages, one run of each side at load 5-8: ours 38.0 msg/s (263 s) vs Postfix
  40.9 (244 s), ratio 0.93. Goal (>= 1.0) not reliably met: about parity.
- CPU (ps, 1,000 messages): the aiosmtpd sink ~13 ms per message, our worker ~10 ms,
  PostgreSQL ~5 ms; Postfix ~3 ms (its injection, not counted, ~15 ms). What is left is
  ours: two row versions per recipient (claim, outcome; status is indexed, so no HOT
  update), five trace rows per message, a Celery task per message (no-ops once a batch
  has taken their message).


History (issue 21, this bench: lean sink with PIPELINING in 2 processes, tuned Postfix, two
workloads; 2 cores shared with five other engineers' test runs, so CPU per message is the
reliable figure; « relais » = our worker's process tree, « postgres » = its backends, Redis
not counted; Postfix = its whole process tree):
- The sink's ceiling, measured in every run: 4,900-9,500 msg/s for both workloads (0.07-0.13
  ms of sink CPU per message, its clients' CPU on the same cores), 8-55x the rate of either
  relay: the sink no longer limits anything. The old aiosmtpd sink cost ~13 ms per 50-
  recipient message.
- Before (main at cb7ff4f; one round of 600 and 60 messages at load 14-17): one recipient,
  ours 103 msg/s vs Postfix 223 (0.46x); 50 recipients, 15.4 vs 41.6 (0.37x). CPU ms per
  message: ours 2.63 worker + 0.88 PostgreSQL (1 recipient), 18.5 + 12.7 (50); Postfix 2.05
  and 6.17. In-process profile: 9.0 ms of worker CPU per message (1 recipient) of which most
  in the claims of tasks whose message a batch had already taken (six queries each: one task
  per message, and each claimed through the ORM).
- The claim in one SQL statement on PostgreSQL (one round trip, RETURNING the rows) and
  batches of up to 200 messages bounded by BATCH_BYTES (was 50 messages); in-process 9.0 ->
  1.0 ms per message. One round (2,000 and 200 messages, load 4-10): 0.70x and 0.58x.
- Tried and dropped: a task whose own message was already taken claims no batch (fewer
  races for the head of the queue): 0.14x and 0.22x, the batches serialised behind the
  per-message tasks.
- One relay task waits for new messages instead of one per message (the kick flag in the
  cache; a task that claimed enqueues the next, so a backlog drains in parallel batches),
  and OutboundDelivery.message lost its redundant index (one index entry less per row
  version). One round: 1.57x and 0.46x.
- Final, three interleaved rounds, 2,000 and 400 messages, load 3.7-9.4 (2026-12-03):
  1 recipient: ours 722 msg/s [656-1,317] vs Postfix 660 [410-916], ratios per round 1.76,
  1.44, 0.99, median 1.44x; CPU ms per message ours 0.67 worker + 0.30 PostgreSQL vs Postfix
  1.64 (before: 2.63 + 0.88). 50 recipients: ours 220 msg/s [139-244] vs Postfix 171
  [133-184], ratios 1.04, 1.43, 1.19, median 1.19x; CPU ours 2.23 + 2.62 vs Postfix 6.83
  (before: 18.5 + 12.7). Peak RSS of a relay worker process: 118 MB (goal <= 150 MB);
  Postfix's largest process 14 MB. Again with 5,000 and 800 messages, load 2.6-11.9: 1
  recipient ours 1,359 msg/s [265-1,742] vs Postfix 1,004 [571-1,068], ratios 0.46 (round 1,
  load 12; PostgreSQL 2.2 ms per message, not explained: autovacuum of the fresh table,
  counted with the backends, is a guess),
  1.35, 1.63, median 1.35x, CPU 0.62 + 0.42 vs 1.36; 50 recipients ours 312 msg/s [193-334]
  vs 215 [208-238], ratios 0.81, 1.61, 1.45, median 1.45x, CPU 1.80 + 3.11 vs 5.89; sink
  ceiling 7,900 and 6,700 msg/s (4.5x our fastest round). Goal (>= 2x on both) not met: ours now costs about 0.6x
  (1 recipient) and 0.7x (50) of Postfix's CPU per message; what is left is PostgreSQL's two
  row versions per recipient (claim, outcome: status is indexed, no HOT update), five trace
  rows per 50-recipient message (one per domain), and the Python SMTP client per recipient.

2026-12-04 (session 28, issue 21), a quiet 2-core machine (load 1-3):
- Sizes: 6,000 and 1,500 messages (were 3,000 and 300). At 300 messages to 50 recipients our
  run lasted 0.2 s (two batches) and the ratio moved from 0.9 to 5.5 between rounds.
- The spool is analysed (ANALYZE) once injected, before the worker starts: the injection's
  upkeep, as autovacuum does on a running system. Without it, the first claims were planned
  on the statistics of an empty table: PostgreSQL 0.45 ms per message (1 recipient) against
  0.07 with them, in the same conditions.
- py-spy (--gil) of the worker: Django's bulk INSERT of the traces (each column an array that
  psycopg adapts in Python) was a third of a batch's CPU, reading each message's whole BAL a
  fifth; now a COPY, and only the BAL's structure. Batches take up to 200 messages whatever
  their recipients (BATCH_ROWS 1,000 -> 10,000: a batch to 50 recipients held 20 messages),
  the whitelist of a batch's domains is one query, the journal has two indexes fewer and a
  delivery no public_id (one index entry less at each row version). 1,000 messages to 50
  recipients, ours alone: 445 -> 816 msg/s from the batch size alone.
- Three interleaved rounds, 6,000 and 1,500 messages: 1 recipient, ours 3,499 msg/s
  [3,295-3,614] vs Postfix 1,448 [1,447-1,587], ratios 2.28 / 2.42 / 2.28, median 2.28x, CPU
  ms per message ours 0.31 worker + 0.10 PostgreSQL vs Postfix 0.98; 50 recipients, ours 874
  msg/s [821-1,064] vs 377 [322-393], ratios 2.82 / 2.71 / 2.09, median 2.71x, CPU 0.95 +
  1.09 vs 3.70. Goals met; the sink's ceiling stays 6.7x and 23x above our rate.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, machine, wait_banner  # noqa: E402
from report import Figure, emit  # noqa: E402

DOMAINS = [f"operateur{i}.mssante.fr" for i in range(1, 6)]
PER_DOMAIN = 10
SENDER_DOMAIN = "ehpad-les-tilleuls.mssante.fr"
BODY = "\r\n".join(["Compte rendu de consultation, examen clinique sans particularite."] * 30)
TICK = os.sysconf("SC_CLK_TCK")


# --- Workloads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    recipients: Callable[[int], list[str]]

    @property
    def per_message(self) -> int:
        return len(self.recipients(0))


def _single(i: int) -> list[str]:
    return [f"dest{i % 997}@{DOMAINS[i % len(DOMAINS)]}"]


def _wide(i: int) -> list[str]:
    return [f"dest{i % 997}.{n}@{d}" for d in DOMAINS for n in range(PER_DOMAIN)]


WORKLOADS = {
    "single": Workload("single", "1 destinataire par message", _single),
    "wide": Workload("wide", f"{len(DOMAINS) * PER_DOMAIN} destinataires, {len(DOMAINS)} domaines",
                     _wide),
}  # fmt: skip


def message(tag: str, i: int, rcpts: list[str]) -> bytes:
    to = ", ".join(rcpts[:3]) + (", ..." if len(rcpts) > 3 else "")
    return (
        f"From: Claire Martin <claire.martin@{SENDER_DOMAIN}>\r\nTo: {to}\r\n"
        f"Subject: Compte rendu {i}\r\nMessage-ID: <bench-{tag}-{i}@{SENDER_DOMAIN}>\r\n"
        f"X-MSS-NIL: bench\r\n\r\n{BODY}\r\n"
    ).encode()


# --- CPU and memory of process trees (/proc) -----------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def tree_pids(root: int) -> list[int]:
    tree, todo, seen = _children(), [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += tree.get(pid, [])
    return seen


def cpu_seconds(pids: list[int], reaped: bool = True) -> float:
    """User + system CPU of ``pids`` and, when ``reaped``, of the children they reaped (a
    process that exited counts once, in the ancestor that waited for it)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
            if reaped:
                total += int(fields[13]) + int(fields[14])
    return total / TICK


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    peaks = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return peaks


# --- The sink: the five other operators ---------------------------------------------------------
# A lean SMTP server (asyncio protocol, no per-command framework): STARTTLS required, the
# « peer » certificate of the test PKI, client certificates required and verified, PIPELINING
# (RFC 2920) offered, every recipient of a transaction counted once its DATA is answered 250.
# Several processes share the port (SO_REUSEPORT), so that the sink is never the bottleneck:
# its own ceiling is measured in the same run (sink_ceiling).


class SinkProtocol(asyncio.Protocol):
    def __init__(self, context: ssl.SSLContext, counts, slot: int) -> None:
        self.context, self.counts, self.slot = context, counts, slot
        self.buffer = b""
        self.tls = False
        self.data = False
        self.rcpts = 0
        self.sender = False
        self.upgrading = False
        self.transport: Any = None  # the plain, then the TLS transport

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.upgrading:  # the TLS handshake's last flight: the transport is not ours yet
            return
        out: list[bytes] = []
        while self.buffer:
            if self.data:
                end = 0 if self.buffer.startswith(b".\r\n") else self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.buffer = self.buffer[end + (3 if end == 0 else 5) :]
                self.data = False
                self.counts[2 * self.slot] += self.rcpts
                self.counts[2 * self.slot + 1] += 1
                self.rcpts, self.sender = 0, False
                out.append(b"250 2.0.0 Ok\r\n")
                continue
            cut = self.buffer.find(b"\r\n")
            if cut < 0:
                break
            line, self.buffer = self.buffer[:cut], self.buffer[cut + 2 :]
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.rcpts, self.sender = 0, False
                extensions = [b"PIPELINING", b"SIZE 20971520", b"8BITMIME", b"ENHANCEDSTATUSCODES"]
                if not self.tls:
                    extensions.append(b"STARTTLS")
                out.append(b"250-sink\r\n" + b"".join(
                    (b"250 " if n == len(extensions) - 1 else b"250-") + e + b"\r\n"
                    for n, e in enumerate(extensions)))  # fmt: skip
            elif verb == b"STAR" and not self.tls:
                self.transport.write(b"".join(out) + b"220 2.0.0 Ready to start TLS\r\n")
                out = []
                self.buffer = b""
                self.upgrading = True
                asyncio.get_running_loop().create_task(self._starttls())
                return
            elif not self.tls and verb not in (b"QUIT", b"NOOP", b"RSET"):
                out.append(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
            elif verb == b"MAIL":
                self.sender, self.rcpts = True, 0
                out.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                if self.sender:
                    self.rcpts += 1
                    out.append(b"250 2.1.5 Ok\r\n")
                else:
                    out.append(b"503 5.5.1 MAIL first\r\n")
            elif verb == b"DATA":
                if self.rcpts:
                    self.data = True
                    out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                else:
                    out.append(b"554 5.5.1 No valid recipients\r\n")
            elif verb == b"RSET":
                self.rcpts, self.sender = 0, False
                out.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                out.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"502 5.5.2 Command not recognized\r\n")
        if out:
            self.transport.write(b"".join(out))

    async def _starttls(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.transport = await loop.start_tls(
                self.transport,
                self,
                self.context,
                server_side=True,
            )
        except (OSError, ssl.SSLError, ConnectionError):
            self.transport.close()
            return
        self.tls, self.upgrading = True, False
        self.data_received(b"")


def sink_main(port: int, cert: str, key: str, ca: str, counts, slot: int) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SinkProtocol(context, counts, slot),
                                          host="127.0.0.1", port=port, reuse_port=True,
                                          backlog=512)  # fmt: skip
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class Sink:
    def __init__(self, processes: int, pki: dict) -> None:
        self.port = free_port()
        self.counts = multiprocessing.Array("q", 2 * processes, lock=False)
        self.procs = [
            multiprocessing.Process(
                target=sink_main,
                daemon=True,
                args=(
                    self.port,
                    str(pki["peer"].cert),
                    str(pki["peer"].key),
                    str(pki["ca"].cert),
                    self.counts,
                    slot,
                ),
            )
            for slot in range(processes)
        ]
        for proc in self.procs:
            proc.start()
        wait_banner(self.port)

    @property
    def recipients(self) -> int:
        return sum(self.counts[0::2])

    @property
    def transactions(self) -> int:
        return sum(self.counts[1::2])

    def reset(self) -> None:
        for i in range(len(self.counts)):
            self.counts[i] = 0

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()


def _ceiling_client(port: int, pki_paths: tuple[str, str, str], rcpts: int, count: int,
                    start, done) -> None:  # fmt: skip
    """A trivial pipelining client: STARTTLS with our certificate, then for each message MAIL,
    the RCPTs and DATA in one write, the replies, the content and its 250."""
    cert, key, ca = pki_paths
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    context.load_cert_chain(cert, key)
    raw = socket.create_connection(("127.0.0.1", port))
    raw.recv(1000)
    raw.sendall(b"EHLO client\r\n")
    while not raw.recv(1000).endswith(b"250 STARTTLS\r\n"):
        pass
    raw.sendall(b"STARTTLS\r\n")
    raw.recv(1000)
    sock = context.wrap_socket(raw)
    sock.sendall(b"EHLO client\r\n")
    sock.recv(1000)
    envelope = (
        b"MAIL FROM:<claire.martin@%s>\r\n" % SENDER_DOMAIN.encode()
        + b"".join(b"RCPT TO:<dest%d@%s>\r\n" % (n, DOMAINS[n % 5].encode()) for n in range(rcpts))
        + b"DATA\r\n"
    )
    content = message("ceiling", 0, [f"dest0@{DOMAINS[0]}"]) + b".\r\n"
    start.wait()
    for _ in range(count):
        sock.sendall(envelope)
        lines = 0
        while lines < rcpts + 2:
            lines += sock.recv(65536).count(b"\r\n")
        sock.sendall(content)
        while not sock.recv(1000).endswith(b"\r\n"):
            pass
    sock.sendall(b"QUIT\r\n")
    sock.close()
    done.put(1)


def sink_ceiling(
    sink: Sink, pki: dict, rcpts: int, messages: int, clients: int
) -> tuple[float, float]:
    """Messages per second the sink accepts from ``clients`` trivial pipelining clients (the
    clients' own CPU included: a lower bound), and the sink's CPU per message (ms)."""
    paths = (str(pki["gateway"].cert), str(pki["gateway"].key), str(pki["ca"].cert))
    start = multiprocessing.Event()
    done: multiprocessing.Queue[int] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_ceiling_client, daemon=True,
                                     args=(sink.port, paths, rcpts, messages // clients, start, done))
             for _ in range(clients)]  # fmt: skip
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # connected and in TLS
    sink.reset()
    cpu = cpu_seconds(sink.pids(), reaped=False)
    began = time.monotonic()
    start.set()
    for _ in procs:
        done.get(timeout=600)
    seconds = time.monotonic() - began
    cpu = cpu_seconds(sink.pids(), reaped=False) - cpu
    for proc in procs:
        proc.join(10)
    accepted = sink.transactions
    return accepted / seconds, 1000 * cpu / max(1, accepted)


# --- A run: one side, one workload ---------------------------------------------------------------


@dataclass
class Run:
    side: str
    workload: str
    messages: int
    seconds: float  # first recipient at the sink -> last
    drain: float  # release / worker start -> last
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per message, by process group
    load: float = 0.0
    rss_mb: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def wait_delivered(
    sink: Sink, total: int, timeout: float, on_first: Callable[[], None]
) -> tuple[float, float]:
    """Wait until the sink has counted ``total`` recipients; ``on_first`` runs when the first
    arrives. Returns (seconds from the start of the wait, seconds from the first recipient)."""
    started = time.monotonic()
    first = None
    while sink.recipients < total:
        now = time.monotonic()
        if first is None and sink.recipients:
            first = now
            on_first()
        if now - started > timeout:
            raise RuntimeError(f"drain incomplete after {timeout:.0f} s: {sink.recipients}/{total}")
        time.sleep(0.01)
    end = time.monotonic()
    if first is None:
        first = started
        on_first()
    time.sleep(1.0)  # anything more would be a duplicate
    if sink.recipients != total:
        raise RuntimeError(f"the sink counted {sink.recipients} recipients, {total} expected")
    return end - started, end - first


# --- Postfix -----------------------------------------------------------------------------------


class Postfix:
    """A private Postfix 3.7 instance configured as a careful operator would (docstring)."""

    def __init__(self, base: Path, pki: dict, sink_port: int) -> None:
        self.base, self.conf, self.port = base, base / "postfix", free_port()
        self.conf.mkdir()
        for d in ("pf-queue", "pf-data"):
            (base / d).mkdir()
        shutil.chown(base / "pf-data", "postfix")
        nexthop = f"[127.0.0.1]:{sink_port}"
        (self.conf / "transport").write_text("".join(f"{d} smtp:{nexthop}\n" for d in DOMAINS))
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        sink_cert = x509.load_pem_x509_certificate(Path(pki["peer"].cert).read_bytes())
        fingerprint = sink_cert.fingerprint(hashes.SHA256()).hex(":").upper()
        (self.conf / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {base}/pf-queue
data_directory = {base}/pf-data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-bench.localhost
mydestination =
relay_domains = {" ".join(DOMAINS)}
mynetworks = 127.0.0.0/8
transport_maps = texthash:{self.conf}/transport
smtpd_client_restrictions = static:HOLD
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_recipient_limit = 100
# The sink's exact certificate (Postfix cannot check a DN against the whitelist).
smtp_tls_security_level = fingerprint
smtp_tls_fingerprint_digest = sha256
smtp_tls_fingerprint_cert_match = {fingerprint}
smtp_tls_CAfile = {pki["ca"].cert}
smtp_tls_cert_file = {pki["gateway"].cert}
smtp_tls_key_file = {pki["gateway"].key}
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_protocols = >=TLSv1.2
smtp_tls_session_cache_database = btree:{base}/pf-data/smtp_scache
# Careful operator: TLS connections reused (tlsproxy + scache), the peer always cached,
# concurrency raised for a big known peer, no slow start.
smtp_tls_connection_reuse = yes
smtp_connection_cache_on_demand = yes
smtp_connection_cache_destinations = {nexthop}
smtp_connection_cache_time_limit = 10s
smtp_connection_reuse_time_limit = 300s
default_destination_concurrency_limit = 50
smtp_destination_concurrency_limit = 50
initial_destination_concurrency = 20
default_destination_recipient_limit = 50
default_process_limit = 100
maillog_file = {base}/postfix.log
maillog_file_prefixes = {base}
""")
        master = Path("/etc/postfix/master.cf").read_text()
        master = master.replace("smtp      inet  n       -       y       -       -       smtpd",
                                f"127.0.0.1:{self.port} inet n - n - - smtpd")  # fmt: skip
        master = master.replace("#tlsproxy  unix", "tlsproxy  unix")
        if "postlogd" not in master:
            master += "\npostlog   unix-dgram n  -       n       -       1       postlogd\n"
        (self.conf / "master.cf").write_text(master)
        # No chroot: certificates and the queue are read where they are.
        subprocess.run(["postconf", "-c", str(self.conf), "-F", "*/*/chroot = n"], check=True)
        start = subprocess.run(["postfix", "-c", str(self.conf), "start"], capture_output=True,
                               text=True)  # fmt: skip
        if start.returncode:
            check = subprocess.run(["postfix", "-c", str(self.conf), "check"],
                                   capture_output=True, text=True)  # fmt: skip
            log = self.log()
            raise RuntimeError(f"postfix start: {start.stderr}{check.stderr}{log[-2000:]}")
        wait_banner(self.port)

    def log(self) -> str:
        path = self.base / "postfix.log"
        return path.read_text() if path.exists() else ""

    def master_pid(self) -> int:
        return int((self.base / "pf-queue" / "pid" / "master.pid").read_text().split()[0])

    def run(self, sink: Sink, workload: Workload, tag: str, messages: int) -> Run:
        with smtplib.SMTP("127.0.0.1", self.port) as smtp:  # injection, not counted
            for i in range(messages):
                rcpts = workload.recipients(i)
                smtp.sendmail(f"claire.martin@{SENDER_DOMAIN}", rcpts, message(tag, i, rcpts))
        held = self.base / "pf-queue" / "hold"
        deadline = time.monotonic() + 300
        while sum(1 for p in held.rglob("*") if p.is_file()) < messages:
            if time.monotonic() > deadline:
                raise RuntimeError("postfix: the messages never reached the hold queue")
            time.sleep(0.2)
        time.sleep(1.0)  # the injection's processes idle
        sink.reset()
        load = os.getloadavg()[0]
        pids = tree_pids(self.master_pid())
        marks: dict[str, float] = {}

        def first() -> None:
            marks["relay"] = cpu_seconds(tree_pids(self.master_pid()))
            marks["sink"] = cpu_seconds(sink.pids(), reaped=False)

        # -H puts them in the deferred queue; the flush makes the queue manager take them now.
        subprocess.run(["postsuper", "-c", str(self.conf), "-H", "ALL"], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(["postqueue", "-c", str(self.conf), "-f"], check=True, capture_output=True)
        drain, seconds = wait_delivered(sink, messages * workload.per_message, 3600, first)
        pids = tree_pids(self.master_pid())
        cpu = {"postfix": cpu_seconds(pids) - marks["relay"],
               "puits": cpu_seconds(sink.pids(), reaped=False) - marks["sink"]}  # fmt: skip
        rss = max(peak_rss_mb(pids).values(), default=0.0)
        return Run("postfix", workload.name, messages, seconds, drain,
                   {k: 1000 * v / messages for k, v in cpu.items()}, load, rss)  # fmt: skip

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, check=False)
        if (self.base / "postfix.log").exists():
            (ROOT / "var").mkdir(exist_ok=True)
            shutil.copy(self.base / "postfix.log", ROOT / "var" / "relay-bench-postfix.log")


# --- Ours --------------------------------------------------------------------------------------


class Ours:
    """Our relay: the real Celery worker, started once the messages are spooled."""

    def __init__(self, base: Path, pki: dict, env: dict) -> None:
        from accounts.models import Structure, StructureDomain, User
        from annuaire.models import WhitelistEntry, WhitelistVersion
        from annuaire.whitelist import dn_key
        from mailboxes.models import Mailbox

        self.base, self.env = base, env
        structure = Structure.objects.create(
            identifier_kind="finess_eg", identifier="690001235", name="EHPAD"
        )
        domain = StructureDomain.objects.create(structure=structure, domain=SENDER_DOMAIN)
        self.owner = User.objects.create(username="899700120019", national_id="899700120019")
        self.box = Mailbox.objects.create(structure=structure, domain=domain,
                                          local_part="claire.martin",
                                          address=f"claire.martin@{SENDER_DOMAIN}", kind="PER",
                                          owner=self.owner, display_name="Claire Martin")  # fmt: skip
        version = WhitelistVersion.objects.create(generated_at="2026-11-01T00:00:00Z",
                                                  source="bench", sha256="0" * 64,
                                                  signer_subject="bench", is_current=True)  # fmt: skip
        for d in DOMAINS:
            WhitelistEntry.objects.create(version=version, domain=d, dn=pki["peer"].subject,
                                          dn_key=dn_key(pki["peer"].subject))  # fmt: skip

    def run(self, sink: Sink, workload: Workload, tag: str, messages: int) -> Run:
        from django.db import connection

        from mailboxes.models import OutboundMessage
        from mailboxes.transport.relay import Recipient, message_spool

        for i in range(messages):  # spooled, not counted: the worker is not running yet
            rcpts = workload.recipients(i)
            message_spool(origin=OutboundMessage.Origin.WEBMAIL, envelope_from=self.box.address,
                          recipients=[Recipient(r) for r in rcpts],
                          content=message(tag, i, rcpts),
                          message_id=f"<bench-{tag}-{i}@{SENDER_DOMAIN}>", mailbox=self.box,
                          author=self.owner)  # fmt: skip
        # The spool's own upkeep is injection, not relaying: the statistics that autovacuum
        # would gather on the freshly written rows are taken now, not on the clock.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE mailboxes_outboundmessage, mailboxes_outbounddelivery")
        connection.close()
        sink.reset()
        load = os.getloadavg()[0]
        marks: dict[str, float] = {}
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mssante_portal", "worker", "-Q", "relay",
             "--concurrency", os.environ.get("RELAY_WORKERS", str(4 * (os.cpu_count() or 1))),
             "--without-gossip", "--without-mingle", "-l", "WARNING"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.base / f"worker-{tag}.log", "w"),  # noqa: SIM115
        )  # fmt: skip

        spy = None
        if os.environ.get("RELAY_SPY"):  # py-spy's raw stacks of the worker's processes
            spy = subprocess.Popen(
                [os.environ.get("PY_SPY", "py-spy"), "record", "--pid", str(worker.pid),
                 "--subprocesses", "--format", "raw", "-o", f"{os.environ['RELAY_SPY']}.{tag}",
                 *os.environ.get("RELAY_SPY_ARGS", "").split()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        def first() -> None:
            marks["relay"] = cpu_seconds(tree_pids(worker.pid))
            marks["postgres"] = cpu_seconds(self.backends())
            marks["sink"] = cpu_seconds(sink.pids(), reaped=False)

        try:
            drain, seconds = wait_delivered(sink, messages * workload.per_message, 3600, first)
            pids = tree_pids(worker.pid)
            cpu = {"relais": cpu_seconds(pids) - marks["relay"],
                   "postgres": cpu_seconds(self.backends()) - marks["postgres"],
                   "puits": cpu_seconds(sink.pids(), reaped=False) - marks["sink"]}  # fmt: skip
            rss = max(peak_rss_mb(pids).values(), default=0.0)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            worker.terminate()
            worker.wait(60)
        return Run("ours", workload.name, messages, seconds, drain,
                   {k: 1000 * v / messages for k, v in cpu.items()}, load, rss)  # fmt: skip

    def backends(self) -> list[int]:
        """PostgreSQL backends serving the bench database (the worker's), not this script's."""
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        return [pid for (pid,) in rows]


def _fmt(value: float) -> str:
    return f"{value:.2f}".replace(".", ",")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=6000, help="1-recipient workload")
    parser.add_argument("--wide-messages", type=int, default=1500, help="50-recipient workload")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="single,wide")
    parser.add_argument("--only", choices=["ours", "postfix"])
    parser.add_argument("--sink-processes", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    # SIGTERM (timeout, kill) unwinds through the finally blocks: Postfix and the worker stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("postfix") is None and args.only != "ours":
        print("Postfix manque : scripts/system-deps.sh bench")
        return 2
    base = Path(tempfile.mkdtemp(prefix="mssante-relaybench-"))
    base.chmod(0o755)
    pg = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mssante").rsplit(
        "/", 1
    )[0]
    env = {
        **os.environ,
        "PORTAL_ENV": "test",
        "DJANGO_SETTINGS_MODULE": "mssante_portal.settings",
        "DATABASE_URL": f"{pg}/mssante_relaybench",
        # A broker and a cache of their own (RELAY_BENCH_REDIS: a free Redis database).
        "CELERY_BROKER_URL": os.environ.get("RELAY_BENCH_REDIS", "redis://127.0.0.1:6379/7"),
        "CACHE_URL": os.environ.get("RELAY_BENCH_REDIS", "redis://127.0.0.1:6379/7"),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import psycopg
    import redis

    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mssante_relaybench WITH (FORCE)")
        conn.execute("CREATE DATABASE mssante_relaybench")
    import django

    django.setup()
    from django.core.management import call_command

    from devtools.pki import make_test_pki

    call_command("migrate", verbosity=0)
    pki = make_test_pki(base / "pki")
    sink = Sink(args.sink_processes, pki)
    env.update(
        {
            "RELAY_ROUTES": ",".join(f"{d}=127.0.0.1:{sink.port}" for d in DOMAINS),
            "RELAY_CERT": str(pki["gateway"].cert),
            "RELAY_KEY": str(pki["gateway"].key),
            "RELAY_CA_BUNDLE": str(pki["ca"].cert),
            "RELAY_HOSTNAME": f"mx.{SENDER_DOMAIN}",
        }
    )
    workloads = [WORKLOADS[w] for w in args.workloads.split(",")]
    counts = {"single": args.messages, "wide": args.wide_messages}
    sides = [s for s in ("postfix", "ours") if args.only in (None, s)]
    runs: list[Run] = []
    ceilings: dict[str, tuple[float, float]] = {}
    postfix = None
    print(f"machine : {machine()}, puits : {args.sink_processes} processus", flush=True)
    try:
        for w in workloads:
            ceilings[w.name] = sink_ceiling(
                sink,
                pki,
                w.per_message,
                max(2 * counts[w.name], int(6000 / w.per_message**0.5)),
                args.sink_processes * 2,
            )
            rate, cpu = ceilings[w.name]
            print(f"plafond du puits ({w.label}) : {rate:7.0f} msg/s, "
                  f"{cpu:.2f} ms CPU/message (clients compris dans le temps)", flush=True)  # fmt: skip
        ours = Ours(base, pki, env) if "ours" in sides else None
        postfix = Postfix(base, pki, sink.port) if "postfix" in sides else None
        for round_ in range(args.rounds):
            order = sides if round_ % 2 == 0 else sides[::-1]
            for w in workloads:
                for side in order:
                    target = ours if side == "ours" else postfix
                    assert target is not None
                    run = target.run(sink, w, f"{w.name}-{side}-{round_}", counts[w.name])
                    runs.append(run)
                    spent = ", ".join(f"{k} {v:.2f}" for k, v in run.cpu_ms.items())
                    print(f"tour {round_ + 1} {w.name:<6} {side:<7} charge {run.load:4.1f}  "
                          f"{run.rate:7.1f} msg/s ({run.seconds:5.1f} s, vidé en {run.drain:5.1f} s)"
                          f"  CPU ms/message : {spent}  RSS max {run.rss_mb:.0f} Mo", flush=True)  # fmt: skip
    finally:
        if postfix is not None:
            postfix.stop()
        sink.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"charge à la fin {os.getloadavg()[0]:.1f}")
    figures = []
    for w in workloads:
        mine = [r for r in runs if r.workload == w.name and r.side == "ours"]
        theirs = [r for r in runs if r.workload == w.name and r.side == "postfix"]
        ceiling = ceilings[w.name][0]
        for label, group in (("notre relais (Celery)", mine), ("Postfix 3.7 (réglé)", theirs)):
            if group:
                med = statistics.median(r.rate for r in group)
                cpu_ms = {k: statistics.median(r.cpu_ms[k] for r in group) for k in group[0].cpu_ms}
                print(f"{w.name:<6} {label:<22} médiane {med:7.1f} msg/s "
                      f"[{min(r.rate for r in group):.1f}-{max(r.rate for r in group):.1f}]  "
                      f"plafond du puits / relais {ceiling / med:4.1f}x  CPU ms/message "
                      + ", ".join(f"{k} {v:.2f}" for k, v in cpu_ms.items()))  # fmt: skip
        if mine:
            print(f"{w.name:<6} RSS max d'un processus du relais : "
                  f"{max(r.rss_mb for r in mine):.0f} Mo (objectif <= 150 Mo)")  # fmt: skip
        if mine and theirs:
            pairs = list(zip(mine, theirs, strict=False))
            ratios = [m.rate / t.rate for m, t in pairs]
            ratio = statistics.median(ratios)
            print(f"{w.name:<6} ratio notre relais / Postfix par tour : "
                  + " ".join(_fmt(r) for r in ratios) + f"  médiane {_fmt(ratio)} (objectif >= 2)")  # fmt: skip
            figures.append(Figure("relay_vs_postfix",
                                  f"Relais sortant : messages/s livrés au puits ({w.label}, "
                                  f"{counts[w.name]} messages)",
                                  statistics.median(r.rate for r in mine), "msg/s",
                                  statistics.median(r.rate for r in theirs),
                                  "Postfix 3.7 réglé (réutilisation TLS, cache de connexions, "
                                  "concurrence 50 ; même puits TLS)", ">= 2,0x Postfix",
                                  ratio >= 2.0, ratio))  # fmt: skip
    emit(*figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
