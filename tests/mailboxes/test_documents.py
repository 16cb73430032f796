"""Health documents: IHE_XDM.ZIP archives and their CDA documents, from the ANS samples, and
hostile archives that must never break a message (mssante-spec §3.2-§3.4)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import AuditEvent
from mailboxes.documents.xdm import MAX_ENTRIES, read_archive
from mailboxes.models import Mailbox
from mailboxes.store.mime import display_subject
from mailboxes.webmail.services.documents import documents_of
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.xdm_build import (
    DLU,
    LEVEL1,
    archive,
    mail_with_archive,
    metadata,
    sample,
    truncated_level1,
    xdm,
)

XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b'<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">&x;'
    b"</lcm:SubmitObjectsRequest>"
)
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>\n<lolz>&lol9;</lolz>"
)


# --- the parser, on the samples ------------------------------------------------------------


def test_the_level1_sample_parses_with_patient_document_and_pdf() -> None:
    parsed = read_archive(xdm())
    assert parsed.problems == []
    (patient,) = parsed.patients
    assert (patient.ins, patient.ins_kind) == ("279035121518989", "INS-NIR de test")
    assert (patient.family, patient.given, patient.birth_date, patient.sex) == (
        "PAT-TROIS", "DOMINIQUE", "1979-03-28", "Féminin",
    )  # fmt: skip
    (doc,) = parsed.documents
    assert (doc.type_code, doc.type_label) == ("11502-2", "CR d'examens biologiques")
    assert doc.author == "Marcel CAMPARINI"
    assert doc.structure == "Laboratoire des charmes"
    assert doc.confidentiality == ["Normal"]
    assert doc.hash_ok is True and doc.size_ok is True
    assert doc.cda is not None and doc.cda.level == 1
    assert doc.has_pdf and doc.cda.embedded.startswith(b"%PDF-")
    assert doc.problems == []


def test_the_structured_dlu_parses_with_its_sections() -> None:
    parsed = read_archive(
        xdm([("DLU.XML", sample(DLU))], confidentiality=("N", "MASQUE_PS", "INVISIBLE_PATIENT"))
    )
    assert parsed.problems == []
    (doc,) = parsed.documents
    assert (doc.type_code, doc.type_label) == ("74207-2", "Dossier de liaison d'urgence")
    assert doc.author == "Charles BOILEAU"
    assert doc.confidentiality == [
        "Normal", "Masqué aux professionnels de santé", "Invisible pour le patient",
    ]  # fmt: skip
    assert doc.cda is not None and doc.cda.level == 3
    titles = [s.title for s in doc.cda.sections]
    assert "Transfert du patient de l'EHPAD vers le SU" in titles
    assert "Constantes du patient" in titles
    first = doc.cda.sections[0].html
    assert "<table>" in first and "La patiente présente un problème respiratoire." in first
    assert "ID=" not in first and "content" not in first


def test_a_level1_cda_with_a_9_mb_pdf_opens() -> None:
    cda = sample(LEVEL1)
    match = re.search(rb'(representation="B64">)([^<]+)(<)', cda)
    assert match
    pdf = b"%PDF-1.4\n" + os.urandom(9_000_000) + b"\n%%EOF\n"
    big = cda[: match.start(2)] + base64.encodebytes(pdf) + cda[match.end(2) :]
    (doc,) = read_archive(xdm([("DOC0001.XML", big)])).documents
    assert doc.problems == [] and doc.has_pdf
    assert doc.cda is not None and doc.cda.embedded == pdf


def test_every_subset_is_read_not_only_subset01() -> None:
    files = {
        "IHE_XDM/SS000001/DOC1.XML": sample(LEVEL1),
        "IHE_XDM/SS000001/METADATA.XML": metadata([("DOC1.XML", sample(LEVEL1))]),
        "IHE_XDM/AUTRE/DLU.XML": sample(DLU),
        "IHE_XDM/AUTRE/METADATA.XML": metadata([("DLU.XML", sample(DLU))]),
    }
    parsed = read_archive(archive(files))
    assert sorted(d.type_code for d in parsed.documents) == ["11502-2", "74207-2"]
    assert all(d.hash_ok for d in parsed.documents)


# --- hostile archives: a French explanation, never an exception ----------------------------


def _bomb_by_ratio() -> bytes:
    return archive({"IHE_XDM/SUBSET01/METADATA.XML": b" " * (20 * 1024 * 1024)})


def _bomb_by_count() -> bytes:
    return archive({f"f{i}.txt": b"x" for i in range(MAX_ENTRIES + 1)})


def _bomb_by_size() -> bytes:
    # Random-ish, barely compressible content: refused for its size, not for its ratio.
    chunk = bytes(range(256)) * 4096
    return archive(
        {f"IHE_XDM/SUBSET01/F{i}.BIN": chunk * 8 for i in range(9)},
        compression=zipfile.ZIP_STORED,
    )


def _lying_sizes() -> bytes:
    """A central directory that declares 10 bytes for a 3 MB entry."""
    data = bytearray(archive({"IHE_XDM/SUBSET01/METADATA.XML": b"<a/>" + b" " * 3_000_000}))
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = zf.infolist()[0]
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size
    local = info.header_offset
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    return bytes(data)


HOSTILE = {
    "bomb_count": (_bomb_by_count, "trop de fichiers"),
    "bomb_size": (_bomb_by_size, "bombe zip"),
    "bomb_ratio": (_bomb_by_ratio, "bombe zip"),
    # zipfile reads no more than the declared size, then the CRC fails.
    "lying_sizes": (_lying_sizes, "METADATA.XML de l'archive est illisible"),
    "traversal": (
        lambda: archive({"../../etc/cron.d/x": b"x", "IHE_XDM/S/METADATA.XML": b"<a/>"}),
        "nom de fichier dangereux",
    ),
    "absolute": (lambda: archive({"/etc/passwd": b"x"}), "nom de fichier dangereux"),
    "nested": (
        lambda: archive({"IHE_XDM/SUBSET01/INNER.ZIP": xdm()}),
        "autre archive (IHE_XDM/SUBSET01/INNER.ZIP) : elle n'est pas ouverte",
    ),
    "xxe": (
        lambda: archive({"IHE_XDM/SUBSET01/METADATA.XML": XXE}),
        "déclare une DTD",
    ),
    "laughs": (
        lambda: archive({"IHE_XDM/SUBSET01/METADATA.XML": LAUGHS}),
        "déclare une DTD",
    ),
    "no_metadata": (
        lambda: archive({"IHE_XDM/SUBSET01/DOC0001.XML": sample(LEVEL1)}),
        "ne contient pas de fichier IHE_XDM/…/METADATA.XML",
    ),
    "hash_mismatch": (
        lambda: xdm(hash_of={"DOC0001.XML": "0" * 40}),
        "L'empreinte (hash) du fichier ne correspond pas",
    ),
    "size_mismatch": (
        lambda: xdm(size_of={"DOC0001.XML": 12}),
        "La taille du fichier ne correspond pas à celle de METADATA.XML.",
    ),
    "patient_mismatch": (
        lambda: xdm(ins="180012345678901"),
        "n'est pas celui de METADATA.XML",
    ),
    "truncated_pdf": (
        lambda: xdm([("DOC0001.XML", truncated_level1())]),
        "Le PDF du document est tronqué",
    ),
    "not_a_zip": (lambda: b"PK\x03\x04 pas vraiment", "n'est pas une archive zip lisible"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_explained_in_french(case: str) -> None:
    build, explanation = HOSTILE[case]
    parsed = read_archive(build())
    said = " ".join(parsed.problems + [p for d in parsed.documents for p in d.problems])
    assert explanation in said


def test_without_metadata_the_documents_are_listed_unverified() -> None:
    parsed = read_archive(archive({"IHE_XDM/SUBSET01/DOC0001.XML": sample(LEVEL1)}))
    (doc,) = parsed.documents
    assert (doc.type_code, doc.hash_ok, doc.size_ok) == ("11502-2", None, None)
    assert parsed.patients == []  # the patient comes from METADATA.XML only (ECO.2.1.2)
    assert doc.has_pdf


@pytest.mark.parametrize("depth", [1500, 100_000])
def test_a_deeply_nested_narrative_is_cut_not_followed(depth: int) -> None:
    nested = b"<paragraph>" * depth + b"fond" + b"</paragraph>" * depth
    dlu = sample(DLU).replace(b"<td>Date</td>", b"<td>" + nested + b"</td>", 1)
    files = {"IHE_XDM/S/DLU.XML": dlu, "IHE_XDM/S/METADATA.XML": metadata([("DLU.XML", dlu)])}
    # Stored, not deflated: refused for its depth, not as a zip bomb.
    (doc,) = read_archive(archive(files, compression=zipfile.ZIP_STORED)).documents
    assert doc.cda is not None
    if depth > 10_000:  # past libxml2's own depth limit: refused, said in French
        assert "Le document CDA n'est pas un XML lisible." in doc.problems
    else:
        assert doc.problems == [] and doc.cda.sections[0].html.count("<p>") < 100


def test_a_huge_entry_count_is_refused_before_zipfile_lists_it(monkeypatch) -> None:
    zipped = archive({f"{i}": b"" for i in range(50_000)}, compression=zipfile.ZIP_STORED)
    monkeypatch.setattr(zipfile, "ZipFile", None)  # never reached
    assert read_archive(zipped).problems == [
        "L'archive contient trop de fichiers (50000, au plus 200) : elle n'est pas ouverte."
    ]


@pytest.mark.parametrize(
    "subject",
    [
        "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE",
        "xdm/1.0/ddm+CR d'examens biologiques PAT-TROIS DOMINIQUE",
        "Re: XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE",
    ],
)
def test_the_xdm_prefix_is_hidden_after_any_reply_prefix(subject: str) -> None:
    shown = display_subject(subject)
    assert "XDM" not in shown.upper()
    assert shown.endswith("CR d'examens biologiques PAT-TROIS DOMINIQUE")
    assert display_subject("Objet : XDM/1.0/DDM+x") == "Objet : XDM/1.0/DDM+x"  # not a prefix


def test_a_hash_mismatch_marks_the_document() -> None:
    (doc,) = read_archive(xdm(hash_of={"DOC0001.XML": "0" * 40})).documents
    assert doc.hash_ok is False and doc.size_ok is True


def test_the_xxe_file_is_never_read(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("NE-DOIT-PAS-FUIR")
    doc = XXE.replace(b"file:///etc/passwd", f"file://{secret}".encode())
    parsed = read_archive(archive({"IHE_XDM/SUBSET01/METADATA.XML": doc}))
    assert "NE-DOIT-PAS-FUIR" not in repr(parsed)


# --- the webmail, on messages delivered into Dovecot ---------------------------------------


@dataclass
class Reader:
    client: Client
    box: Mailbox


@pytest.fixture
def reader(dovecot) -> Reader:
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    client = Client()
    client.force_login(doctor)
    return Reader(client, box)


def _page(reader: Reader, url: str = "", uid: int = 1) -> tuple[int, str]:
    response = reader.client.get(f"/bal/{reader.box.public_id}/messages/{uid}/{url}?dossier=INBOX")
    return response.status_code, html.unescape(response.content.decode(errors="replace"))


@pytest.mark.django_db
def test_the_panel_shows_patient_documents_and_mss_headers(reader: Reader) -> None:
    zipped = xdm(confidentiality=("N", "MASQUE_PS", "INVISIBLE_PATIENT"))
    deliver(reader.box.address, mail_with_archive(zipped, to=reader.box.address))
    status, page = _page(reader)
    assert status == 200
    panel = page.split("Documents de santé", 1)[1]
    for shown in (
        "PAT-TROIS DOMINIQUE", "279035121518989 (INS-NIR de test)", "28/03/1979", "Féminin",
        "01/04/2021 13:47",
        "CR d'examens biologiques", "11502-2", "Marcel CAMPARINI", "Laboratoire des charmes",
        "Masqué aux professionnels de santé", "Invisible pour le patient",
        "Empreinte et taille conformes", "INS non qualifiée (N)",
    ):  # fmt: skip
        assert shown in panel, shown
    assert "Types annoncés (X-MSS-CODECDA)" in panel


@pytest.mark.django_db
def test_headers_that_disagree_with_the_archive_are_pointed_out(reader: Reader) -> None:
    mail = mail_with_archive(xdm(), to=reader.box.address, codecda="74207-2", ins="O")
    deliver(reader.box.address, mail)
    deliver(reader.box.address, mail_with_archive(xdm(), to=reader.box.address))
    _status, lying = _page(reader, uid=1)
    _status, honest = _page(reader, uid=2)
    said = "ne correspondent pas aux documents de l'archive"
    assert said in lying and said not in honest
    # The sample carries the INS, its OID and the four traits: « O » is true of it.
    assert "aucun document ne porte l'INS" not in lying


def test_a_qualified_ins_needs_the_traits() -> None:
    cda = sample(LEVEL1).replace(b'<birthTime value="19790328"/>', b"")
    found = documents_of(mail_with_archive(xdm([("D.XML", cda)]), to="a@b.fr", ins="O"))
    assert found.header_problems == [
        "X-MSS-INS annonce une INS qualifiée, mais aucun document ne porte l'INS avec ses "
        "traits d'identité."
    ]


@pytest.mark.django_db
def test_the_xdm_prefix_is_hidden_in_the_list_and_the_page(reader: Reader) -> None:
    deliver(reader.box.address, mail_with_archive(xdm(), to=reader.box.address))
    _status, page = _page(reader)
    listing = reader.client.get(f"/bal/{reader.box.public_id}/?dossier=INBOX").content.decode()
    assert "<h1>CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979</h1>" in page
    assert "CR d&#x27;examens biologiques PAT-TROIS" in listing
    assert "XDM/1.0/DDM" not in page and "XDM/1.0/DDM" not in listing


@pytest.mark.django_db
def test_the_level1_pdf_is_served_from_our_origin(reader: Reader) -> None:
    deliver(reader.box.address, mail_with_archive(xdm(), to=reader.box.address))
    status, page = _page(reader, "pieces/1/documents/1/")
    assert status == 200 and 'class="message-body document-pdf"' in page
    base = f"/bal/{reader.box.public_id}/messages/1/pieces/1/documents/1"
    pdf = reader.client.get(f"{base}/pdf/?dossier=INBOX")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and b"%%EOF" in pdf.content[-1024:]
    assert "default-src 'none'" in pdf["Content-Security-Policy"]
    assert pdf["X-Content-Type-Options"] == "nosniff"
    assert pdf["Content-Disposition"].startswith("inline")
    download = reader.client.get(f"{base}/pdf/?dossier=INBOX&telecharger=1")
    assert download["Content-Disposition"].startswith("attachment")
    cda = reader.client.get(f"{base}/cda/?dossier=INBOX")
    assert cda.status_code == 200 and cda.content == sample(LEVEL1)
    assert cda["Content-Disposition"].startswith("attachment")
    archive_download = reader.client.get(
        f"/bal/{reader.box.public_id}/messages/1/pieces/1/?dossier=INBOX"
    )
    assert zipfile.ZipFile(io.BytesIO(archive_download.content)).testzip() is None


@pytest.mark.django_db
def test_reading_and_downloading_documents_is_traced_without_content(reader: Reader) -> None:
    deliver(reader.box.address, mail_with_archive(xdm(), to=reader.box.address))
    _page(reader)
    # The page reads the message once: one trace, whose Message-ID names it.
    assert AuditEvent.objects.filter(action="message.read").count() == 1
    _page(reader, "pieces/1/documents/1/pdf/")
    call_command("xdm_show", reader.box.address, "1", stdout=io.StringIO())
    panel = AuditEvent.objects.get(action="message.read", details__purpose="documents")
    assert panel.actor is None and panel.details["message_id"]
    pdf = AuditEvent.objects.get(action="message.attachment_download")
    assert pdf.details == {
        "folder": "INBOX", "uid": 1, "part": 1, "document": 1, "file": "pdf",
        "message_id": "<xdm.1@operateur-test.mssante.fr>",
    }  # fmt: skip
    for event in (panel, pdf):
        assert event.result == "success" and "PAT-TROIS" not in json.dumps(event.details)


@pytest.mark.django_db
def test_the_structured_dlu_renders_its_sections(reader: Reader) -> None:
    deliver(
        reader.box.address,
        mail_with_archive(xdm([("DLU.XML", sample(DLU))]), to=reader.box.address),
    )
    status, page = _page(reader, "pieces/1/documents/1/")
    assert status == 200
    assert "<h2>Transfert du patient de l'EHPAD vers le SU</h2>" in page
    assert "<h2>Constantes du patient</h2>" in page
    assert "<td>La patiente présente un problème respiratoire.</td>" in page
    assert "FICHE DE LIAISON D'URGENCE" in page
    assert "<content" not in page and "styleCode" not in page
    # No PDF in a structured document: nothing to serve.
    assert _page(reader, "pieces/1/documents/1/pdf/")[0] == 404


@pytest.mark.django_db
def test_a_script_in_the_narrative_never_reaches_the_page(reader: Reader) -> None:
    dlu = sample(DLU).replace(
        b"<td>Date</td>",
        b'<td>Date<script xmlns="http://www.w3.org/1999/xhtml">alert(1)</script>'
        b'<linkHtml href="javascript:alert(2)">lien</linkHtml></td>',
    )
    deliver(reader.box.address, mail_with_archive(xdm([("DLU.XML", dlu)]), to=reader.box.address))
    status, page = _page(reader, "pieces/1/documents/1/")
    assert status == 200 and "<td>Datealert(1)lien</td>" in page
    narrative = page.split('class="cda-narrative"', 1)[1]
    assert "<script" not in narrative and "javascript:" not in narrative and "href" not in narrative


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_never_breaks_the_message(
    reader: Reader, case: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    build, explanation = HOSTILE[case]
    deliver(reader.box.address, mail_with_archive(build(), to=reader.box.address))
    status, page = _page(reader)
    assert status == 200
    assert "Documents de santé" in page and explanation in page
    assert "Veuillez trouver le document." in page  # the message itself still reads
    assert list(tmp_path.iterdir()) == []  # nothing extracted to disk


@pytest.mark.django_db
def test_a_truncated_pdf_is_explained_and_never_served(reader: Reader) -> None:
    zipped = xdm([("DOC0001.XML", truncated_level1())])
    deliver(reader.box.address, mail_with_archive(zipped, to=reader.box.address))
    status, page = _page(reader, "pieces/1/documents/1/")
    assert status == 200 and "Le PDF du document est tronqué" in page
    assert "document-pdf" not in page
    assert _page(reader, "pieces/1/documents/1/pdf/")[0] == 404


@pytest.mark.django_db
def test_xdm_show_prints_the_archive_as_json(reader: Reader) -> None:
    deliver(
        reader.box.address,
        mail_with_archive(xdm([("DLU.XML", sample(DLU))]), to=reader.box.address),
    )
    out = io.StringIO()
    call_command("xdm_show", reader.box.address, "1", stdout=out)
    shown = json.loads(out.getvalue())
    (found,) = shown["archives"]
    assert found["nom"] == "IHE_XDM.ZIP" and found["problemes"] == []
    assert found["patients"][0]["ins"] == "279035121518989"
    (doc,) = found["documents"]
    assert (doc["type_code"], doc["niveau_cda"], doc["empreinte_conforme"]) == ("74207-2", 3, True)
    assert "Constantes du patient" in doc["sections"]
    assert shown["codes_cda"] == ["11502-2"]
    assert {"IHE_XDM/SUBSET01/DLU.XML", "README.TXT"} <= {f["nom"] for f in found["fichiers"]}
