"""Two complete operators in one MSSanté trust space, on one machine (issue 8).

« Opérateur A » hosts the EHPAD Les Tilleuls and the SSIAD du Val de Saône; « opérateur B »
hosts the IME Les Coquelicots. Each has its own database (SQLite), Celery transport, private
Dovecot, gateway, relay worker, PSC mock and web server, under its own directory; each has its
own certificate from the test PKI (A: « gateway », B: « peer »). A whitelist signed with the
test PKI's « signer » certificate lists both operators' domains with their certificate DNs and
``patient.mssante.fr`` with the DN of a stand-in for Mon Espace Santé (a TLS SMTP server the
caller starts); both instances take the test CA as the list's trust anchor, pin the signer's
key and sync the list at start. Each relay routes the other's domains to the other's gateway
(RELAY_ROUTES), so mail really travels over mutual TLS between them.

The harness also plays the Annuaire Santé: ``publish_directory`` gathers each operator's
published BALs (``export_extraction``) and imports them into both directories.

    python -m devtools.trust_space [--base var/e2e]   # starts both, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from devtools.pki import Issued, crl_paths, make_test_pki
from devtools.runner import PY, ROOT, Process, Runner, banner, free_port, http_ok
from devtools.whitelist_sign import Listed, dn_of, trust_env, write_signed_whitelist

PATIENT_DOMAIN = "patient.mssante.fr"


def _server(url: str) -> str:
    """``scheme://user@host:port`` of a database or Redis URL (its last path part dropped)."""
    return url.rsplit("/", 1)[0] if url.count("/") >= 3 else url


# The PostgreSQL and Redis servers the tests use (scripts/ensure-services.sh may have started
# private ones); each operator gets its own database and Redis db on them.
SERVICES_PG = _server(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/x")
SERVICES_REDIS = _server(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")


@dataclass
class Operator:
    key: str  # "a" / "b"
    label: str
    structures: list[str]  # FINESS hosted
    domains: list[str]
    identity: str  # role in the test PKI
    var: Path = Path()
    port: int = 0
    imap_port: int = 0
    gateway_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    runner: Runner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _LoggingRunner(Runner):
    """The processes of one operator, their output in one log file."""

    def __init__(self, procs: list[Process], env: dict[str, str], log: Path) -> None:
        super().__init__(procs, env)
        self.log = log.open("a", encoding="utf-8")

    def say(self, name: str, line: str) -> None:
        with self.lock:
            self.log.write(f"{name:>10} | {line}\n")
            self.log.flush()


def operators() -> list[Operator]:
    return [
        Operator(
            "a", "opérateur A", ["690001235", "710004565"],
            ["ehpad-les-tilleuls.mssante.fr", "ssiad-val-de-saone.mssante.fr"], "gateway",
        ),
        Operator(
            "b", "opérateur B", ["690002001"], ["ime-les-coquelicots.mssante.fr"], "peer",
        ),
    ]  # fmt: skip


class TrustSpace:
    """``services``: PostgreSQL databases and Redis brokers (one each per operator) instead of
    SQLite and the filesystem transport, for the fault bench (« flush Redis »). ``beat``: run
    Celery beat too (the relay sweep). ``extra``: more environment for both operators."""

    def __init__(
        self,
        base: Path,
        *,
        patient_port: int,
        services: bool = False,
        beat: bool = False,
        extra: dict[str, str] | None = None,
        redis_dbs: tuple[int, int] = (12, 13),
    ) -> None:
        self.base = base.resolve()
        self.redis_dbs = redis_dbs
        # Databases named after this run: a test and a bench may run side by side.
        self.db_tag = f"{os.getpid()}_{free_port()}"
        self.patient_port = patient_port
        self.services = services
        self.beat = beat
        self.extra = extra or {}
        self.a, self.b = operators()
        self.pki: dict[str, Issued] = {}

    # --- setting up ---------------------------------------------------------------------------

    def _configure(self, op: Operator, other: Operator) -> None:
        """The environment of ``op`` (both operators have their ports already)."""
        for folder in ("queue", "processed", "control"):
            (op.var / "celery" / folder).mkdir(parents=True, exist_ok=True)
        cert = self.pki[op.identity]
        routes = [f"{d}=127.0.0.1:{other.gateway_port}" for d in other.domains]
        routes.append(f"{PATIENT_DOMAIN}=127.0.0.1:{self.patient_port}")
        op.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")},
            "PORTAL_ENV": "embedded",
            "PORTAL_VAR_DIR": str(op.var),
            "PORTAL_SITE_URL": op.url,
            "DATABASE_URL": f"sqlite:///{op.var / 'portal.sqlite3'}",
            "REDIS_URL": "",
            "DOVECOT_IMAP_PORT": str(op.imap_port),
            "GATEWAY_PORT": str(op.gateway_port),
            "GATEWAY_HOSTNAME": f"mx.{op.domains[0]}",
            "GATEWAY_CERT": str(cert.cert),
            "GATEWAY_KEY": str(cert.key),
            "GATEWAY_CA_BUNDLE": str(self.pki["ca"].cert),
            "RELAY_CA_BUNDLE": str(self.pki["ca"].cert),
            "TLS_CRL_URLS": str(crl_paths(self.base / "pki")[0]),
            "RELAY_ROUTES": ",".join(routes),
            "RELAY_RETRY_BASE_SECONDS": "2",
            **trust_env(self.base / "pki"),  # the test CA and the signer's key pinned
            "WHITELIST_URL": str(self.base / "liste-blanche.xml"),
            "PSC_MOCK_ENABLED": "true",
            "PORTAL_DEMO": "true",
            "DJANGO_ALLOW_ASYNC_UNSAFE": "",
            "PYTHONUNBUFFERED": "1",
            **self.extra,
        }
        if self.services:
            op.env["DATABASE_URL"] = f"{SERVICES_PG}/{self.db_name(op)}"
            op.env["CELERY_BROKER_URL"] = self.broker(op)

    def db_name(self, op: Operator) -> str:
        return f"mssante_e2e_{op.key}_{self.db_tag}"

    def broker(self, op: Operator) -> str:
        return f"{SERVICES_REDIS}/{self.redis_dbs[0] if op.key == 'a' else self.redis_dbs[1]}"

    def _fresh_services(self) -> None:
        import psycopg
        import redis

        with psycopg.connect(f"{SERVICES_PG}/postgres", autocommit=True) as conn:
            for op in (self.a, self.b):
                conn.execute(f"DROP DATABASE IF EXISTS {self.db_name(op)} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {self.db_name(op)}")
        for op in (self.a, self.b):
            redis.Redis.from_url(self.broker(op)).flushdb()

    def manage(self, op: Operator, *args: str) -> str:
        done = subprocess.run(
            [PY, str(ROOT / "manage.py"), *args],
            cwd=ROOT, env=op.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout

    def _prepare(self, op: Operator) -> None:
        self.manage(op, "migrate", "--noinput")
        self.manage(op, "sync_whitelist", str(self.base / "liste-blanche.xml"))
        self.manage(op, "sync_crl")
        self.manage(op, "load_demo", "--bare", "--structures", ",".join(op.structures))
        self.manage(op, "dovecot_config")

    def _processes(self, op: Operator) -> list[Process]:
        manage = [PY, str(ROOT / "manage.py")]
        dovecot_conf = str(op.var / "dovecot" / "dovecot.conf")
        return [
            Process(f"{op.key}:dovecot", ["dovecot", "-F", "-c", dovecot_conf],
                    banner(op.imap_port, b"ready")),
            Process(f"{op.key}:web", [*manage, "runserver", f"127.0.0.1:{op.port}", "--noreload"],
                    http_ok(f"{op.url}/connexion/")),
            Process(f"{op.key}:worker", [PY, "-m", "celery", "-A", "mssante_portal", "worker",
                                         "-Q", "relay,default", "--pool=solo", "-l", "INFO",
                                         "--without-gossip", "--without-mingle",
                                         "--without-heartbeat"]),
            Process(f"{op.key}:gateway", [*manage, "run_gateway", "--port", str(op.gateway_port)],
                    banner(op.gateway_port, b"220")),
        ] + ([Process(f"{op.key}:beat", [PY, "-m", "celery", "-A", "mssante_portal", "beat",
                                        "-l", "INFO", "-s", str(op.var / "celerybeat-schedule")])]
             if self.beat else [])  # fmt: skip

    def start(self) -> None:
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        self.pki = make_test_pki(self.base / "pki")
        for op in (self.a, self.b):
            op.var = self.base / op.key
            op.port, op.imap_port, op.gateway_port = (free_port() for _ in range(3))
        self._configure(self.a, self.b)
        self._configure(self.b, self.a)
        if self.services:
            self._fresh_services()
        listed = [Listed(d, dn_of(self.pki["gateway"].cert), "Opérateur A") for d in self.a.domains]
        listed += [Listed(d, dn_of(self.pki["peer"].cert), "Opérateur B") for d in self.b.domains]
        listed.append(Listed(PATIENT_DOMAIN, dn_of(self.pki["patient"].cert), "Mon Espace Santé"))
        write_signed_whitelist(
            self.base / "liste-blanche.xml",
            listed,
            cert=self.pki["signer"].cert,
            key=self.pki["signer"].key,
        )
        errors: list[BaseException] = []

        def prepare(op: Operator) -> None:
            try:
                self._prepare(op)
            except subprocess.CalledProcessError as exc:
                errors.append(RuntimeError(f"{op.label}: {exc.cmd[2:]} {exc.stderr[-2000:]}"))

        threads = [threading.Thread(target=prepare, args=(op,)) for op in (self.a, self.b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        for op in (self.a, self.b):
            op.runner = _LoggingRunner(self._processes(op), op.env, op.var / "processes.log")
            try:
                for proc in op.runner.procs:
                    op.runner.start(proc)
            except RuntimeError:
                self.stop()
                raise

    def publish_directory(self) -> None:
        """Play the Annuaire Santé: every operator's published BALs into every directory."""
        lines: list[str] = []
        header = ""
        for op in (self.a, self.b):
            path = op.var / "publication.txt"
            self.manage(op, "export_extraction", str(path))
            header, *rows = path.read_text("utf-8").splitlines()
            lines += rows
        extraction = self.base / "Extraction_Correspondance_MSSante_e2e.txt"
        extraction.write_text(header + "\n" + "\n".join(lines) + "\n", "utf-8")
        for op in (self.a, self.b):
            self.manage(op, "import_annuaire", str(extraction))

    def died(self) -> str | None:
        for op in (self.a, self.b):
            if op.runner is not None:
                for proc in op.runner.procs:
                    if proc.popen is not None and proc.popen.poll() is not None:
                        return proc.name
        return None

    def stop(self, *, drop: bool = True) -> None:
        for op in (self.b, self.a):
            if op.runner is not None:
                op.runner.stop()
                if isinstance(op.runner, _LoggingRunner):
                    op.runner.log.close()
        if self.services and drop:
            import psycopg

            with psycopg.connect(f"{SERVICES_PG}/postgres", autocommit=True) as conn:
                for op in (self.a, self.b):
                    conn.execute(f"DROP DATABASE IF EXISTS {self.db_name(op)} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Deux opérateurs MSSanté sur une machine.")
    parser.add_argument("--base", default=str(ROOT / "var" / "e2e"))
    args = parser.parse_args(argv)
    space = TrustSpace(Path(args.base), patient_port=free_port())
    space.start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for op in (space.a, space.b):
        print(f"{op.label} : {op.url}/ (passerelle 127.0.0.1:{op.gateway_port}) — {op.var}")
    print("Ctrl-C pour tout arrêter.")
    while not stop.wait(0.5) and space.died() is None:
        pass
    space.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
