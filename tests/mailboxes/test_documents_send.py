"""Sending a health document (issue 20, « Sending »): a PDF typed in compose leaves as a CDA
R2 level-1 in an IHE_XDM.ZIP with its PDF/A, the subject of ECO.2.1.3 and the MSSanté headers;
the CDA is schema-valid, the XDS metadata repeat its header field by field, and our own reader
opens what we send after the real path (spool, relay, LMTP, Dovecot)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import html
import io
import zipfile
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from lxml import etree

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse

from accounts.models import AuditEvent, User
from mailboxes.documents.build import (
    CDA_NAME,
    CDA_SCHEMA,
    AuthorIdentity,
    HealthDocument,
    PatientIdentity,
    cda_problems,
    health_document_build,
)
from mailboxes.documents.xdm import (
    AUTHOR,
    CONFIDENTIALITY_CODE,
    PATIENT_ID,
    RIM,
    TYPE_CODE,
    read_archive,
)
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store.imap import MailStore
from mailboxes.transport.relay import message_relay
from tests.factories import SHARED, make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.xdm_build import tiny_pdf

H = "{urn:hl7-org:v3}"
PATIENT_INS = "279035121518989"  # the ANS samples' test INS (valid key)


def nia(prefix: str = "7790351215189") -> str:
    """A temporary number (NIA, first digit 7) with its key (97 - n mod 97)."""
    return f"{prefix}{97 - int(prefix) % 97:02d}"


PATIENT = PatientIdentity(
    ins=PATIENT_INS,
    family="Pat-Trois Élise",
    given="Dominique",
    birth_date=date(1979, 3, 28),
    sex="F",
    qualified=True,
    test_identity=True,
)
AUTHOR_ID = AuthorIdentity(
    national_id="810001234567",
    family="MARTIN",
    given="Claire",
    structure_name="EHPAD Les Tilleuls & Cie",
    structure_id="1750803447",
)
NOW = datetime(2026, 12, 3, 14, 5, 9, tzinfo=UTC)


def _built(patient: PatientIdentity = PATIENT, type_code: str = "74207-2") -> HealthDocument:
    return health_document_build(
        pdf=tiny_pdf(),
        patient=patient,
        author=AUTHOR_ID,
        type_code=type_code,
        act_date=date(2026, 12, 1),
        sender="claire.martin@ehpad.mssante.fr",
        now=NOW,
    )


@pytest.fixture(scope="module")
def built() -> HealthDocument:
    return _built()


def _entries(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def test_the_archive_has_the_xdm_layout(built: HealthDocument) -> None:
    entries = _entries(built.archive)
    assert sorted(entries) == [
        "IHE_XDM/SUBSET01/DOC0001.XML",
        "IHE_XDM/SUBSET01/METADATA.XML",
        "INDEX.HTM",
        "README.TXT",
    ]
    assert b"README.TXT" in entries["INDEX.HTM"] and b"EHPAD Les Tilleuls" in entries["README.TXT"]
    assert entries[f"IHE_XDM/SUBSET01/{CDA_NAME}"] == built.cda


def test_the_cda_is_valid_against_the_cda_r2_schema(built: HealthDocument) -> None:
    assert cda_problems(built.cda) == []


def test_the_schema_check_refuses_a_cda_without_patient(built: HealthDocument) -> None:
    root = etree.fromstring(built.cda, etree.XMLParser(huge_tree=True))
    root.remove(root.find(f"{H}recordTarget"))
    problems = cda_problems(etree.tostring(root))
    assert problems and "recordTarget" in problems[0]


def test_the_cda_is_level_1_with_the_pdfa_inside(built: HealthDocument) -> None:
    [doc] = read_archive(built.archive).documents
    assert doc.cda is not None and doc.cda.level == 1
    assert doc.cda.embedded == built.pdf and doc.cda.media_type == "application/pdf"
    # ISO 19005-1: PDF/A-1b says so in its XMP and carries its output intent.
    assert b"pdfaid:part='1'" in built.pdf and b"pdfaid:conformance='B'" in built.pdf
    assert b"GTS_PDFA1" in built.pdf


def _slot(node: etree._Element, name: str) -> list[str]:
    for slot in node.iterfind(f"{RIM}Slot"):
        if slot.get("name") == name:
            return [v.text or "" for v in slot.iterfind(f"{RIM}ValueList/{RIM}Value")]
    return []


def _scheme(entry: etree._Element, scheme: str) -> etree._Element:
    [found] = [
        c for c in entry.iterfind(f"{RIM}Classification") if c.get("classificationScheme") == scheme
    ]
    return found


def test_the_metadata_repeat_the_cda_header_field_by_field(built: HealthDocument) -> None:
    entries = _entries(built.archive)
    cda = etree.fromstring(built.cda, etree.XMLParser(huge_tree=True))
    meta = etree.fromstring(entries["IHE_XDM/SUBSET01/METADATA.XML"])
    [entry] = meta.iter(f"{RIM}ExtrinsicObject")
    # Patient: recordTarget/patientRole/id -> patientId and sourcePatientId (CX).
    pid = cda.find(f"{H}recordTarget/{H}patientRole/{H}id")
    patient_cx = f"{pid.get('extension')}^^^&{pid.get('root')}&ISO^NH"
    assert patient_cx == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    [patient_id] = [
        e.get("value")
        for e in entry.iterfind(f"{RIM}ExternalIdentifier")
        if e.get("identificationScheme") == PATIENT_ID
    ]
    assert patient_id == patient_cx and _slot(entry, "sourcePatientId") == [patient_cx]
    # The four traits -> sourcePatientInfo PID-5, PID-7, PID-8.
    person = cda.find(f"{H}recordTarget/{H}patientRole/{H}patient")
    family = person.find(f"{H}name/{H}family").text
    given = person.find(f"{H}name/{H}given").text
    info = dict(v.split("|", 1) for v in _slot(entry, "sourcePatientInfo"))
    assert info["PID-5"] == f"{family}^{given}^^^^^L" == "Pat-Trois Élise^Dominique^^^^^L"
    assert info["PID-7"] == person.find(f"{H}birthTime").get("value") == "19790328"
    assert info["PID-8"] == person.find(f"{H}administrativeGenderCode").get("code") == "F"
    # Type and confidentiality.
    code = cda.find(f"{H}code")
    type_code = _scheme(entry, TYPE_CODE)
    assert type_code.get("nodeRepresentation") == code.get("code") == "74207-2"
    assert _slot(type_code, "codingScheme") == [code.get("codeSystem")]
    label = type_code.find(f"{RIM}Name/{RIM}LocalizedString").get("value")
    assert label == code.get("displayName") == "Document de liaison d'urgence"
    conf = _scheme(entry, CONFIDENTIALITY_CODE)
    assert conf.get("nodeRepresentation") == cda.find(f"{H}confidentialityCode").get("code")
    # Author: author/assignedAuthor id and organisation -> authorPerson, authorInstitution.
    assigned = cda.find(f"{H}author/{H}assignedAuthor")
    author = _scheme(entry, AUTHOR)
    [person_xcn] = _slot(author, "authorPerson")
    assert person_xcn.split("^")[:3] == [
        assigned.find(f"{H}id").get("extension"),
        assigned.find(f"{H}assignedPerson/{H}name/{H}family").text,
        assigned.find(f"{H}assignedPerson/{H}name/{H}given").text,
    ]
    assert f"&{assigned.find(f'{H}id').get('root')}&ISO" in person_xcn
    organisation = assigned.find(f"{H}representedOrganization")
    [institution] = _slot(author, "authorInstitution")
    assert organisation.find(f"{H}name").text == "EHPAD Les Tilleuls & Cie"
    assert institution.split("^")[0] == "EHPAD Les Tilleuls \\T\\ Cie"  # HL7 v2.5 §2.7.4
    assert institution.endswith(organisation.find(f"{H}id").get("extension"))
    custodian = cda.find(f"{H}custodian/{H}assignedCustodian/{H}representedCustodianOrganization")
    assert custodian.find(f"{H}id").get("extension") == "1750803447"
    # Legal authenticator, times, identity of the document.
    legal = cda.find(f"{H}legalAuthenticator/{H}assignedEntity/{H}id").get("extension")
    assert _slot(entry, "legalAuthenticator")[0].split("^")[0] == legal
    assert cda.find(f"{H}effectiveTime").get("value") == "20261203140509+0000"
    assert _slot(entry, "creationTime") == ["20261203140509"]  # UTC, XDS DTM
    low = cda.find(f"{H}documentationOf/{H}serviceEvent/{H}effectiveTime/{H}low").get("value")
    assert _slot(entry, "serviceStartTime") == [low] == ["20261201"]
    [unique_id] = [
        e.get("value")
        for e in entry.iterfind(f"{RIM}ExternalIdentifier")
        if e.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
    ]
    assert unique_id == cda.find(f"{H}id").get("root")
    assert _slot(entry, "languageCode") == [cda.find(f"{H}languageCode").get("code")]
    # The file itself.
    assert _slot(entry, "hash") == [hashlib.sha1(built.cda).hexdigest()]  # noqa: S324
    assert _slot(entry, "size") == [str(len(built.cda))] and _slot(entry, "URI") == [CDA_NAME]


def test_our_reader_finds_no_problem_in_what_we_build(built: HealthDocument) -> None:
    archive = read_archive(built.archive)
    assert archive.problems == []
    [doc] = archive.documents
    assert doc.problems == [] and doc.hash_ok and doc.size_ok
    [patient] = archive.patients
    assert (patient.ins, patient.ins_kind, patient.birth_date, patient.sex) == (
        PATIENT_INS,
        "INS-NIR de test",
        "1979-03-28",
        "Féminin",
    )
    assert (doc.type_code, doc.author, doc.structure) == (
        "74207-2",
        "Claire MARTIN",
        "EHPAD Les Tilleuls & Cie",
    )


def test_subject_and_pdf_name_follow_eco_2_1_3_and_eco_2_1_6(built: HealthDocument) -> None:
    # Birth name in ASCII upper case, the label cut at 40 characters, DD/MM/YYYY.
    assert (
        built.subject
        == "XDM/1.0/DDM+Document de liaison d'urgence PAT-TROIS ELISE Dominique 28/03/1979"
    )
    assert built.pdf_name == "20261201_Document de liaison d'urgence_PAT-TROIS ELISE_Dominique.pdf"
    long_label = _built(type_code="83981-1")
    assert long_label.subject.startswith(
        "XDM/1.0/DDM+Lettre de liaison à la sortie d'une stru PAT-TROIS"
    )


@pytest.mark.parametrize(
    ("ins", "qualified", "flag", "kind"),
    [
        (PATIENT_INS, True, "O", "INS-NIR de test"),
        (PATIENT_INS, False, "N", "identifiant local"),
        (nia(), True, "O", "INS-NIA"),
    ],
    ids=["qualified-nir", "not-qualified", "qualified-nia"],
)
def test_the_ins_travels_and_x_mss_ins_is_o_only_for_a_qualified_identity(
    ins: str, qualified: bool, flag: str, kind: str
) -> None:
    patient = PatientIdentity(
        ins=ins,
        family="Durand",
        given="Paul",
        birth_date=date(1950, 1, 2),
        sex="M",
        qualified=qualified,
        test_identity=True,
    )
    document = _built(patient)
    assert (document.ins_flag, document.code_cda) == (flag, "74207-2")
    [shown] = read_archive(document.archive).patients
    assert shown.ins_kind == kind and (shown.family, shown.birth_date) == ("Durand", "1950-01-02")
    # « Le matricule INS ne peut être véhiculé que dans le cas d'une identité qualifiée ».
    entries = _entries(document.archive)
    carried = [ins.encode() in content for content in entries.values()]
    assert any(carried) == qualified
    assert cda_problems(document.cda) == []


# --- Through compose, the spool, the relay and Dovecot ---------------------------------------


def _form(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "objet": "ignoré",
        "corps": "Veuillez trouver le DLU de Mme Pat-Trois.",
        "doc_pdf": SimpleUploadedFile("dlu.pdf", tiny_pdf(), content_type="application/pdf"),
        "doc_type": "74207-2",
        "doc_date_acte": "2026-12-01",
        "doc_ins": "2 79 03 51 215 189 89",
        "doc_nom": "Pat-Trois",
        "doc_prenom": "Dominique",
        "doc_naissance": "1979-03-28",
        "doc_sexe": "F",
        "doc_qualifiee": "on",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def two_boxes(dovecot) -> tuple[User, Mailbox, User, Mailbox]:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor, local_part="claire.martin")
    nurse = make_professional(first_name="Paul", last_name="Roux")
    other = make_mailbox(structure=box.structure, owner=nurse, local_part="paul.roux")
    wait_provisioned(box.address, other.address)
    return doctor, box, nurse, other


def _post(user: User, box: Mailbox, to: str, **changes: object) -> _MonkeyPatchedWSGIResponse:
    client = Client()
    client.force_login(user)
    payload = {"de": str(box.public_id), "a": to, **_form(**changes)}
    return client.post(f"/bal/{box.public_id}/ecrire/", payload)


def _inbox(box: Mailbox) -> EmailMessage:
    with MailStore(box.address) as store:
        store.client.select_folder("INBOX", readonly=True)
        [uid] = store.client.search(["ALL"])
        raw = store.client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.django_db(transaction=True)
def test_a_document_sent_from_compose_opens_in_the_recipients_panel(two_boxes) -> None:
    doctor, box, nurse, other = two_boxes
    response = _post(doctor, box, other.address)
    assert response.status_code == 302, response.content.decode()[:2000]
    message_relay(public_id=str(OutboundMessage.objects.get().public_id))

    received = _inbox(other)
    assert (
        received["Subject"].strip()  # folded before its first word by the SMTP policy
        == "XDM/1.0/DDM+Document de liaison d'urgence PAT-TROIS Dominique 28/03/1979"
    )
    assert (received["X-MSS-CODECDA"], received["X-MSS-INS"]) == ("74207-2", "O")
    names = [part.get_filename() for part in received.iter_attachments()]
    assert names == [
        "IHE_XDM.ZIP",
        "20261201_Document de liaison d'urgence_PAT-TROIS_Dominique.pdf",
    ]

    client = Client()
    client.force_login(nurse)
    page = client.get(f"/bal/{other.public_id}/messages/1/?dossier=INBOX").content.decode()
    page = html.unescape(page)
    panel = page.split("Documents de santé", 1)[1]
    for shown in (
        "PAT-TROIS", "Dominique", "279035121518989 (INS-NIR de test)", "28/03/1979",
        "Document de liaison d'urgence", "74207-2", "Claire MARTIN", box.structure.name,
        "Empreinte et taille conformes", "INS qualifiée annoncée (O)",
    ):  # fmt: skip
        assert shown in panel, shown
    assert "ne correspond" not in panel and "diffère" not in panel
    trace = AuditEvent.objects.get(action="message.sent")
    assert trace.details["health_documents"] == ["74207-2"]
    assert "PAT-TROIS" not in str(trace.details) and PATIENT_INS not in str(trace.details)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("changes", "field_error"),
    [
        ({"doc_ins": "279035121518988"}, "La clé du matricule INS ne correspond pas"),
        ({"doc_ins": ""}, "Indiquez l'INS du patient."),
        ({"doc_type": ""}, "Choisissez le type du document."),
        ({"doc_naissance": ""}, "Indiquez la date de naissance du patient."),
        ({"doc_date_acte": "2999-01-01"}, "Cette date est dans le futur."),
        (
            {"doc_pdf": SimpleUploadedFile("x.pdf", b"PK\x03\x04 pas un pdf")},
            "Le document de santé doit être un fichier PDF.",
        ),
    ],
    ids=["ins-key", "no-ins", "no-type", "no-birth-date", "future-act", "not-a-pdf"],
)
def test_an_incomplete_document_is_refused_in_french_and_nothing_sent(
    two_boxes, changes: dict[str, object], field_error: str
) -> None:
    doctor, box, _nurse, other = two_boxes
    response = _post(doctor, box, other.address, **changes)
    assert response.status_code == 400
    assert field_error in html.unescape(response.content.decode())
    assert not OutboundMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_compose_page_offers_the_document_types(two_boxes) -> None:
    doctor, box, _nurse, _other = two_boxes
    client = Client()
    client.force_login(doctor)
    page = client.get(f"/bal/{box.public_id}/ecrire/").content.decode()
    assert "Joindre un document de santé" in page
    for code in ("11488-4", "74207-2", "83981-1", "11502-2", "18776-5"):
        assert f'value="{code}"' in page


def test_the_shipped_schemas_are_the_ans_ones() -> None:
    """mailboxes/documents/xsd/ is a byte-for-byte copy of ../shared/samples/cda/xsd/ (the
    image has no access to the shared samples)."""
    shipped = CDA_SCHEMA.parent
    reference = SHARED / "samples" / "cda" / "xsd"
    names = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert all((shipped / n).read_bytes() == (reference / n).read_bytes() for n in names)
