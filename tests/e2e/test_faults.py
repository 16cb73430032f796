"""The fault bench in small (bench/faults.py): messages from operator B to operator A while
A's gateway, B's relay worker and A's Dovecot are killed with SIGKILL and restarted and the
Redis brokers are flushed; every accepted message arrives exactly once or bounces with a DSN.

A's gateway is among the victims since its attempt markers (mailboxes/transport/gateway/dedup.py)
closed the last window for a duplicate: 0 in 10,000 messages with 40 gateway kills."""

from __future__ import annotations

import importlib.util
import sys

from devtools.runner import ROOT


def _bench():  # bench/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("faults_bench", ROOT / "bench" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_kills_and_a_redis_flush_lose_nothing_and_duplicate_nothing(capsys) -> None:
    status = _bench().run(
        400,
        seed=7,
        gap=(2.0, 5.0),
        keep=False,
        senders=2,
        flush_after=1,  # at the chaos' first turn: the brokers are emptied while B sends
        chaos_tail=20,  # then kills go on while B's relay drains what it was left with
        redis_dbs=(10, 11),
        victims=("a:gateway", "b:worker", "a:dovecot"),
    )
    report = capsys.readouterr().out
    assert "Perdus                  : 0" in report, report
    assert "Dupliqués               : 0" in report, report
    assert "SIGKILL" in report and "Redis : files de tâches vidées" in report, report
    assert status == 0
