"""Writing safely, on the server's side (issue 19): reply and forward prefixes, page titles and
the quoted header in local time; INS typed as printed, several patients; attachments that
survive a refused recipient; blind copies. The browser's side is test_compose_safely_browser.py.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from mailboxes.models import OutboundDelivery, OutboundMessage, Signature
from mailboxes.webmail.services.compose import subject_prefixed
from tests.factories import grant, make_mailbox, make_message, make_professional
from tests.mailboxes.conftest import deliver
from tests.mailboxes.test_compose import (
    PATIENT_INS,
    REMOTE,
    _client,
    _drafts,
    _post,
    _sent,
    doctor,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.django_db(transaction=True)
OTHER_PATIENT = "146026322000196"
SAMPLE = Path("/work/shared/samples/cda/DLU-EHPAD-FLUDT_2022.01.xml")  # a real public CDA


@pytest.mark.parametrize(
    ("subject", "prefix", "expected"),
    [
        ("Rendez-vous du 3 décembre", "RE", "RE : Rendez-vous du 3 décembre"),
        ("Relance bilan", "RE", "RE : Relance bilan"),
        ("Réunion", "RE", "RE : Réunion"),
        ("RE : Bilan", "RE", "RE : Bilan"),
        ("Re: Bilan", "RE", "Re: Bilan"),
        ("re : Bilan", "RE", "re : Bilan"),
        ("AW: Bilan", "RE", "AW: Bilan"),
        ("RE[2]: Bilan", "RE", "RE[2]: Bilan"),
        ("TR : Bilan", "RE", "RE : TR : Bilan"),
        ("Transfert en EHPAD", "TR", "TR : Transfert en EHPAD"),
        ("Travaux", "TR", "TR : Travaux"),
        ("TR : Bilan", "TR", "TR : Bilan"),
        ("Fwd: Bilan", "TR", "Fwd: Bilan"),
        ("FW: Bilan", "TR", "FW: Bilan"),
        ("RE : Bilan", "TR", "TR : RE : Bilan"),
        ("", "RE", "RE : "),
    ],
)
def test_a_prefix_is_added_only_when_the_subject_has_none_of_its_kind(
    subject: str, prefix: str, expected: str
) -> None:
    assert subject_prefixed(subject, prefix).strip() == expected.strip()


def test_reply_and_forward_pages_are_titled_and_prefixed_and_quote_in_local_time(doctor) -> None:  # noqa: F811
    user, box = doctor
    deliver(
        box.address,
        make_message(
            to=box.address,
            subject="Rendez-vous de Mme D.",
            sender=f"Dr Durand <{REMOTE}>",
            date="Mon, 30 Nov 2026 08:15:00 +0000",
        ),
    )
    reply = _client(user).get(f"/bal/{box.public_id}/ecrire/?mode=repondre&uid=1&dossier=INBOX")
    text = reply.content.decode()
    assert "<title>Répondre ·" in text and "<h1>Répondre</h1>" in text
    assert 'value="RE : Rendez-vous de Mme D."' in text
    assert "Le 30/11/2026 à 09:15, " in text  # 08:15 UTC is 09:15 in Paris

    forward = _client(user).get(f"/bal/{box.public_id}/ecrire/?mode=transferer&uid=1&dossier=INBOX")
    text = forward.content.decode()
    assert "<title>Transférer ·" in text and "<h1>Transférer</h1>" in text
    assert 'value="TR : Rendez-vous de Mme D."' in text

    new = _client(user).get(f"/bal/{box.public_id}/ecrire/").content.decode()
    assert "<h1>Nouveau message</h1>" in new


def test_an_ins_typed_with_spaces_is_accepted_live_and_on_send(doctor) -> None:  # noqa: F811
    user, _box = doctor
    printed = "2 79 03 51 215 189 89"
    check = _client(user).get("/bal/destinataires/verifier/", {"ins": printed})
    page = check.content.decode()
    assert "Une femme, née en mars 1979, née dans le département 51" in page
    assert "mal formée" not in page and "invalide" not in page

    sent = _post(user, _box, ins=printed, confirmation_patient="on")
    assert sent.status_code == 302
    [row] = OutboundDelivery.objects.all()
    assert row.recipient == f"{PATIENT_INS}@patient.mssante.fr"


def test_several_patients_per_message_are_accepted(doctor) -> None:  # noqa: F811
    # Nothing in the référentiel forbids it (mssante-spec §2.1: Ref#2 v0.1 removed EX_DC_1.1).
    user, box = doctor
    typed = f"2 79 03 51 215 189 89 ; {OTHER_PATIENT}"
    first = _post(user, box, ins=typed)
    assert first.status_code == 400
    page = first.content.decode()
    assert "Une femme, née en mars 1979" in page and "Un homme, né en février 1946" in page
    assert _post(user, box, ins=typed, confirmation_patient="on").status_code == 302
    assert sorted(OutboundDelivery.objects.values_list("recipient", flat=True)) == [
        f"{OTHER_PATIENT}@patient.mssante.fr",
        f"{PATIENT_INS}@patient.mssante.fr",
    ]


def test_a_wrong_ins_among_several_is_named(doctor) -> None:  # noqa: F811
    user, box = doctor
    response = _post(user, box, ins=f"{PATIENT_INS}, 2 79 03 51 215 189 88")
    assert response.status_code == 400
    assert "279035121518988 : La clé du matricule INS ne correspond pas" in (
        response.content.decode().replace("&#x27;", "'")
    )
    assert not OutboundMessage.objects.exists()


def test_attachments_survive_a_refused_recipient(doctor) -> None:  # noqa: F811
    user, box = doctor
    token = "fedcba9876543210fedcba9876543210"
    refused = _post(
        user,
        box,
        a="jean.dupont@gmail.com",
        brouillon=token,
        pieces=SimpleUploadedFile("bilan.pdf", b"%PDF-1.4 bilan", content_type="application/pdf"),
    )
    assert refused.status_code == 400
    page = refused.content.decode()
    assert "hors espace de confiance" in page
    assert "bilan.pdf" in page and "Joignez de nouveau" not in page
    [kept] = _drafts(box)
    assert [p.get_filename() for p in kept.iter_attachments()] == ["bilan.pdf"]
    found = re.search(r'name="brouillon_uid" value="(\d+)"', page)
    assert found, "the page resumes from the draft that keeps the attachments"

    sent = _post(user, box, a=REMOTE, brouillon=token, brouillon_uid=found.group(1))
    assert sent.status_code == 302
    [copy] = _sent(box)
    assert [p.get_filename() for p in copy.iter_attachments()] == ["bilan.pdf"]
    assert _drafts(box) == []


def test_a_blind_copy_is_delivered_and_never_shown(doctor) -> None:  # noqa: F811
    user, box = doctor
    colleague = "dr.blanc@operateur-test.mssante.fr"
    assert _post(user, box, a=REMOTE, cci=colleague).status_code == 302
    assert sorted(OutboundDelivery.objects.values_list("recipient", flat=True)) == [
        colleague,
        REMOTE,
    ]
    [copy] = _sent(box)
    assert "Bcc" not in copy and colleague not in copy.as_string()


def test_each_person_signs_with_their_own_signature_per_bal(doctor) -> None:  # noqa: F811
    user, box = doctor
    team = make_mailbox(structure=box.structure, kind="ORG", local_part="soins", responsible=user)
    grant(team, user, can_send=True)
    colleague = make_professional(first_name="Paul", last_name="Roux")
    grant(team, colleague, can_send=True)
    mine = _client(user).post(
        f"/bal/{team.public_id}/signature/", {"texte": "Claire MARTIN\r\nIDE, équipe soins  "}
    )
    assert mine.status_code == 302
    _client(colleague).post(f"/bal/{team.public_id}/signature/", {"texte": "Paul ROUX"})

    page = _client(user).get(f"/bal/{team.public_id}/ecrire/").content.decode()
    assert "\n\n-- \nClaire MARTIN\nIDE, équipe soins\n</textarea>" in page
    theirs = _client(colleague).get(f"/bal/{team.public_id}/ecrire/").content.decode()
    assert "-- \nPaul ROUX" in theirs and "Claire MARTIN" not in theirs
    own = _client(user).get(f"/bal/{box.public_id}/ecrire/").content.decode()
    assert "Claire MARTIN\nIDE" not in own  # her personal BAL has no signature yet

    form = _client(user).get(f"/bal/{team.public_id}/signature/").content.decode()
    assert "Claire MARTIN\nIDE, équipe soins</textarea>" in form
    _client(user).post(f"/bal/{team.public_id}/signature/", {"texte": "  "})  # blank: none
    assert list(Signature.objects.values_list("user__last_name", flat=True)) == ["Roux"]


def test_a_reply_is_signed_above_the_quote_and_a_forward_is_not(doctor) -> None:  # noqa: F811
    user, box = doctor
    _client(user).post(f"/bal/{box.public_id}/signature/", {"texte": "Dr Claire MARTIN"})
    deliver(box.address, make_message(to=box.address, subject="Avis", body="Question ?"))
    base = f"/bal/{box.public_id}/ecrire/?uid=1&dossier=INBOX&mode="
    reply = _client(user).get(base + "repondre").content.decode()
    assert "\n\n-- \nDr Claire MARTIN\n\nLe 16/11/2026 à 09:30, " in reply
    assert "&gt; Question ?" in reply
    forward = _client(user).get(base + "transferer").content.decode()
    assert "Dr Claire MARTIN" not in forward


def test_a_signature_needs_the_send_right_and_no_control_character(doctor) -> None:  # noqa: F811
    user, box = doctor
    team = make_mailbox(structure=box.structure, kind="ORG", local_part="accueil", responsible=user)
    reader = make_professional(first_name="Julien", last_name="Bernard")
    grant(team, reader, can_send=False)
    assert _client(reader).get(f"/bal/{team.public_id}/signature/").status_code == 403
    outsider = make_professional(first_name="Inconnu", last_name="Dehors")
    assert _client(outsider).get(f"/bal/{box.public_id}/signature/").status_code == 404
    bad = _client(user).post(f"/bal/{box.public_id}/signature/", {"texte": "Dr\x1b[31m MARTIN"})
    assert bad.status_code == 400 and "caractère de contrôle" in bad.content.decode()
    assert not Signature.objects.exists()


def _with_attachment(to: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Dr Durand <{REMOTE}>"
    message["To"] = to
    message["Subject"] = "DLU de Mme D."
    message["Date"] = "Mon, 30 Nov 2026 08:15:00 +0000"
    message["Message-ID"] = "<dlu.1@operateur-test.mssante.fr>"
    message.set_content("Voici le DLU.")
    message.add_attachment(
        SAMPLE.read_bytes(), maintype="text", subtype="xml", filename=SAMPLE.name
    )
    return message.as_bytes()


def test_a_forward_puts_the_text_in_the_body_or_attaches_the_message(doctor) -> None:  # noqa: F811
    user, box = doctor
    deliver(box.address, _with_attachment(box.address))
    base = f"/bal/{box.public_id}/ecrire/?uid=1&dossier=INBOX&mode="
    inline = _client(user).get(base + "transferer-texte").content.decode()
    assert "-------- Message transféré --------\nDe : Dr Durand &lt;" in inline
    assert "Date : 30/11/2026 à 09:15\nObjet : DLU de Mme D.\n" in inline
    assert "Voici le DLU." in inline and "Joindre plutôt le message tel quel" in inline
    attached = _client(user).get(base + "transferer").content.decode()
    assert "Reprendre plutôt son texte dans le message" in attached

    sent = _post(user, box, a=REMOTE, objet="TR : DLU", transfert="INBOX:1", transfert_texte="True")
    assert sent.status_code == 302
    _post(user, box, a=REMOTE, objet="TR : DLU (tel quel)", transfert="INBOX:1")
    by_subject = {str(m["Subject"]): m for m in _sent(box)}
    inline_parts = list(by_subject["TR : DLU"].iter_attachments())
    assert [(p.get_filename(), p.get_content_type()) for p in inline_parts] == [
        (SAMPLE.name, "application/xml")
    ]
    assert inline_parts[0].get_payload(decode=True) == SAMPLE.read_bytes()
    [whole] = list(by_subject["TR : DLU (tel quel)"].iter_attachments())
    assert whole.get_content_type() == "message/rfc822"


def test_a_draft_keeps_its_blind_copies(doctor) -> None:  # noqa: F811
    user, box = doctor
    token = "00112233445566778899aabbccddeeff"
    saved = _post(user, box, action="brouillon", brouillon=token, a=REMOTE, cci="x@y.mssante.fr")
    page = _client(user).get(saved["Location"]).content.decode()
    assert 'name="cci" id="id_cci" class="recipients-input" value="x@y.mssante.fr"' in page


def test_a_reply_refused_is_still_titled_a_reply(doctor) -> None:  # noqa: F811
    user, box = doctor
    refused = _post(user, box, a="x@gmail.com", en_reponse_a="<a.1@operateur-test.mssante.fr>")
    assert refused.status_code == 400 and "<h1>Répondre</h1>" in refused.content.decode()
