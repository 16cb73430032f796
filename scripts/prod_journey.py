"""The journey of `make prod-check` (scripts/prod-check.sh), run from the host against the
containers of docker-compose.yml: what an operator's first day needs to work.

1. migrations applied, `manage.py check --deploy` clean (web container);
2. demo data loaded (PORTAL_DEMO), a Pro Santé Connect sign-in through the mock over HTTP;
3. a message from the peer operator of the test PKI received by the gateway container over
   STARTTLS with its client certificate, then read in the webmail;
4. a message written in the webmail, relayed by the worker container to a TLS sink run here
   (aiosmtpd, the peer's certificate, client certificates required);
5. a BAL closed from the console: its encrypted export in the exports volume (decrypted here
   with the recovery key) and its Maildir gone from the dovecot container.

HTTP goes to the published port as a TLS-terminating proxy would send it: Host is the portal's
public name and X-Forwarded-Proto https. Each step prints « OK » or « ÉCHEC » with its name.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import re
import smtplib
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import make_msgid
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import gnupg
import requests
from aiosmtpd.smtp import SMTP, Envelope, Session

# aiosmtpd warns that a server asking for client certificates may trouble clients: it must.
warnings.filterwarnings("ignore", message="tls_context.verify_mode")
logging.getLogger("mail.log").setLevel(logging.ERROR)

PUBLIC_HOST = "portail.prod-check.test"  # PORTAL_SITE_URL's host (scripts/prod-check.sh)
INTERNAL_HOST = "web:8000"  # where the portal reaches the PSC mock (PSC_DISCOVERY_URL)
DIRECTOR = "899700120068"  # Marc Lefebvre, director of the EHPAD (devtools/demo/data.py)
DOCTOR = "899700120019"  # Dr Claire Martin, EHPAD
DOCTOR_BAL = "claire.martin@ehpad-les-tilleuls.mssante.fr"
CLOSED_BAL = "secretariat@ehpad-les-tilleuls.mssante.fr"
PEER_SENDER = "dr.durand@operateur-test.mssante.fr"  # whitelisted with the PKI's peer DN
MAIL_ROOT = "/var/mail/mssante"
EXPORT_DIR = "/var/lib/mssante-portal/exports"


class StepFailed(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise StepFailed(message)


T = TypeVar("T")


def found(value: T | None, message: str) -> T:
    """``value``, or the step fails with ``message``."""
    if value is None:
        raise StepFailed(message)
    return value


# --- Containers ---------------------------------------------------------------------------------


class Containers:
    def __init__(self, project: str) -> None:
        self.project = project

    def name(self, service: str) -> str:
        out = subprocess.run(  # noqa: S603 (podman from PATH, arguments of this script)
            [  # noqa: S607
                "podman",
                "ps",
                "--filter",
                f"label=io.podman.compose.project={self.project}",
                "--filter",
                f"label=io.podman.compose.service={service}",
                "--format",
                "{{.Names}}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        check(out, f"le conteneur {service} ne tourne pas")
        return out[0]

    def run(
        self, service: str, *command: str, user: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        args = ["podman", "exec", *(["--user", user] if user else []), self.name(service), *command]
        return subprocess.run(args, capture_output=True, timeout=300)  # noqa: S603

    def manage(self, service: str, *command: str) -> str:
        done = self.run(service, "python", "manage.py", *command)
        check(
            done.returncode == 0,
            f"manage.py {' '.join(command)} dans {service} : code {done.returncode}\n"
            + (done.stdout + done.stderr).decode(errors="replace")[-3000:],
        )
        return (done.stdout + done.stderr).decode(errors="replace")


# --- HTTP, as the TLS proxy in front of web would send it ----------------------------------------


class _Forms(HTMLParser):
    """Every form of a page: action, method, and its fields' current values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(
                {"action": a.get("action", ""), "method": a.get("method", "get"), "fields": {}}
            )
        if not self.forms:
            return
        fields = self.forms[-1]["fields"]
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                fields.setdefault(name, None)
            elif kind not in ("submit", "button", "file"):
                fields[name] = a.get("value", "")
        elif tag == "textarea" and name:
            fields[name] = ""
        elif tag == "select" and name:
            self._select = name
            fields[name] = None
        elif (
            tag == "option"
            and self._select
            and (fields.get(self._select) is None or "selected" in a)
        ):
            fields[self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def forms_of(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    for form in parser.forms:
        form["fields"] = {k: v for k, v in form["fields"].items() if v is not None}
    return parser.forms


class Browser:
    """A browser without JavaScript behind the portal's TLS proxy: URLs of the public host (and
    of the mock's internal name) go to the published port with their Host header."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.url = ""

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        for _ in range(10):
            parts = urlsplit(urljoin(self.url or f"https://{PUBLIC_HOST}/", url))
            check(parts.netloc in (PUBLIC_HOST, INTERNAL_HOST), f"adresse inattendue : {url}")
            headers = {"Host": parts.netloc, **kwargs.pop("headers", {})}
            if parts.netloc == PUBLIC_HOST:
                headers["X-Forwarded-Proto"] = "https"
            scheme = "https" if parts.netloc == PUBLIC_HOST else "http"
            if method == "POST":
                headers.setdefault("Origin", f"{scheme}://{parts.netloc}")
                headers.setdefault("Referer", f"{scheme}://{parts.netloc}{parts.path}")
            target = f"http://127.0.0.1:{self.port}{parts.path}" + (
                f"?{parts.query}" if parts.query else ""
            )
            r = requests.request(
                method,
                target,
                headers=headers,
                cookies=self.cookies,
                allow_redirects=False,
                timeout=60,
                **kwargs,
            )
            self.cookies.update(r.cookies.get_dict())
            self.url = f"{scheme}://{parts.netloc}{parts.path}" + (
                f"?{parts.query}" if parts.query else ""
            )
            if r.status_code in (301, 302, 303) and "Location" in r.headers:
                method, url, kwargs = "GET", r.headers["Location"], {}
                continue
            return r
        raise StepFailed(f"trop de redirections depuis {url}")

    def get(self, url: str) -> requests.Response:
        r = self.request("GET", url)
        check(r.status_code == 200, f"GET {url} : {r.status_code} {r.text[:300]}")
        return r

    def submit(
        self, page: requests.Response, pick: Callable[[dict[str, Any]], bool], **values: str
    ) -> requests.Response:
        forms = [f for f in forms_of(page.text) if pick(f)]
        check(forms, f"aucun formulaire attendu sur {self.url}")
        form = forms[0]
        data = {**form["fields"], **values}
        return self.request("POST", form["action"] or self.url, data=data)


def sign_in(port: int, national_id: str) -> Browser:
    """The portal's sign-in button, the mock's identity page (a card), back to the portal."""
    b = Browser(port)
    page = b.get("/connexion/")
    r = b.submit(page, lambda f: "psc" in f["action"])
    check(
        r.status_code == 200 and "identity" in r.text,
        f"page du simulateur PSC attendue : {r.status_code}",
    )
    r = b.submit(
        r,
        lambda f: "identity" in f["fields"] or "auth_mode" in f["fields"],
        identity=national_id,
        auth_mode="card",
        action="login",
    )
    check(r.status_code == 200, f"retour de PSC : {r.status_code} {r.text[:500]}")
    check(urlsplit(b.url).netloc == PUBLIC_HOST, f"retour sur le portail attendu, pas {b.url}")
    check(
        "Se déconnecter" in r.text or "Déconnexion" in r.text, "session ouverte attendue après PSC"
    )
    return b


# --- The TLS sink: the peer operator's MX ---------------------------------------------------


class Sink:
    """aiosmtpd with STARTTLS required, the peer operator's certificate, client certificates
    from the test CA required (what an MSSanté MX asks of our relay)."""

    def __init__(self, host: str, port: int, pki: Path) -> None:
        self.received: list[tuple[str, list[str], bytes, str]] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "peer.crt"), str(pki / "peer.key"))
        context.verify_mode = ssl.CERT_REQUIRED
        self.context, self.host, self.port = context, host, port
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(timeout=10)

    async def _serve(self) -> None:
        sink = self

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                peer = session.ssl.get("peercert") if session.ssl else None
                cn = dict(x[0] for x in peer["subject"]).get("commonName", "") if peer else ""
                sink.received.append(
                    (
                        envelope.mail_from or "",
                        list(envelope.rcpt_tos),
                        bytes(envelope.original_content or b""),
                        cn,
                    )
                )
                return "250 2.0.0 Ok"

        self.server = await self.loop.create_server(
            lambda: SMTP(
                Handler(), tls_context=self.context, require_starttls=True, hostname="sink"
            ),
            host=self.host,
            port=self.port,
        )


# --- The steps ------------------------------------------------------------------------------------


class Journey:
    def __init__(self, args: argparse.Namespace) -> None:
        self.c = Containers(args.project)
        self.args = args
        self.pki = Path(args.pki)
        self.subject_in = f"Compte rendu prod-check {uuid.uuid4().hex[:8]}"
        self.subject_out = f"Réponse prod-check {uuid.uuid4().hex[:8]}"

    def migrations(self) -> str:
        out = self.c.manage("web", "showmigrations")
        pending = [line for line in out.splitlines() if line.strip().startswith("[ ]")]
        applied = [line for line in out.splitlines() if line.strip().startswith("[X]")]
        check(not pending and applied, "migrations non appliquées :\n" + "\n".join(pending))
        return f"{len(applied)} migrations appliquées"

    def check_deploy(self) -> str:
        out = self.c.manage("web", "check", "--deploy", "--fail-level", "WARNING")
        check("no issues" in out, out)
        return "aucun problème"

    def demo(self) -> str:
        out = self.c.manage("web", "load_demo")
        self.c.manage("worker", "sync_crl")
        return next(line for line in out.splitlines() if "Démonstration prête" in line)

    def sign_in(self) -> str:
        self.doctor = sign_in(self.args.http_port, DOCTOR)
        return "Dr Claire Martin connectée par le simulateur PSC"

    def receive(self) -> str:
        message = EmailMessage()
        message["From"] = f"Dr Élise Durand <{PEER_SENDER}>"
        message["To"] = f"{DOCTOR_BAL}, {CLOSED_BAL}"
        message["Subject"] = self.subject_in
        message["Message-ID"] = make_msgid(domain="operateur-test.mssante.fr")
        message.set_content("Bonjour,\n\nVoici le compte rendu de consultation de Mme D.\n")
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.check_hostname = False  # the gateway's test certificate names localhost
        context.load_cert_chain(str(self.pki / "peer.crt"), str(self.pki / "peer.key"))
        with smtplib.SMTP("127.0.0.1", self.args.smtp_port, timeout=30) as smtp:
            smtp.ehlo("smtp.operateur-test.fr")
            smtp.starttls(context=context)
            smtp.ehlo("smtp.operateur-test.fr")
            refused = smtp.send_message(message)
        check(not refused, f"destinataires refusés : {refused}")
        # Read in the webmail: the inbox of her BAL lists it, the message page shows its text.
        b = self.doctor
        index = b.get("/bal/")
        listed = re.search(
            r'href="(/bal/[0-9a-f-]{36}/)\?dossier=INBOX"[^>]*>\s*(?:<[^>]+>\s*)*[^<]*'
            r"(?:<[^>]+>\s*)*" + re.escape(DOCTOR_BAL),
            index.text,
        )
        links = re.findall(r'href="(/bal/[0-9a-f-]{36}/)\?dossier=INBOX"', index.text)
        check(links, "aucune BAL dans le webmail")
        self.doctor_folder = listed.group(1) if listed else links[0]
        deadline = time.monotonic() + 30
        while True:
            inbox = b.get(self.doctor_folder + "?dossier=INBOX")
            link = re.search(
                r'<a href="([^"]+)">' + re.escape(self.subject_in) + "</a>", inbox.text
            )
            if link or time.monotonic() > deadline:
                break
            time.sleep(1)
        link = found(link, f"« {self.subject_in} » absent de la boîte de réception de {DOCTOR_BAL}")
        page = b.get(unescape(link.group(1)))
        body_links = re.findall(r'(?:src|href)="([^"]*/contenu/[^"]*)"', page.text)
        text = page.text + "".join(b.get(unescape(u)).text for u in body_links[:1])
        check("compte rendu de consultation" in text, "le texte du message n'est pas affiché")
        return "reçu par la passerelle (STARTTLS, certificat du pair) et lu dans le webmail"

    def quota(self) -> str:
        """A full BAL is refused at RCPT (452 4.2.2) by the gateway container, which does not
        mount the mail: it learns the size from Dovecot."""

        def set_quota(value: str) -> None:
            self.c.manage(
                "web", "shell", "-c",
                "from mailboxes.models import Mailbox; "
                f"Mailbox.objects.filter(address='{DOCTOR_BAL}').update(quota_bytes={value})",
            )  # fmt: skip

        set_quota("1")
        # The gateway reuses a recipient's decision for a few seconds (RECIPIENT_TTL, 5 s, in
        # mailboxes/transport/gateway/policy.py), and the previous step delivered to this BAL:
        # a quota takes effect after that.
        time.sleep(6)
        try:
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            context.check_hostname = False
            context.load_cert_chain(str(self.pki / "peer.crt"), str(self.pki / "peer.key"))
            with smtplib.SMTP("127.0.0.1", self.args.smtp_port, timeout=30) as smtp:
                smtp.ehlo("smtp.operateur-test.fr")
                smtp.starttls(context=context)
                smtp.ehlo("smtp.operateur-test.fr")
                smtp.mail(PEER_SENDER)
                code, reply = smtp.rcpt(DOCTOR_BAL)
                smtp.rset()
        finally:
            set_quota("None")
        check(
            code == 452 and reply.startswith(b"4.2.2"),
            f"BAL pleine acceptée par la passerelle : {code} {reply!r}",
        )
        return f"BAL pleine refusée à RCPT : {code} {reply.decode()[:40]}"

    def send(self) -> str:
        host = self.c.run("worker", "getent", "hosts", "host.containers.internal").stdout.split()
        check(host, "host.containers.internal ne se résout pas dans le conteneur worker")
        sink = Sink(host[0].decode(), self.args.sink_port, self.pki)
        b = self.doctor
        page = b.get(self.doctor_folder + "ecrire/")
        r = b.submit(
            page,
            lambda f: "objet" in f["fields"],
            a=PEER_SENDER,
            objet=self.subject_out,
            corps="Bien reçu, merci.\n",
            action="envoyer",
        )
        check(r.status_code == 200, f"envoi depuis le webmail : {r.status_code} {r.text[:500]}")
        deadline = time.monotonic() + 90
        while not sink.received and time.monotonic() < deadline:
            time.sleep(1)
        check(sink.received, "rien n'est arrivé au puits TLS en 90 s (worker, RELAY_ROUTES)")
        mail_from, rcpts, data, cn = sink.received[0]
        relayed = message_from_bytes(data, policy=default)
        check(
            PEER_SENDER in rcpts and relayed["Subject"] == self.subject_out,
            f"le message relayé n'est pas celui écrit : {rcpts} {relayed['Subject']!r}",
        )
        check(cn == "localhost", f"certificat client du relais inattendu : CN={cn!r}")
        return (
            f"relayé par le worker vers le puits TLS ({mail_from} → {', '.join(rcpts)}, "
            f"certificat client CN={cn})"
        )

    def close(self) -> str:
        mail_home = f"{MAIL_ROOT}/{CLOSED_BAL.split('@')[1]}/{CLOSED_BAL.split('@')[0]}"
        check(
            self.c.run("dovecot", "test", "-d", f"{mail_home}/Maildir").returncode == 0,
            f"la Maildir de {CLOSED_BAL} devrait exister avant la fermeture",
        )
        director = sign_in(self.args.http_port, DIRECTOR)
        home = director.get("/console/")
        structure = None
        for link in dict.fromkeys(re.findall(r'href="(/console/[0-9a-f-]{36}/)"', home.text)):
            page = director.get(link)
            if CLOSED_BAL in page.text:
                structure = (link, page)
                break
        link, page = found(structure, f"{CLOSED_BAL} introuvable dans la console du directeur")
        bal = re.search(
            r'href="(' + re.escape(link) + r'bal/[0-9a-f-]{36}/)"><code>' + re.escape(CLOSED_BAL),
            page.text,
        )
        bal = found(bal, "lien de la BAL absent de la console")
        with tempfile.TemporaryDirectory() as home_dir:
            gpg = gnupg.GPG(gnupghome=home_dir)
            key = gpg.gen_key(
                gpg.gen_key_input(
                    key_type="EDDSA",
                    key_curve="ed25519",
                    subkey_type="ECDH",
                    subkey_curve="cv25519",
                    name_real="EHPAD Les Tilleuls (recouvrement)",
                    name_email="direction@ehpad-les-tilleuls.fr",
                    no_protection=True,
                )
            )
            r = director.submit(
                director.get(link + "cle/"),
                lambda f: "armored" in f["fields"],
                armored=gpg.export_keys(key.fingerprint),
            )
            check(
                r.status_code == 200,
                f"clé de recouvrement refusée : {r.status_code} {r.text[:500]}",
            )
            before = set(self._exports())
            r = director.submit(
                director.get(bal.group(1) + "fermer/"),
                lambda f: "confirm" in f["fields"],
                confirm=CLOSED_BAL,
            )
            check(r.status_code == 200, f"fermeture refusée : {r.status_code} {r.text[:800]}")
            # Closing runs in the store worker (a job the console page follows): wait for its
            # effects, then download the archive from the console as the director would.
            job_page = director.url
            download = None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                new = set(self._exports()) - before
                gone = self.c.run("dovecot", "test", "-e", mail_home).returncode != 0
                job = director.get(job_page).text
                download = re.search(r'href="(/console/[0-9a-f-]{36}/exports/[0-9a-f-]{36}/)"', job)
                if new and gone and download:
                    break
                time.sleep(2)
            check(new, "aucun export chiffré dans le volume exports après la fermeture")
            path = sorted(new)[0]
            download = found(
                download, f"{path} écrit, mais la console n'offre pas son téléchargement"
            )
            encrypted = director.get(download.group(1)).content
            check(
                encrypted == self.c.run("web", "cat", path).stdout,
                "l'archive téléchargée n'est pas celle du volume exports",
            )
            clear = gpg.decrypt(encrypted)
            check(clear.ok, f"export indéchiffrable avec la clé de recouvrement : {clear.status}")
            with tarfile.open(fileobj=io.BytesIO(clear.data), mode="r:gz") as tar:
                members = {
                    m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers()
                    if m.isfile() and m.name != "manifest.json"  # the messages themselves
                }
            check(
                any(self.subject_in.encode() in data for data in members.values()),
                "le message reçu manque dans l'export : "
                + ", ".join(f"{name} ({len(data)} o)" for name, data in members.items()),
            )
            check(
                gone,
                f"export {path} déchiffré (le message reçu y est), mais la Maildir de "
                f"{CLOSED_BAL} est toujours là ({mail_home}, conteneur dovecot)",
            )
        return (
            f"export {path} téléchargé depuis la console et déchiffré (le message reçu y est), "
            "Maildir supprimée"
        )

    def _exports(self) -> list[str]:
        out = self.c.run("web", "find", EXPORT_DIR, "-type", "f", "-name", "*.gpg").stdout
        return out.decode().split()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--sink-port", type=int, required=True)
    parser.add_argument("--pki", required=True)
    journey = Journey(parser.parse_args())
    steps: list[tuple[str, Callable[[], str]]] = [
        ("migrations appliquées", journey.migrations),
        ("check --deploy", journey.check_deploy),
        ("données de démonstration", journey.demo),
        ("connexion PSC (simulateur)", journey.sign_in),
        ("réception par la passerelle, lecture au webmail", journey.receive),
        ("quota : une BAL pleine refusée par la passerelle", journey.quota),
        ("écriture au webmail, relais vers le puits TLS", journey.send),
        ("fermeture d'une BAL depuis la console", journey.close),
    ]
    failed = []
    for name, step in steps:
        started = time.monotonic()
        try:
            detail = step()
        except Exception as exc:  # every failure is reported with its step's name
            print(f"   ÉCHEC  {name} ({time.monotonic() - started:.1f}s) : {exc}", flush=True)
            failed.append(name)
            if name in (
                "migrations appliquées",
                "données de démonstration",
                "connexion PSC (simulateur)",
            ):
                break  # the next steps need this one
        else:
            print(f"   OK     {name} ({time.monotonic() - started:.1f}s) : {detail}", flush=True)
    if failed:
        print(f"== parcours : {len(failed)} étape(s) en échec : {', '.join(failed)}", flush=True)
        return 1
    print("== parcours : toutes les étapes passent", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
