"""What the « Documents de santé » panel costs when a message is opened (issue 20, « Measured »).

Delivers over LMTP, to a private Dovecot, one message carrying an IHE_XDM.ZIP of 10 level-1 CDA
documents (about 5 MB: each CDA wraps a PDF of ~500 kB, the archive beside a short text), and
the same message with the archive under another name (same bytes, same MIME parse, no panel).
Then opens both message pages through Django's full stack (session, access check, IMAP fetch,
trace, template), interleaved round by round, and prints p50/p95 of each, the difference, and
the peak memory of the process (ru_maxrss) and of one panel parse (tracemalloc).
Goal (issue 20): the panel adds at most 100 ms at p95.

    PORTAL_ENV=test .venv/bin/python bench/xdm_open.py [--rounds 40] [--documents 10]

Uses PostgreSQL from DATABASE_URL (database `mssante_bench`, created if missing).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import smtplib
import statistics
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import django_setup, dovecot_running, load, pct, scratch
from report import Figure, emit

GOAL_MS = 100.0


def archive_of(documents: int, pdf_size: int, rng: random.Random) -> bytes:
    """An IHE_XDM.ZIP of ``documents`` level-1 CDA, one subset each (readers enumerate every
    IHE_XDM/*/METADATA.XML), built by the same code the webmail sends with."""
    import io
    import zipfile

    from mailboxes.documents.build import (
        CDA_NAME,
        DOCUMENT_TYPES,
        AuthorIdentity,
        PatientIdentity,
        build_cda,
        metadata_of,
    )

    patient = PatientIdentity(
        ins="279035121518989", family="PAT-TROIS", given="Dominique",
        birth_date=date(1979, 3, 28), sex="F", qualified=True, test_identity=True,
    )  # fmt: skip
    author = AuthorIdentity(
        national_id="899700120019", family="MARTIN", given="Claire",
        structure_name="EHPAD Les Tilleuls", structure_id="1690001235",
    )  # fmt: skip
    codes = list(DOCUMENT_TYPES)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.TXT", b"Archive IHE XDM de banc d'essai\r\n")
        archive.writestr("INDEX.HTM", b"<html><body><a href='README.TXT'>README</a></body></html>")
        for n in range(1, documents + 1):
            # Random bytes between a PDF header and trailer: incompressible, like a scan.
            pdf = b"%PDF-1.4\n" + rng.randbytes(pdf_size) + b"\n%%EOF\n"
            fields = {
                "patient": patient,
                "author": author,
                "type_code": codes[n % len(codes)],
                "act_date": date(2026, 11, n),
                "document_id": uuid.UUID(int=rng.getrandbits(128)),
                "now": datetime(2026, 12, 1, 10, n, tzinfo=UTC),
            }
            cda = build_cda(pdf=pdf, **fields)  # type: ignore[arg-type]
            subset = f"IHE_XDM/SUBSET{n:02d}"
            archive.writestr(f"{subset}/METADATA.XML", metadata_of(cda=cda, **fields))  # type: ignore[arg-type]
            archive.writestr(f"{subset}/{CDA_NAME}", cda)
    return out.getvalue()


def message_with(archive: bytes, name: str, to: str, number: int) -> bytes:
    message = EmailMessage()
    message["From"] = "Dr_Paul_DURAND_CHU Lyon <paul.durand@chu-lyon.mssante.fr>"
    message["To"] = to
    message["Subject"] = "XDM/1.0/DDM+10 documents PAT-TROIS Dominique 28/03/1979"
    message["Date"] = "Tue, 01 Dec 2026 10:00:00 +0100"
    message["Message-ID"] = f"<bench-xdm-{number}@chu-lyon.mssante.fr>"
    message["X-MSS-CODECDA"] = "74207-2"
    message["X-MSS-INS"] = "O"
    message.set_content("Bonjour,\n\nVeuillez trouver les documents de Mme PAT-TROIS.\n")
    message.add_attachment(archive, maintype="application", subtype="zip", filename=name)
    return message.as_bytes()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--documents", type=int, default=10)
    parser.add_argument("--pdf-kb", type=int, default=500)
    args = parser.parse_args()

    base = scratch("mssante-bench-")
    django_setup(base, "mssante_bench")
    from accounts.models import Structure, StructureDomain, User
    from mailboxes.console.services.lifecycle import mailbox_create
    from mailboxes.models import Mailbox

    structure, _ = Structure.objects.get_or_create(
        identifier_kind="finess_eg", identifier="690001235", defaults={"name": "EHPAD Les Tilleuls"}
    )
    StructureDomain.objects.get_or_create(
        structure=structure, domain="ehpad-les-tilleuls.mssante.fr"
    )
    user, _ = User.objects.get_or_create(
        username="899700120019", defaults={"national_id": "899700120019", "first_name": "Claire"}
    )
    address = "claire.martin@ehpad-les-tilleuls.mssante.fr"
    box = Mailbox.objects.filter(address=address).first() or mailbox_create(
        structure=structure,
        kind="PER",
        local_part="claire.martin",
        display_name="Claire Martin",
        owner=user,
        actor=None,
    )
    print(f"Machine : {load()}")
    try:
        with dovecot_running(base) as instance:
            return measure(args, box, user, instance)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure(args: argparse.Namespace, box: Any, user: Any, instance: Any) -> int:
    """Deliver both messages, open both pages round by round, print and emit the figures."""
    from django.test import Client

    from mailboxes.webmail.services.documents import documents_of

    rng = random.Random(20)
    archive = archive_of(args.documents, args.pdf_kb * 1024, rng)
    with_panel = message_with(archive, "IHE_XDM.ZIP", box.address, 1)
    # Same bytes, a name the panel ignores: what the page costs without it.
    without = message_with(archive, "IHE_XDM.DAT", box.address, 2)
    print(
        f"Archive : {args.documents} documents, {len(archive) / 1048576:.1f} Mo ; "
        f"message : {len(with_panel) / 1048576:.1f} Mo"
    )
    with smtplib.LMTP(str(instance.lmtp_socket)) as lmtp:
        lmtp.sendmail("labo@bio.mssante.fr", [box.address], with_panel)  # UID 1
        lmtp.sendmail("labo@bio.mssante.fr", [box.address], without)  # UID 2

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)

    def page(uid: int) -> float:
        started = time.perf_counter()
        response = client.get(f"/bal/{box.public_id}/messages/{uid}/?dossier=INBOX")
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200
        shown = b"Documents de sant" in response.content
        assert shown == (uid == 1), "the panel must show on UID 1 only"
        return elapsed

    for _ in range(3):  # warm caches on both sides
        page(1)
        page(2)
    results: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for uid in (1, 2) if r % 2 else (2, 1):
            results[uid].append(page(uid))

    tracemalloc.start()
    documents = documents_of(with_panel)
    _current, parse_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(documents.archives[0][1].documents) == args.documents
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    print(f"\n{'mesure (ms)':<38}{'p50':>8}{'p95':>8}")
    for uid, label in ((1, "message avec le panneau"), (2, "même message, sans panneau")):
        values = results[uid]
        print(f"{label:<38}{statistics.median(values):8.1f}{pct(values, 95):8.1f}")
    added = pct(results[1], 95) - pct(results[2], 95)
    print(f"\nsurcoût p95 du panneau : {added:.1f} ms (objectif <= {GOAL_MS:.0f} ms)")
    print(
        f"mémoire : pic du processus {rss:.0f} Mo (ru_maxrss), "
        f"pic d'une lecture du panneau {parse_peak / 1048576:.1f} Mo (tracemalloc)"
    )
    emit(
        Figure("xdm_open", f"Ouvrir un message avec {args.documents} documents de santé "
               f"({len(with_panel) / 1048576:.0f} Mo, p95)", pct(results[1], 95), "ms",
               pct(results[2], 95), "le même message sans le panneau (p95)",
               f"surcoût <= {GOAL_MS:.0f} ms", added <= GOAL_MS, None),
        Figure("xdm_open", "Surcoût du panneau Documents de santé (p95)", added, "ms",
               None, "", f"<= {GOAL_MS:.0f} ms", added <= GOAL_MS, None),
        Figure("xdm_open", "Pic mémoire d'une lecture du panneau (tracemalloc)",
               round(parse_peak / 1048576, 1), "Mo"),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
