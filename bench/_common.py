"""Scaffolding the benches share: ports, banners, percentiles, the machine's load, a private
database and Django set up for it, a private Dovecot, a TLS sink (the other operators), a
private Postfix. Each bench stays a script of its own; this is only what they would repeat.

Nothing here starts anything at import time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_banner(port: int, timeout: float = 30, host: str = "127.0.0.1") -> None:
    """Wait for an SMTP/IMAP greeting (a socket that accepts is not enough)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if sock.recv(100)[:4] in (b"220 ", b"220-", b"* OK"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on {port}")


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers at {url}")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (inclusive method, as every bench prints it)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"charge {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} cœurs)"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return f"{os.cpu_count()} cœurs ({model}), Python {sys.version.split()[0]}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children, from /proc (seconds)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and of every living descendant (gunicorn's or Celery's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        todo += children.get(current, [])
    return total


# --- Django on a database of the bench's own -----------------------------------------------------


def django_setup(base: Path, database: str, *, fresh: bool = False, **env: str) -> dict[str, str]:
    """Point Django (test settings, PSC mock on) at ``database`` on the PostgreSQL of
    DATABASE_URL (created if missing, dropped first when ``fresh``), a private Dovecot under
    ``base`` and the extra ``env``; migrate. Returns the environment for child processes."""
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mssante")
    server = url.rsplit("/", 1)[0]
    values = {
        "PORTAL_ENV": "test",
        "DJANGO_SETTINGS_MODULE": "mssante_portal.settings",
        "PSC_MOCK_ENABLED": "true",
        "PORTAL_DEMO": "true",
        "DOVECOT_DIR": str(base / "dovecot"),
        "DOVECOT_MAIL_ROOT": str(base / "mail"),
        "DOVECOT_IMAP_PORT": str(free_port()),
        "DATABASE_URL": f"{server}/{database}",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    os.environ.update(values)
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {**os.environ}


def scratch(prefix: str) -> Path:
    """A scratch folder; from now on SIGTERM runs the bench's ``finally`` (its servers stop)."""
    import signal
    import tempfile

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)  # Dovecot's unprivileged services traverse it
    return base


@contextmanager
def dovecot_running(base: Path) -> Iterator[Any]:
    """The private Dovecot of the current settings (written, users synced, started); yields
    its Instance and stops it at the end."""
    from django.conf import settings

    from mailboxes.console.services.lifecycle import dovecot_users_sync
    from mailboxes.store import dovecot

    instance = dovecot.instance_from_settings()
    dovecot.write_instance(
        instance,
        master_user=settings.DOVECOT_MASTER_USER,
        master_password=settings.DOVECOT_MASTER_PASSWORD,
    )
    dovecot_users_sync()
    proc = dovecot.start(instance, base / f"dovecot-{instance.imap_port}.log")
    try:
        yield instance
    finally:
        dovecot.stop(proc)


def static_passdb(instance: Any, address: str, token: str, actor: str) -> None:
    """Make an API LPS Dovecot instance a baseline: its Lua passdb (the portal's
    validation) replaced by a passwd-file where ``address`` has ``token`` as its password,
    with the extra field our answer gives (the session's actor). XOAUTH2 all the same."""
    import re

    users = instance.base_dir / "static-tokens"
    text = instance.config_path.read_text()
    block = re.compile(r"passdb \{[^{}]*driver = lua[^{}]*\}", re.S)
    if not block.search(text):
        raise RuntimeError("no Lua passdb: is the API LPS section on?")
    text = block.sub(
        "passdb {\n  driver = passwd-file\n  mechanisms = xoauth2 oauthbearer\n"
        f"  args = scheme=PLAIN username_format=%Lu {users}\n}}",
        text,
    )
    instance.config_path.write_text(text)
    users.write_text(f"{address}:{{PLAIN}}{token}::::::userdb_lps_actor={actor}\n")
    users.chmod(0o644)


# --- The TLS sink: the other operators -----------------------------------------------------------


def _sink_main(port: int, cert: str, key: str, ca: str, counter: Any) -> None:
    import logging

    from aiosmtpd.smtp import SMTP

    # One line per command, and a TLS warning per connection otherwise.
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with counter.get_lock():
                counter.value += len(envelope.rcpt_tos)
            return "250 2.0.0 Ok"

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), tls_context=context, require_starttls=True, hostname="sink"),
            host="127.0.0.1",
            port=port,
            reuse_port=True,
        )
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class Sink:
    """A TLS SMTP sink (STARTTLS, the PKI's « peer » certificate, client certificates
    required) in ``processes`` processes on one port (SO_REUSEPORT); ``count`` is the number
    of recipients it has accepted."""

    def __init__(self, pki: dict[str, Any], processes: int = 2) -> None:
        self.port = free_port()
        self.counter: Any = multiprocessing.Value("q", 0)
        self._procs = [
            multiprocessing.Process(
                target=_sink_main,
                args=(
                    self.port,
                    str(pki["peer"].cert),
                    str(pki["peer"].key),
                    str(pki["ca"].cert),
                    self.counter,
                ),
                daemon=True,
            )
            for _ in range(processes)
        ]

    def __enter__(self) -> Sink:
        for proc in self._procs:
            proc.start()
        wait_banner(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.join(5)

    @property
    def count(self) -> int:
        return int(self.counter.value)

    def reset(self) -> None:
        with self.counter.get_lock():
            self.counter.value = 0

    def wait_for(self, total: int, timeout: float) -> float:
        """Seconds until ``total`` recipients have arrived (RuntimeError past ``timeout``)."""
        started = time.monotonic()
        while self.count < total:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"incomplete after {timeout:.0f} s: {self.count}/{total}")
            time.sleep(0.02)
        return time.monotonic() - started


# --- A private Postfix ---------------------------------------------------------------------------


class Postfix:
    """A private Postfix 3.7 instance (its own config, queue and log under ``base``; the
    system Postfix is never touched): ``main`` is appended to the common main.cf, ``services``
    to master.cf; smtpd listens on 127.0.0.1:``port`` (``smtpd_options`` are its -o flags)."""

    def __init__(
        self, base: Path, *, main: str, services: str = "", smtpd_options: str = ""
    ) -> None:
        self.base = base
        self.conf = base / "postfix"
        self.port = free_port()
        self.main = main
        self.services = services
        self.smtpd_options = smtpd_options

    def __enter__(self) -> Postfix:
        base = self.base
        self.conf.mkdir()
        (base / "pf-queue").mkdir()
        (base / "pf-data").mkdir()
        shutil.chown(base / "pf-data", "postfix")
        (self.conf / "main.cf").write_text(
            f"""
compatibility_level = 3.6
queue_directory = {base}/pf-queue
data_directory = {base}/pf-data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-bench.localhost
mydestination =
maillog_file = {base}/postfix.log
maillog_file_prefixes = {base}
default_process_limit = 100
{self.main}
"""
        )
        master = Path("/etc/postfix/master.cf").read_text()
        master = master.replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            f"127.0.0.1:{self.port} inet n - n - - smtpd {self.smtpd_options}",
        )
        if "postlogd" not in master:
            master += "\npostlog   unix-dgram n  -       n       -       1       postlogd\n"
        (self.conf / "master.cf").write_text(master + self.services)
        start = subprocess.run(
            ["postfix", "-c", str(self.conf), "start"], capture_output=True, text=True
        )
        if start.returncode:
            check = subprocess.run(
                ["postfix", "-c", str(self.conf), "check"], capture_output=True, text=True
            )
            raise RuntimeError(f"postfix start: {start.stderr}{check.stderr}{self.log()[-2000:]}")
        wait_banner(self.port)
        return self

    def log(self) -> str:
        path = self.base / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, check=False)
