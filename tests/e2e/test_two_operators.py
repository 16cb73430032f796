"""Two operators, one trust space, in Chromium (issue 8).

Both instances run for real (devtools/trust_space.py): web, gateway, relay worker, Dovecot, PSC
mock, each with its own database and certificate; a signed test whitelist lists both. A local
TLS server stands in for patient.mssante.fr. Screenshots of every step are kept in
var/e2e-artifacts/ (the test's artifacts).

1. The director of the EHPAD at A creates the ORG BAL soins@ and adds a nurse.
2. A doctor at B finds soins@ in the annuaire, writes with an attachment, a delivery and a
   read receipt request; he sees « Remis » once A's gateway has it (success DSN back to B).
3. The nurse at A sees it in soins@, opens it, sends the read receipt, answers.
4. The doctor sees « Lu » and the answer in his inbox.
5. The doctor writes to a patient (INS) with « Bloquer la réponse »: the stand-in receives it
   with X-MSS-MES: FIN.
5b. The doctor sends the resident's DLU to soins@ as a health document (CDA in IHE_XDM.ZIP,
   issue 20): the nurse at A opens it and A's reader shows the patient, hashes conforming.
6. The audit trail at A names who read and who answered on the ORG BAL.
"""

from __future__ import annotations

import email
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.sync_api import Browser, FilePayload, Page, expect

from devtools.pki import crl_paths
from devtools.runner import ROOT, free_port
from devtools.trust_space import TrustSpace
from mailboxes.transport.gateway.server import smtp_kwargs, tls_context
from tests.mailboxes.xdm_build import tiny_pdf

ARTIFACTS = ROOT / "var" / "e2e-artifacts"
DIRECTOR, NURSE, DOCTOR_B = "LEFEBVRE", "BERNARD", "HADDAD"
SOINS = "soins@ehpad-les-tilleuls.mssante.fr"
PATIENT_INS = "279035121518989"
SUBJECT = "Transmission : Mme D., retour d'hospitalisation"
PASSED: list[bool] = []


class PatientServer:
    """What the stand-in for Mon Espace Santé received."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 2.0.0 Ok: queued"


@pytest.fixture(scope="module")
def patient_port() -> Iterator[tuple[int, PatientServer]]:
    yield (free_port(), PatientServer())


@pytest.fixture(scope="module")
def space(patient_port: Any) -> Iterator[TrustSpace]:
    port, handler = patient_port
    # Dovecot's unprivileged processes must traverse the path (pytest's tmp dirs are 0700).
    base = Path(tempfile.mkdtemp(prefix="mssante-e2e-"))
    base.chmod(0o755)
    trust = TrustSpace(base / "space", patient_port=port)
    trust.start()
    warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
    context = tls_context(
        cert=str(trust.pki["patient"].cert),
        key=str(trust.pki["patient"].key),
        ca_bundle=str(trust.pki["ca"].cert),
        crl_file=str(crl_paths(trust.base / "pki")[1]),  # the stand-in checks revocation too
    )
    kwargs = smtp_kwargs(context)
    kwargs.pop("hostname", None)
    sink = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    sink.start()
    try:
        yield trust
    finally:
        sink.stop()
        died = trust.died()
        trust.stop()
        if died is None and PASSED:
            shutil.rmtree(base, ignore_errors=True)  # kept (logs, databases) when it failed
        assert died is None, f"process {died} died during the journey (see {trust.base})"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base: str, name: str) -> None:
    """Through the operator's PSC mock, as the person would."""
    page.goto(f"{base}/connexion/")
    page.get_by_role("button", name="Se connecter avec Pro Santé Connect").click()
    page.get_by_label(re.compile(name, re.IGNORECASE)).first.check()
    page.get_by_label(re.compile(r"Carte CPS")).check()
    page.get_by_role("button", name="Se connecter", exact=True).click()
    expect(page.get_by_role("button", name="Se déconnecter")).to_be_visible()


def choose(page: Page, label: str, text: str) -> None:
    """Pick the option of a select whose text contains ``text``."""
    select = page.get_by_label(label)
    value = select.locator("option", has_text=text).first.get_attribute("value")
    assert value, f"no « {text} » in « {label} »"
    select.select_option(value=value)


def until(page: Page, url: str, ready: Callable[[], bool], what: str, seconds: float = 90) -> None:
    """Reload ``url`` until ``ready()``: mail travels between processes, not instantly."""
    deadline = time.monotonic() + seconds
    while True:
        page.goto(url)
        if ready():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {seconds} s")
        time.sleep(1.5)


def test_two_operators_one_trust_space(
    space: TrustSpace, browser: Browser, patient_port: Any
) -> None:
    a, b = space.a.url, space.b.url

    # 1. The director at A creates soins@ and adds the nurse.
    director = browser.new_context(locale="fr-FR").new_page()
    sign_in(director, a, DIRECTOR)
    director.get_by_role("link", name="Console").click()
    director.get_by_role("link", name="EHPAD Les Tilleuls").click()
    director.get_by_role("link", name="Nouvelle BAL organisationnelle").click()
    director.get_by_label("Adresse", exact=True).fill("soins")
    director.get_by_label("Nom affiché").fill("Équipe soignante")
    choose(director, "Professionnel responsable", DIRECTOR)
    director.get_by_label("Service de rattachement").fill("Soins")
    director.get_by_role("button", name="Créer la BAL").click()
    expect(director.get_by_text(f"La BAL {SOINS} est créée.")).to_be_visible()
    choose(director, "Personne", NURSE)
    director.get_by_label("Droits").select_option(label="Lecture, classement et envoi")
    director.get_by_role("button", name="Ajouter ou modifier").click()
    expect(director.locator("#droits table")).to_contain_text(NURSE)
    shot(director, "01-A-directeur-cree-soins-et-ajoute-infirmier")
    space.publish_directory()  # the Annuaire Santé publishes soins@ to every operator

    # 2. The doctor at B finds soins@ in the annuaire and writes, with receipts.
    doctor = browser.new_context(locale="fr-FR").new_page()
    sign_in(doctor, b, DOCTOR_B)
    doctor.goto(f"{b}/annuaire/")
    doctor.get_by_label("Des structures").check()
    doctor.get_by_label("Nom de la structure").fill("Tilleuls")
    doctor.get_by_role("button", name="Rechercher").click()
    result = doctor.locator("li, tr, article").filter(has_text=SOINS).last
    expect(result).to_be_visible()
    shot(doctor, "02-B-medecin-trouve-soins-dans-l-annuaire")
    result.get_by_role("link", name="Écrire").click()
    expect(doctor.get_by_label("À", exact=True)).to_have_value(SOINS)
    doctor.get_by_label("Objet").fill(SUBJECT)
    body = "Bonjour,\n\nCompte rendu en pièce jointe.\n\nDr Haddad"
    doctor.get_by_label("Message", exact=True).fill(body)
    report: FilePayload = {
        "name": "compte-rendu.pdf",
        "mimeType": "application/pdf",
        "buffer": b"%PDF-1.4\n% compte rendu de test\n%%EOF\n",
    }
    doctor.get_by_label("Pièces jointes").set_input_files(files=[report])
    doctor.get_by_label("Demander un accusé de réception").check()
    doctor.get_by_label("Demander un accusé de lecture").check()
    doctor.get_by_role("button", name="Envoyer", exact=True).click()
    expect(doctor.get_by_text(re.compile("envoyé", re.IGNORECASE)).first).to_be_visible()
    sent_list = f"{b}/bal/"
    doctor.goto(sent_list)
    doctor.get_by_role("link", name=re.compile("karim.haddad@")).first.click()
    sent_folder = doctor.url.split("?")[0] + "?dossier=Sent"
    doctor.goto(sent_folder)
    doctor.get_by_role("link", name=SUBJECT).first.click()
    sent_message = doctor.url
    status = doctor.locator(".delivery-status")
    until(doctor, sent_message, lambda: "Remis" in status.inner_text(), "« Remis » at B")
    shot(doctor, "03-B-message-remis")

    # 3. The nurse at A opens soins@, sends the read receipt, answers.
    nurse = browser.new_context(locale="fr-FR").new_page()
    sign_in(nurse, a, NURSE)
    nurse.goto(f"{a}/bal/")
    nurse.get_by_role("link", name=SOINS).first.click()
    inbox = nurse.url
    until(nurse, inbox, lambda: nurse.get_by_text(SUBJECT).count() > 0, "the message at A")
    nurse.get_by_role("link", name=SUBJECT).first.click()
    expect(nurse.get_by_text("compte-rendu.pdf")).to_be_visible()
    shot(nurse, "04-A-infirmier-lit-le-message")
    nurse.get_by_role("button", name="Envoyer l'accusé de lecture").click()
    nurse.get_by_role("link", name="Répondre", exact=True).click()
    nurse.get_by_label("Message", exact=True).fill("Bien reçu, merci. L'équipe soignante.")
    nurse.get_by_role("button", name="Envoyer", exact=True).click()
    expect(nurse.get_by_text(re.compile("envoyé", re.IGNORECASE)).first).to_be_visible()
    shot(nurse, "05-A-infirmier-a-repondu")

    # 4. The doctor sees « Lu », then the answer in his inbox.
    until(doctor, sent_message, lambda: "Lu" in status.inner_text(), "« Lu » at B")
    shot(doctor, "06-B-message-lu")
    doctor_inbox = sent_folder.replace("dossier=Sent", "dossier=INBOX")
    answer = doctor.get_by_text(f"RE : {SUBJECT}")
    until(doctor, doctor_inbox, lambda: answer.count() > 0, "the answer at B")
    shot(doctor, "07-B-reponse-recue")

    # 5. The doctor writes to a patient and blocks the reply.
    _port, patient = patient_port
    doctor.goto(sent_folder.split("?")[0].rstrip("/") + "/ecrire/")
    doctor.get_by_label("INS du patient").fill(PATIENT_INS)
    doctor.get_by_label("INS du patient").blur()
    confirm = doctor.get_by_label("Je confirme que ces informations correspondent au patient.")
    expect(confirm).to_be_visible()
    expect(doctor.get_by_text("Une femme, née en mars 1979")).to_be_visible()
    confirm.check()
    doctor.get_by_label("Objet").fill("Vos résultats")
    doctor.get_by_label("Message", exact=True).fill("Madame, vos résultats sont normaux.")
    doctor.get_by_label(re.compile("Bloquer la réponse")).check()
    doctor.get_by_role("button", name="Envoyer", exact=True).click()
    expect(doctor.get_by_text(re.compile("envoyé", re.IGNORECASE)).first).to_be_visible()
    shot(doctor, "08-B-message-au-patient")
    deadline = time.monotonic() + 60
    while not patient.received and time.monotonic() < deadline:
        time.sleep(0.5)
    assert patient.received, "the patient stand-in received nothing"
    envelope = patient.received[0]
    assert envelope.rcpt_tos == [f"{PATIENT_INS}@patient.mssante.fr"]
    message = email.message_from_bytes(envelope.original_content or b"")
    assert message["X-MSS-MES"] == "FIN"

    # 5b. A health document from B to A: built by B's compose, read by A's panel.
    doctor.goto(sent_folder.split("?")[0].rstrip("/") + "/ecrire/")
    doctor.get_by_role("textbox", name="À", exact=True).fill(SOINS)
    doctor.get_by_label("Message", exact=True).fill("Le DLU de Mme D. pour son retour.")
    doctor.get_by_text("Joindre un document de santé").click()
    dlu: FilePayload = {
        "name": "dlu.pdf",
        "mimeType": "application/pdf",
        "buffer": tiny_pdf("DLU"),
    }
    doctor.get_by_label("Document (PDF)").set_input_files(files=[dlu])
    doctor.get_by_label("Type de document").select_option("74207-2")
    doctor.get_by_label("Date de l'acte").fill("2026-12-01")
    doctor.get_by_label("Matricule INS (patient concerné)").fill(PATIENT_INS)
    doctor.get_by_label("Nom de naissance", exact=True).fill("Pat-Trois")
    doctor.get_by_label("Premier prénom de naissance").fill("Dominique")
    doctor.get_by_label("Date de naissance", exact=True).fill("1979-03-28")
    doctor.get_by_label("Sexe").select_option("F")
    doctor.get_by_label("Identité qualifiée").check()
    doctor.get_by_role("button", name="Envoyer", exact=True).click()
    expect(doctor.get_by_text(re.compile("envoyé", re.IGNORECASE)).first).to_be_visible()
    shot(doctor, "08b-B-document-de-sante-envoye")
    dlu_subject = "Document de liaison d'urgence PAT-TROIS Dominique 28/03/1979"
    dlu_row = nurse.get_by_role("link", name=dlu_subject)
    until(nurse, inbox, lambda: dlu_row.count() > 0, "the health document at A")
    dlu_row.first.click()
    panel = nurse.get_by_role("region", name="Documents de santé")
    expect(panel).to_contain_text(PATIENT_INS)
    expect(panel).to_contain_text("Document de liaison d'urgence")
    expect(panel).to_contain_text("Empreinte et taille conformes")
    expect(panel).to_contain_text("INS qualifiée annoncée (O)")
    shot(nurse, "08c-A-infirmier-lit-le-document-de-sante")

    # 6. The audit trail at A: who read and who answered, on soins@.
    director.goto(f"{a}/console/")
    director.get_by_role("link", name="EHPAD Les Tilleuls").click()
    director.get_by_role("link", name="Journal").click()
    director.get_by_label("BAL").select_option(label=SOINS)
    director.get_by_role("button", name="Filtrer").click()
    journal = director.locator("table.journal")
    expect(journal).to_contain_text("Lecture d'un message")
    expect(journal).to_contain_text("Envoi d'un message")
    expect(journal).to_contain_text("Envoi d'un accusé de lecture")
    rows = journal.locator("tbody tr")
    readers = [rows.nth(i).inner_text() for i in range(rows.count())]
    assert any(NURSE in r.upper() and "Lecture d'un message" in r for r in readers)
    assert any(NURSE in r.upper() and "Envoi d'un message" in r for r in readers)
    shot(director, "09-A-journal-de-soins")
    assert Path(ARTIFACTS / "09-A-journal-de-soins.png").exists()
    PASSED.append(True)
