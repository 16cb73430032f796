"""Messages submitted by care software with a Pro Santé Connect token and relayed out, against
Postfix submission relaying to the same sink (issue 18, « Measured »).

Same load for both: CLIENTS software, each opening connections (STARTTLS, TLS 1.2+, AUTH
XOAUTH2, then PER_CONNECTION messages of 2 KB, one recipient each, QUIT) until the round's
messages are sent. The recipients are at five other operators' domains, all served by one TLS
sink (bench/_common.Sink: STARTTLS, client certificates required). The clock runs from the
first connection until the sink has every message: submitted *and* relayed out.

- ours: the submission server (`manage.py run_submission`) checks the token (introspection at
  the PSC mock served by gunicorn, as in production, with its verdict cache), the right to
  send, each recipient at RCPT (trust space), writes the message in the outbound spool, its
  trace and its Sent copy (Dovecot) before 250; the relay worker (Celery, as `relay_vs_postfix`
  starts it) checks each peer's certificate against the whitelist and delivers;
- Postfix 3.7: a private instance, submission with mandatory TLS and SASL through Dovecot
  (XOAUTH2, a passwd-file holding the same BAL and one fixed token: no validation at all),
  relaying to the sink with the sink's certificate pinned, our client certificate, and TLS
  connection reuse (tlsproxy) as a careful operator sets it.

Rounds are interleaved (order rotated); the median of the per-round ratios is printed with
its spread and the machine's load before each round. The issue sets no numeric goal: the
figure is published with its ratio.

Measured 2026-12-03 on the 2 shared cores (load 8-10), 1000 messages per round, 3 rounds:
ours 16.8 / 17.0 / 19.1 msg/s against Postfix 274.5 / 287.6 / 325.2 msg/s, median ratio
0.06; our submission, portal and relay took 35 ms of CPU per message. Before the submission
kept one IMAP session per SMTP session for the Sent copies (an IMAP login per message, about
a third of message_submit's time), a quick run gave 5.8 against 113 msg/s. Submission is the
bottleneck (submitted and relayed rates are equal): one process, each RCPT and DATA a
database round trip off the event loop, the spool, the trace and the Sent copy before 250;
Postfix only queues.

    apt-get install -y --no-install-recommends postfix
    PORTAL_ENV=test .venv/bin/python bench/submission.py [--messages 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import smtplib
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ROOT,
    Postfix,
    Sink,
    django_setup,
    dovecot_running,
    free_port,
    load,
    machine,
    scratch,
    static_passdb,
    tree_cpu_seconds,
    wait_banner,
    wait_http,
)
from report import Figure, emit

DOCTOR = "899700120019"
DISCOVERY = "/_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"
SENDER_DOMAIN = "ehpad-les-tilleuls.mssante.fr"
SENDER = f"claire.martin@{SENDER_DOMAIN}"
DOMAINS = [f"operateur{i}.mssante.fr" for i in range(1, 6)]
STATIC_TOKEN = secrets.token_urlsafe(600)
BODY = "\r\n".join(["Compte rendu de consultation, examen clinique sans particularite."] * 30)


def xoauth2(token: str) -> str:
    return f"user={SENDER}\x01auth=Bearer {token}\x01\x01"


def message(tag: str, i: int) -> tuple[str, bytes]:
    to = f"dest{i % 997}@{DOMAINS[i % len(DOMAINS)]}"
    raw = (
        f"From: Claire Martin <{SENDER}>\r\nTo: {to}\r\nSubject: Compte rendu {i}\r\n"
        f"Message-ID: <bench-{tag}-{i}@{SENDER_DOMAIN}>\r\n\r\n{BODY}\r\n"
    ).encode()
    return to, raw


def submit(
    port: int, context: ssl.SSLContext, tokens: list[str], messages: int, per_connection: int,
    tag: str,
) -> None:  # fmt: skip
    """``len(tokens)`` clients share ``messages``; client c authenticates with tokens[c]."""
    clients = len(tokens)
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            mine = list(range(c, messages, clients))
            for start in range(0, len(mine), per_connection):
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                    smtp.starttls(context=context)
                    smtp.ehlo("logiciel.bench")
                    code, reply = smtp.docmd(
                        "AUTH", "XOAUTH2 " + base64.b64encode(xoauth2(tokens[c]).encode()).decode()
                    )
                    if code != 235:
                        raise RuntimeError(f"AUTH: {code} {reply!r}")
                    for i in mine[start : start + per_connection]:
                        to, raw = message(tag, i)
                        smtp.sendmail(SENDER, [to], raw)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")


def postfix_config(base: Path, sink_port: int, pki: dict[str, Any], auth_socket: Path) -> Postfix:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    conf = base / "postfix"
    transport = base / "pf-transport"
    transport.write_text("".join(f"{d} smtp:[127.0.0.1]:{sink_port}\n" for d in DOMAINS))
    sink_cert = x509.load_pem_x509_certificate(Path(pki["peer"].cert).read_bytes())
    fingerprint = sink_cert.fingerprint(hashes.SHA256()).hex(":").upper()
    del conf
    main = f"""
relay_domains = {" ".join(DOMAINS)}
mynetworks = 127.0.0.1/32
transport_maps = texthash:{transport}
# Submission (RFC 6409): TLS first, then SASL through Dovecot, relay for authenticated only.
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_cert_file = {pki["gateway"].cert}
smtpd_tls_key_file = {pki["gateway"].key}
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_client_restrictions = permit_sasl_authenticated, reject
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
# Out to the sink: its exact certificate, our client certificate, TLS connections reused.
smtp_tls_security_level = fingerprint
smtp_tls_fingerprint_digest = sha256
smtp_tls_fingerprint_cert_match = {fingerprint}
smtp_tls_CAfile = {pki["ca"].cert}
smtp_tls_cert_file = {pki["gateway"].cert}
smtp_tls_key_file = {pki["gateway"].key}
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_protocols = >=TLSv1.2
smtp_tls_session_cache_database = btree:{base}/pf-data/smtp_scache
smtp_tls_connection_reuse = yes
"""
    # tlsproxy is commented out in Debian's master.cf; connection reuse needs it.
    return Postfix(base, main=main, services="tlsproxy  unix  -  -  n  -  0  tlsproxy\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-connection", type=int, default=10)
    args = parser.parse_args()
    if subprocess.run(["which", "postfix"], capture_output=True).returncode:
        print("Postfix manque : scripts/system-deps.sh bench")
        return 2
    base = scratch("mssante-subbench-")
    web_port, sub_port, static_imaps = free_port(), free_port(), free_port()
    web = f"http://127.0.0.1:{web_port}"
    # A Redis database of its own (broker and cache), emptied first: relay_vs_postfix uses /7.
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/8"
    from devtools.pki import make_test_pki

    pki = make_test_pki(base / "pki")
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = django_setup(
        base, "mssante_bench_sub", fresh=True,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50), LPS_AUTH_SECRET=secrets.token_urlsafe(32),
        LPS_SUBMISSION_PORT=str(sub_port), LPS_LISTEN="127.0.0.1",
        LPS_TLS_CERT=str(pki["gateway"].cert), LPS_TLS_KEY=str(pki["gateway"].key),
        PSC_DISCOVERY_URL=f"{web}{DISCOVERY}", PORTAL_SITE_URL=web,
        REDIS_URL=redis_url, CACHE_URL=redis_url, CELERY_BROKER_URL=redis_url,
        RELAY_CERT=str(pki["gateway"].cert), RELAY_KEY=str(pki["gateway"].key),
        RELAY_CA_BUNDLE=str(pki["ca"].cert), RELAY_HOSTNAME=f"mx.{SENDER_DOMAIN}",
    )  # fmt: skip
    from django.conf import settings
    from django.db import connection

    from accounts.models import Structure, StructureDomain, User
    from annuaire.models import WhitelistEntry, WhitelistVersion
    from annuaire.whitelist import dn_key
    from devtools.psc_mock import tokens
    from mailboxes.console.services.lifecycle import mailbox_create
    from mailboxes.store import dovecot

    structure = Structure.objects.create(
        identifier_kind="finess_eg", identifier="690001235", name="EHPAD Les Tilleuls"
    )
    StructureDomain.objects.create(structure=structure, domain=SENDER_DOMAIN)
    user = User.objects.create(username=DOCTOR, national_id=DOCTOR, first_name="Claire",
                               last_name="Martin")  # fmt: skip
    box = mailbox_create(structure=structure, kind="PER", local_part="claire.martin",
                         display_name="Claire Martin", owner=user, actor=None)  # fmt: skip
    version = WhitelistVersion.objects.create(generated_at="2026-11-01T00:00:00Z", source="bench",
                                              sha256="0" * 64, signer_subject="bench",
                                              is_current=True)  # fmt: skip
    for d in DOMAINS:
        WhitelistEntry.objects.create(
            version=version, domain=d, dn=pki["peer"].subject, dn_key=dn_key(pki["peer"].subject)
        )
    children: list[subprocess.Popen[bytes]] = []
    static_proc = None
    try:
        with Sink(pki, processes=int(os.environ.get("SINK_PROCESSES", "2"))) as sink, \
                dovecot_running(base) as ours_store:  # fmt: skip
            # The baseline's SASL: the same Dovecot code with a static passdb, on its own.
            settings.DOVECOT_DIR = base / "dovecot-static"
            settings.DOVECOT_MAIL_ROOT = base / "dovecot-static-mail"
            settings.DOVECOT_IMAP_PORT = free_port()
            settings.LPS_IMAPS_PORT = str(static_imaps)
            static = dovecot.instance_from_settings()
            dovecot.write_instance(static, master_user=settings.DOVECOT_MASTER_USER,
                                   master_password=settings.DOVECOT_MASTER_PASSWORD)  # fmt: skip
            static_passdb(static, box.address, STATIC_TOKEN, DOCTOR)
            text = static.config_path.read_text().replace(
                "service auth {\n",
                "service auth {\n  unix_listener postfix-auth {\n    mode = 0666\n  }\n",
                1,
            )
            static.config_path.write_text(text)
            static_proc = dovecot.start(static, base / "dovecot-static.log")
            del ours_store

            routes = ",".join(f"{d}=127.0.0.1:{sink.port}" for d in DOMAINS)
            env["RELAY_ROUTES"] = routes
            log = open(base / "processes.log", "wb")  # noqa: SIM115
            gunicorn = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "mssante_portal.wsgi",
                 "--bind", f"127.0.0.1:{web_port}", "--workers", "3", "--threads", "4"],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
            submission = subprocess.Popen(
                [sys.executable, "manage.py", "run_submission", "--port", str(sub_port)],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "mssante_portal", "worker", "-Q", "relay",
                 "--concurrency", os.environ.get("RELAY_WORKERS", str(4 * (os.cpu_count() or 1))),
                 "--without-gossip", "--without-mingle", "-l", "WARNING"],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
            children += [gunicorn, submission, worker]
            wait_http(f"{web}/sante/")
            wait_banner(sub_port)
            connection.close()
            with postfix_config(
                base, sink.port, pki, static.base_dir / "run" / "postfix-auth"
            ) as pf:
                context = ssl.create_default_context(cafile=str(pki["ca"].cert))
                lps_client = settings.PSC_MOCK_LPS_CLIENT_ID

                def new_tokens() -> list[str]:
                    return [
                        tokens.access_issue(
                            sub=DOCTOR,
                            mode="CARD",
                            client_id=lps_client,
                            auth_time=int(time.time()),
                        )
                        for _ in range(args.clients)
                    ]

                sides = {
                    "ours": (sub_port, new_tokens),
                    "postfix": (pf.port, lambda: [STATIC_TOKEN] * args.clients),
                }
                watched = {"ours": [p.pid for p in children], "postfix": []}
                results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
                print(f"machine : {machine()} — machine partagée, occupée par d'autres travaux")
                counter = 0
                for r in range(-1, args.rounds):  # round -1: warm-up, not counted
                    order = list(sides) if r % 2 else list(sides)[::-1]
                    for name in order:
                        port, make = sides[name]
                        count = max(20, args.messages // 10) if r < 0 else args.messages
                        held = make()
                        sink.reset()
                        at = load()
                        cpu_before = sum(tree_cpu_seconds(pid) for pid in watched[name])
                        started = time.monotonic()
                        submit(port, context, held, count, args.per_connection, f"{name}{counter}")
                        submitted = time.monotonic() - started
                        sink.wait_for(count, 600)
                        total = time.monotonic() - started
                        cpu = sum(tree_cpu_seconds(pid) for pid in watched[name]) - cpu_before
                        counter += 1
                        if r < 0:
                            continue
                        results[name].append({"rate": count / total, "submitted": count / submitted,
                                              "cpu_ms": cpu * 1000 / count})  # fmt: skip
                        print(
                            f"tour {r + 1} {name:<8} {count / total:7.1f} msg/s soumis et relayés "
                            f"({count / submitted:7.1f} msg/s soumis)"
                            + (f", CPU {cpu * 1000 / count:.1f} ms/msg (soumission + portail + "
                               "relais)" if name == "ours" else "")
                            + f"   ({at})",
                            flush=True,
                        )  # fmt: skip
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if static_proc is not None:
            dovecot.stop(static_proc)
        import shutil

        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"gardé : {base}")
    ratios = [
        o["rate"] / p["rate"] for o, p in zip(results["ours"], results["postfix"], strict=True)
    ]
    ratio = statistics.median(ratios)
    ours = statistics.median(r["rate"] for r in results["ours"])
    theirs = statistics.median(r["rate"] for r in results["postfix"])
    print(
        f"\n{args.messages} messages de 2 Ko par tour et par côté, {args.clients} logiciels, "
        f"{args.per_connection} messages par connexion, 1 destinataire, {args.rounds} tours "
        f"alternés ; {load()}\nnous {ours:.1f} msg/s contre Postfix {theirs:.1f} : ratio médian "
        f"{ratio:.2f} (de {min(ratios):.2f} à {max(ratios):.2f})"
    )
    emit(
        Figure("submission", "Soumission XOAUTH2 puis relais vers un puits TLS (messages/s, "
               "1 destinataire)", round(ours, 1), "msg/s", round(theirs, 1),
               "Postfix 3.7 en soumission (SASL Dovecot, jeton fixe) relayant au même puits",
               "", None, ratio),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
