"""What a Dovecot proxy in front of the backends costs (docs/deployment.md).

Starts two Dovecot backends and a proxy routing one BAL to each (the configuration the
portal writes: mailboxes/store/dovecot.py, DOVECOT_BACKENDS), then measures, alternating
round by round, the same work straight on a backend's sockets and through the proxy's:
- LMTP: messages of 2 KB delivered over one connection (msg/s);
- IMAP: one portal session (master login, SELECT INBOX, SEARCH ALL, LOGOUT), as the webmail
  opens one per page (ms, p50 and p95).
Needs no database.

    PORTAL_ENV=test .venv/bin/python bench/dovecot_proxy.py [--messages 500] [--sessions 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Figure, emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lmtp_rate(path: Path, address: str, count: int) -> float:
    body = b"Subject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"
    started = time.perf_counter()
    with smtplib.LMTP(str(path)) as lmtp:
        for _ in range(count):
            lmtp.sendmail("bench@localhost", [address], body)
    return count / (time.perf_counter() - started)


def imap_session(path: Path, address: str) -> float:
    from django.conf import settings

    from mailboxes.store.imap import _SocketIMAPClient

    started = time.perf_counter()
    client = _SocketIMAPClient(str(path), ssl=False, timeout=10)
    client.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)
    client.select_folder("INBOX", readonly=True)
    client.search(["ALL"])
    client.logout()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500, help="LMTP messages per round")
    parser.add_argument("--sessions", type=int, default=200, help="IMAP sessions per path")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mssante_portal.settings")
    import django

    django.setup()
    from django.conf import settings

    from mailboxes.store import dovecot

    base = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    base.chmod(0o755)
    procs = []
    try:
        backends: dict[str, dovecot.Instance] = {}
        routes: dict[str, dovecot.Backend] = {}
        for name in ("b1", "b2"):
            instance = dovecot.Instance(
                base / name, base / name / "mail", free_port(), lmtp_port=free_port()
            )
            backends[name] = instance
            routes[f"{name}@bench.mssante.fr"] = dovecot.Backend(
                name, "127.0.0.1", instance.imap_port, instance.lmtp_port
            )
        proxy = dovecot.Instance(base / "proxy", base / "proxy" / "mail", free_port(), proxy=True)
        for instance in (*backends.values(), proxy):
            dovecot.write_instance(
                instance,
                master_user=settings.DOVECOT_MASTER_USER,
                master_password=settings.DOVECOT_MASTER_PASSWORD,
            )
            procs.append(dovecot.start(instance, instance.base_dir / "foreground.log"))
        for name, instance in backends.items():
            dovecot.write_users(instance, [f"{name}@bench.mssante.fr"])
        dovecot.write_users(proxy, routes, routes=routes)
        time.sleep(1.1)  # Dovecot re-reads a passwd-file at most once a second

        address, direct = "b1@bench.mssante.fr", backends["b1"]
        lmtp: dict[str, list[float]] = {"direct": [], "proxy": []}
        imap: dict[str, list[float]] = {"direct": [], "proxy": []}
        for _ in range(args.rounds):
            lmtp["direct"].append(lmtp_rate(direct.lmtp_socket, address, args.messages))
            lmtp["proxy"].append(lmtp_rate(proxy.lmtp_socket, address, args.messages))
        for _ in range(args.sessions):
            imap["direct"].append(imap_session(direct.imap_socket, address))
            imap["proxy"].append(imap_session(proxy.imap_socket, address))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
        shutil.rmtree(base, ignore_errors=True)

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[18]

    lmtp_direct, lmtp_proxy = statistics.median(lmtp["direct"]), statistics.median(lmtp["proxy"])
    print(
        f"LMTP, one connection, 2 KB: direct {lmtp_direct:.0f} msg/s, proxy {lmtp_proxy:.0f} msg/s"
    )
    for path in ("direct", "proxy"):
        values = imap[path]
        print(
            f"IMAP session ({path}): p50 {statistics.median(values):.1f} ms, "
            f"p95 {p95(values):.1f} ms"
        )
    emit(
        Figure(
            bench="dovecot_proxy",
            label="LMTP à travers le proxy Dovecot (une connexion, 2 Ko)",
            ours=round(lmtp_proxy, 1),
            unit="msg/s",
            baseline=round(lmtp_direct, 1),
            baseline_label="LMTP direct sur le serveur",
            ratio=round(lmtp_proxy / lmtp_direct, 2),
        ),
        Figure(
            bench="dovecot_proxy",
            label="Session IMAP du portail à travers le proxy (p95)",
            ours=round(p95(imap["proxy"]), 1),
            unit="ms",
            baseline=round(p95(imap["direct"]), 1),
            baseline_label="session IMAP directe sur le serveur (p95)",
            ratio=round(p95(imap["proxy"]) / p95(imap["direct"]), 2),
        ),
    )


if __name__ == "__main__":
    main()
