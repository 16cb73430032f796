"""Faults that lose nothing (issue 8): N messages from operator B to operator A while A's
gateway, B's relay worker and A's Dovecot are killed with SIGKILL at random moments and
restarted, and both Redis brokers are flushed once.

Both operators are complete instances (devtools/trust_space.py) on PostgreSQL and Redis, with
Celery beat (the relay sweep). Messages are sent through B's real send service
(`manage.py send_load`: spool, Sent copy, trace, relay task); every Message-ID it accepted is
recorded. At the end, A's mailbox is read over IMAP and each accepted message must be there
exactly once, or have bounced to its sender with a DSN.

Prints: sent (accepted), delivered, duplicated, lost, bounced, the kills, the time to drain.
Goal: 0 lost, 0 duplicated. Exit status 1 otherwise.

    .venv/bin/python bench/faults.py [--messages 10000] [--seed 1] [--victims a:gateway]

Measured 2026-12-01 (2 cores), 10,000 messages each: 17, 77, 29 then 5 duplicates as the
gateway learned to recognise resends (Sieve duplicate test, success traces, INBOX search after
an uncertain 451); with the attempt markers (mailboxes/transport/gateway/dedup.py) and the relay's
interrupted-claim check, 0 lost and 0 duplicated with 22 kills of all three victims, and 0 and
0 with 40 kills of A's gateway alone (--victims a:gateway --min-gap 3 --max-gap 9).
Measured 2026-12-03 after issue 15 (a resend is the same Message-ID, sender, text and peer;
the INBOX look compares the text): 0 lost, 0 duplicated of 10,000, 60 kills (16 gateway, 16
worker, 28 Dovecot), Redis flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from devtools.runner import PY, free_port  # noqa: E402
from devtools.trust_space import Operator, TrustSpace  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Figure, emit  # noqa: E402

SENDER = "karim.haddad@ime-les-coquelicots.mssante.fr"
RECIPIENT = "claire.martin@ehpad-les-tilleuls.mssante.fr"
FINAL = ("relayed", "delivered", "failed")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def deliveries(op: Operator) -> Counter[str]:
    with psycopg.connect(op.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM mailboxes_outbounddelivery d "
            "JOIN mailboxes_outboundmessage m ON m.id = d.message_id "
            "WHERE m.origin = 'webmail' GROUP BY status"
        ).fetchall()
    return Counter({status: n for status, n in rows})


def message_ids_at(op: Operator, address: str) -> Counter[str]:
    """Message-IDs in every folder of ``address`` at ``op`` (over IMAP, master user)."""
    password = (op.var / "secrets" / "dovecot_master_password").read_text().strip()
    found: Counter[str] = Counter()
    with IMAPClient("127.0.0.1", port=op.imap_port, ssl=False, timeout=60) as imap:
        imap.login(f"{address}*portal", password)
        for _flags, _sep, folder in imap.list_folders():
            imap.select_folder(folder, readonly=True)
            uids = imap.search(["ALL"])
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                data = imap.fetch(chunk, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
                for item in data.values():
                    raw = item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode("ascii", "replace")
                    value = raw.partition(":")[2].strip()
                    if value:
                        found[value] += 1
    return found


class Chaos(threading.Thread):
    """Kill a random victim every few seconds and restart it; flush the brokers once."""

    def __init__(
        self,
        space: TrustSpace,
        rng: random.Random,
        gap: tuple[float, float],
        flush_after: float | None = None,
        victims: tuple[str, ...] = ("a:gateway", "b:worker", "a:dovecot"),
    ) -> None:
        super().__init__(daemon=True)
        self.space, self.rng, self.gap = space, rng, gap
        self.stop = threading.Event()
        self.kills: Counter[str] = Counter()
        self.flushed = False
        self.flush_at = time.monotonic() + (
            flush_after if flush_after is not None else rng.uniform(30, 90)
        )
        self.errors: list[str] = []
        self.names = victims

    def victims(self) -> list[tuple[Operator, str]]:
        ops = {"a": self.space.a, "b": self.space.b}
        return [(ops[name[0]], name[2:]) for name in self.names]

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(*self.gap)):
            if not self.flushed and time.monotonic() > self.flush_at:
                for op in (self.space.a, self.space.b):
                    redis.Redis.from_url(self.space.broker(op)).flushdb()
                self.flushed = True
                log("Redis : files de tâches vidées (les deux opérateurs)")
                continue
            op, role = self.rng.choice(self.victims())
            assert op.runner is not None
            proc = next(p for p in op.runner.procs if p.name == f"{op.key}:{role}")
            assert proc.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()
            self.kills[proc.name] += 1
            log(f"SIGKILL {proc.name}")
            time.sleep(self.rng.uniform(0.5, 4))
            try:
                op.runner.start(proc)
            except RuntimeError as exc:
                self.errors.append(f"{proc.name}: {exc}")
                time.sleep(2)
                op.runner.start(proc)


def run(
    messages: int,
    seed: int,
    gap: tuple[float, float],
    keep: bool,
    senders: int = 2,
    flush_after: float | None = None,
    chaos_tail: float = 30,
    redis_dbs: tuple[int, int] = (14, 15),
    victims: tuple[str, ...] = ("a:gateway", "b:worker", "a:dovecot"),
) -> int:
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="mssante-faults-"))
    base.chmod(0o755)
    space = TrustSpace(
        base / "space",
        patient_port=free_port(),
        services=True,
        beat=True,
        redis_dbs=redis_dbs,
        extra={
            "RELAY_RETRY_BASE_SECONDS": "2",
            "RELAY_RETRY_MAX_SECONDS": "20",
            "RELAY_CLAIM_SECONDS": "30",
            "RELAY_TIMEOUT_SECONDS": "20",
        },
    )
    log(f"Démarrage des deux opérateurs ({base})")
    space.start()
    chaos = Chaos(space, rng, gap, flush_after, victims)
    accepted: list[str] = []
    started = time.monotonic()
    try:
        share = -(-messages // senders)
        procs = [
            subprocess.Popen(
                [
                    PY,
                    str(ROOT / "manage.py"),
                    "send_load",
                    SENDER,
                    RECIPIENT,
                    "--count",
                    str(min(share, messages - i * share)),
                    "--start",
                    str(i * share),
                ],
                cwd=ROOT,
                env=space.b.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for i in range(senders)
        ]
        chaos.start()
        lock = threading.Lock()

        def read(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip():
                    with lock:
                        accepted.append(line.strip())
                        if len(accepted) % 500 == 0:
                            log(f"{len(accepted)} messages acceptés par B")
            proc.wait()

        readers = [threading.Thread(target=read, args=(p,)) for p in procs]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        log(f"Envoi terminé : {len(accepted)} acceptés sur {messages}")
        # Keep the chaos running for a while after the last send, then let it drain.
        deadline = time.monotonic() + chaos_tail
        while time.monotonic() < deadline:
            time.sleep(1)
        chaos.stop.set()
        chaos.join()
        drain_deadline = time.monotonic() + 900
        while True:
            counts = deliveries(space.b)
            pending = sum(n for s, n in counts.items() if s not in FINAL)
            if not pending:
                break
            if time.monotonic() > drain_deadline:
                log(f"toujours en attente après 15 min : {dict(counts)}")
                break
            time.sleep(2)
        drained = time.monotonic() - started
        time.sleep(3)
        at_a = message_ids_at(space.a, RECIPIENT)
        counts = deliveries(space.b)
    finally:
        chaos.stop.set()
        space.stop(drop=False)
    delivered = sum(1 for mid in accepted if at_a.get(mid, 0) >= 1)
    duplicated = sum(at_a.get(mid, 0) - 1 for mid in accepted if at_a.get(mid, 0) > 1)
    bounced = counts.get("failed", 0)
    lost = len(accepted) - delivered - bounced
    print()
    print(f"Machine : {os.cpu_count()} cœurs")
    print(f"Envoyés (acceptés par B) : {len(accepted)}")
    print(f"Remis chez A            : {delivered}")
    print(f"Dupliqués               : {duplicated}")
    print(f"Perdus                  : {lost}")
    print(f"Renvoyés (DSN d'échec)  : {bounced}")
    print(f"Pannes provoquées       : {dict(chaos.kills)} ; Redis vidé : {chaos.flushed}")
    print(f"Temps total jusqu'à la vidange : {drained:.0f} s")
    print("Objectif : 0 perdu, 0 dupliqué.")
    if chaos.errors:
        print(f"Redémarrages difficiles : {chaos.errors}")
    ok = lost == 0 and duplicated == 0
    emit(
        Figure("faults", f"Pannes : messages perdus sur {len(accepted)} acceptés", lost, "messages",
               goal="0 perdu", met=lost == 0),
        Figure("faults", f"Pannes : messages dupliqués ({sum(chaos.kills.values())} SIGKILL, "
               f"Redis vidé)", duplicated, "messages", goal="0 dupliqué", met=duplicated == 0),
        Figure("faults", "Pannes : messages renvoyés à l'expéditeur (DSN)", bounced, "messages"),
    )  # fmt: skip
    if ok and not keep:
        shutil.rmtree(base, ignore_errors=True)
        space.stop()  # drops the two databases
    else:
        print(f"Journaux et bases conservés : {base}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-gap", type=float, default=6.0)
    parser.add_argument("--max-gap", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=2, help="send_load processes at B")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--victims",
        default="a:gateway,b:worker,a:dovecot",
        help="processes killed at random (operator:role, comma-separated)",
    )
    args = parser.parse_args()
    victims = tuple(v.strip() for v in args.victims.split(",") if v.strip())
    return run(args.messages, args.seed, (args.min_gap, args.max_gap), args.keep, args.senders,
               victims=victims)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
