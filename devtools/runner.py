"""`make run`: the whole product on one machine, every process for real.

Prepares the embedded default (SQLite and a filesystem Celery transport under var/, the PSC
mock, demo data, a private Dovecot) and supervises the processes. Adding a process is one
line in ``processes()``. Ctrl-C (or SIGTERM) stops everything; if one process dies, the others
are stopped and the runner exits non-zero.

    python -m devtools.runner [--port 8000] [--var-dir var]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.whitelist_sign import trust_env

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
STOP_GRACE = 10.0


@dataclass
class Process:
    name: str
    argv: list[str]
    ready: Callable[[], bool] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local URL)
                return bool(response.status < 500)
        except OSError:
            return False

    return check


def banner(port: int, word: bytes) -> Callable[[], bool]:
    """An open port is not enough for Dovecot: wait for its greeting (platform-notes §2)."""

    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return word in sock.recv(256)
        except OSError:
            return False

    return check


def processes(
    port: int, var: Path, imap_port: int, gateway_port: int, dovecot_dir: Path | None = None
) -> list[Process]:
    manage = [PY, str(ROOT / "manage.py")]
    celery = [PY, "-m", "celery", "-A", "mssante_portal"]
    dovecot_conf = str((dovecot_dir or var / "dovecot") / "dovecot.conf")
    site = f"http://127.0.0.1:{port}"
    return [
        Process("dovecot", ["dovecot", "-F", "-c", dovecot_conf], banner(imap_port, b"ready")),
        Process("web", [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
                http_ok(f"{site}/connexion/")),
        Process("worker", [*celery, "worker", "-Q", "relay,default", "--pool=solo", "-l", "INFO",
                           "--without-gossip", "--without-mingle", "--without-heartbeat"]),
        # Closing and exporting a BAL (queue `store`): the process that mounts the mail.
        Process("store", [*celery, "worker", "-Q", "store", "-n", "store@%h", "--pool=solo",
                          "-l", "INFO", "--without-gossip", "--without-mingle",
                          "--without-heartbeat"]),
        Process("beat", [*celery, "beat", "-l", "INFO", "-s", str(var / "celerybeat-schedule")]),
        Process("gateway", [*manage, "run_gateway", "--port", str(gateway_port)],
                banner(gateway_port, b"220")),
        # API LPS submission, when its port is set (README, « Logiciels et clients »).
        *([Process("submission", [*manage, "run_submission"], banner(int(lps_submission), b"220"))]
          if (lps_submission := os.environ.get("LPS_SUBMISSION_PORT", "")) else []),
        *([Process("imaptraces", [*manage, "collect_imap_traces", "--every", "5"]),
           Process("lpsexpiry", [*manage, "end_software_sessions", "--every", "5"])]
          if os.environ.get("LPS_IMAP_PORT") or os.environ.get("LPS_IMAPS_PORT") else []),
    ]  # fmt: skip


class Runner:
    def __init__(self, procs: list[Process], env: dict[str, str]) -> None:
        self.procs = procs
        self.env = env
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self.lock:
            sys.stdout.write(f"{name:>8} | {line}\n")
            sys.stdout.flush()

    def _pump(self, proc: Process) -> None:
        assert proc.popen is not None and proc.popen.stdout is not None
        for raw in iter(proc.popen.stdout.readline, b""):
            self.say(proc.name, raw.decode("utf-8", "replace").rstrip())

    def start(self, proc: Process) -> None:
        proc.popen = subprocess.Popen(
            proc.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches the runner only
        )
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        if proc.ready is not None:
            deadline = time.monotonic() + 60
            while not proc.ready():
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} n'a pas démarré")
                time.sleep(0.1)

    def stop(self) -> None:
        self.stopping.set()
        for proc in reversed(self.procs):
            if proc.popen and proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()

    def watch(self) -> str | None:
        """Block until a stop is requested (None) or a process dies (its name)."""
        while not self.stopping.wait(0.5):
            for proc in self.procs:
                if proc.popen is not None and proc.popen.poll() is not None:
                    return proc.name
        return None


def dovecot_home(var: Path) -> dict[str, str]:
    """Where Dovecot's files go. Run as root, Dovecot's services are unprivileged users who
    must traverse every parent folder: a checkout under /root or a 0700 home (Debian 12's
    default) does not let them, so its instance then lives under /var/tmp instead."""
    if os.geteuid() != 0 or "DOVECOT_DIR" in os.environ:
        return {}
    if all(not p.exists() or p.stat().st_mode & 0o001 for p in [var, *var.parents]):
        return {}
    digest = hashlib.sha1(str(var).encode()).hexdigest()[:8]  # noqa: S324 (a name, not security)
    home = Path("/var/tmp") / f"mssante-portal-{digest}"  # noqa: S108 (checked below)
    home.mkdir(mode=0o755, exist_ok=True)
    info = home.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise SystemExit(f"{home} n'est pas un dossier à nous : supprimez-le et relancez.")
    home.chmod(0o755)
    return {"DOVECOT_DIR": str(home / "dovecot"), "DOVECOT_MAIL_ROOT": str(home / "mail")}


def prepare(env: dict[str, str]) -> None:
    """Database, demo data, Dovecot configuration: each step idempotent."""
    manage = [PY, str(ROOT / "manage.py")]
    steps = (
        ["migrate", "--noinput"],
        ["load_demo"],
        ["make_test_pki", "--keep"],
        ["sync_crl"],  # the test CA's CRL (TLS_CRL_URLS): revocation checked as in production
        # After the PKI and its CRL: Dovecot verifies software certificates with both.
        ["dovecot_config"],
        ["demo_app_certificate"],  # the demo APP BAL opens with var/pki/software.crt
    )
    for step in steps:
        subprocess.run([*manage, *step], cwd=ROOT, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Démarre le portail MSSanté (mode embarqué).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORTAL_PORT", "8000")))
    parser.add_argument("--var-dir", default=os.environ.get("PORTAL_VAR_DIR", str(ROOT / "var")))
    args = parser.parse_args(argv)
    var = Path(args.var_dir).resolve()
    for folder in (
        var / "celery" / "queue",
        var / "celery" / "processed",
        var / "celery" / "control",
    ):
        folder.mkdir(parents=True, exist_ok=True)
    imap_port, gateway_port = free_port(), free_port()
    site = f"http://127.0.0.1:{args.port}"
    env = {
        **os.environ,
        "PORTAL_ENV": "embedded",
        "PORTAL_VAR_DIR": str(var),
        "PORTAL_SITE_URL": site,
        "DOVECOT_IMAP_PORT": str(imap_port),
        "GATEWAY_PORT": str(gateway_port),
        "TLS_CRL_URLS": os.environ.get("TLS_CRL_URLS", str(var / "pki" / "ca.crl")),
        "PYTHONUNBUFFERED": "1",
        # `make run` is the demonstration a newcomer sees: French error pages, not Django's
        # debug pages (DJANGO_DEBUG=true brings them back for development).
        "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "false"),
        "PORTAL_DEMO": os.environ.get("PORTAL_DEMO", "true"),
        **dovecot_home(var),
    }
    prepare(env)
    # The test PKI's signer is the whitelist signer this instance trusts (its CA, its key pinned).
    env.update({k: v for k, v in trust_env(var / "pki").items() if k not in os.environ})
    dovecot_dir = Path(env.get("DOVECOT_DIR", var / "dovecot"))
    runner = Runner(processes(args.port, var, imap_port, gateway_port, dovecot_dir), env)
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    try:
        for proc in runner.procs:
            runner.start(proc)
        subprocess.run(
            [PY, str(ROOT / "manage.py"), "load_demo", "--mail"], cwd=ROOT, env=env, check=True
        )
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        runner.say("runner", f"Échec du démarrage : {exc}")
        runner.stop()
        return 1
    runner.say("runner", f"Portail prêt : {site}/")
    if "DOVECOT_DIR" in env and "DOVECOT_DIR" not in os.environ:
        runner.say("runner", f"Dovecot et les boîtes : {Path(env['DOVECOT_DIR']).parent} "
                   f"({var} n'est pas traversable par les services de Dovecot)")  # fmt: skip
    gateway = f"127.0.0.1:{gateway_port}"
    runner.say(
        "runner", f"Passerelle MSSanté (STARTTLS + certificat client, PKI de test) : {gateway}"
    )
    imap_lps = os.environ.get("LPS_IMAP_PORT", "")
    if imap_lps or os.environ.get("LPS_SUBMISSION_PORT"):
        # API LPS: how anyone tries it with a real client (README, « Logiciels et clients »).
        runner.say("runner", "Logiciels (API LPS) : un jeton PSC de test pour Dr Claire Martin :")
        runner.say("runner", f"  PORTAL_SITE_URL={site} .venv/bin/python manage.py psc_token "
                   "899700120019")  # fmt: skip
        if imap_lps:
            runner.say("runner", "  curl --ssl-reqd --cacert var/pki/ca.crt --user "
                       "claire.martin@ehpad-les-tilleuls.mssante.fr: --oauth2-bearer <jeton> "
                       f"imap://127.0.0.1:{imap_lps}/INBOX")  # fmt: skip
            runner.say("runner", "  la BAL applicative du DUI, avec le certificat du logiciel "
                       "(SASL EXTERNAL) : curl --ssl-reqd --cacert var/pki/ca.crt --cert "
                       "var/pki/software.crt --key var/pki/software.key --login-options "
                       "AUTH=EXTERNAL --user dui-noreply@ehpad-les-tilleuls.mssante.fr: "
                       f"imap://127.0.0.1:{imap_lps}/INBOX")  # fmt: skip
    runner.say("runner", "Ctrl-C pour tout arrêter.")
    died = runner.watch()
    runner.stop()
    if died:
        runner.say("runner", f"Le processus « {died} » s'est arrêté : tout a été arrêté.")
        return 1
    runner.say("runner", "Arrêté proprement.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
