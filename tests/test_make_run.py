"""`make run` smoke test: the embedded default starts for real and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.accounts import psc_flow

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,pgid="], capture_output=True, text=True, check=True
    ).stdout
    rows = [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]
    groups = {pgid for p, _pp, pgid in rows if _pp == pid}
    return [p for p, _pp, pgid in rows if _pp == pid or pgid in groups]


def test_embedded_default_starts_serves_and_stops_cleanly() -> None:
    # Not pytest's tmp_path: it is 0700, and Dovecot's unprivileged services must traverse it.
    tmp_path = Path(tempfile.mkdtemp(prefix="mssante-run-"))
    tmp_path.chmod(0o755)
    port = _free_port()
    imap_lps = _free_port()  # API LPS on, as the README shows it
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "CELERY_", "DOVECOT_", "PSC_", "PORTAL_"))
    }
    env["LPS_IMAP_PORT"] = str(imap_lps)
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.runner",
            "--port",
            str(port),
            "--var-dir",
            str(tmp_path / "var"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            if b"Portail pr\xc3\xaat" in (tmp_path / "run.log").read_bytes():
                ready = True
                break
            time.sleep(0.5)
        assert ready, (tmp_path / "run.log").read_text(errors="replace")[-3000:]

        status, body = _get(f"{base}/connexion/")
        assert status == 200 and "Se connecter avec Pro Santé Connect" in body.decode()
        # The demonstration's error pages are the portal's, in French, and its styles load.
        try:
            _get(f"{base}/nulle-part/")
        except urllib.error.HTTPError as missing:
            assert missing.code == 404
            page = missing.read().decode()
            assert "Page introuvable" in page and "DEBUG = True" not in page
        else:
            raise AssertionError("an unknown page answered 200")
        status, body = _get(f"{base}/static/css/portal.css")
        assert status == 200 and b".page" in body
        status, body = _get(
            f"{base}/_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"
        )
        assert (
            status == 200
            and json.loads(body)["issuer"] == f"{base}/_dev/psc/auth/realms/esante-wallet"
        )
        # Dr Claire Martin signs in through the mock, as the README tells a newcomer to.
        signed_in = psc_flow.sign_in(base, "899700120019")
        assert signed_in.response.status_code == 200, signed_in.response.text[-2000:]
        assert "Claire" in signed_in.response.text
        assert len(_children(proc.pid)) >= 4  # dovecot, web, worker, beat (and their children)
        assert "Messages de démonstration déposés : 3" in (tmp_path / "run.log").read_text()
        _send_through_gateway(tmp_path / "run.log", tmp_path / "var" / "pki")
        _open_the_app_bal_with_its_certificate(tmp_path / "var" / "pki", imap_lps)
    finally:
        children = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        log.close()

    assert code == 0, (tmp_path / "run.log").read_text(errors="replace")[-3000:]
    assert "Arrêté proprement." in (tmp_path / "run.log").read_text()
    time.sleep(0.5)
    alive = [pid for pid in children if _alive(pid)]
    assert alive == []
    shutil.rmtree(tmp_path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Reaped later by init: a zombie is not a running process (platform-notes: <defunct>).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _send_through_gateway(log: Path, pki: Path) -> None:
    """The demo operator (test PKI) delivers to a demo BAL through the running gateway."""
    found = re.search(r"127\.0\.0\.1:(\d+)\b", log.read_text().split("Passerelle MSSanté")[1])
    assert found, "the runner did not announce the gateway"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(pki / "peer.crt"), str(pki / "peer.key"))
    message = (
        b"From: labo@operateur-test.mssante.fr\r\nSubject: Par la passerelle\r\n\r\nBonjour\r\n"
    )
    with smtplib.SMTP("127.0.0.1", int(found.group(1)), timeout=10) as smtp:
        smtp.starttls(context=context)
        refused = smtp.sendmail(
            "labo@operateur-test.mssante.fr",
            ["claire.martin@ehpad-les-tilleuls.mssante.fr"],
            message,
        )
    assert refused == {}


def _open_the_app_bal_with_its_certificate(pki: Path, imap_port: int) -> None:
    """The README's curl line: the demo DUI's APP BAL, SASL EXTERNAL with the software
    certificate make run bound to it."""
    done = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--ssl-reqd", "--max-time", "20",
            "--cacert", str(pki / "ca.crt"), "--cert", str(pki / "software.crt"),
            "--key", str(pki / "software.key"), "--login-options", "AUTH=EXTERNAL",
            "--user", "dui-noreply@ehpad-les-tilleuls.mssante.fr:",
            f"imap://127.0.0.1:{imap_port}/INBOX", "-X", "EXAMINE INBOX",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "EXISTS" in done.stdout
