"""IHE_XDM.ZIP archives built in tests from the ANS CDA samples (../shared/samples/cda/), the
METADATA.XML written as XDS metadata (ebRIM 3.0) the way MSSanté software writes it."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile

from mailboxes.documents.xdm import (
    AUTHOR,
    CONFIDENTIALITY_CODE,
    DOCUMENT_ENTRY,
    PATIENT_ID,
    TYPE_CODE,
)
from tests.factories import SHARED

SAMPLES = SHARED / "samples" / "cda"
LEVEL1 = "DOC_NON_STRUCTURE_CDA-R2-N1.xml"
DLU = "DLU-EHPAD-FLUDT_2022.01.xml"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def _slot(name: str, *values: str) -> str:
    listed = "".join(f"<rim:Value>{v}</rim:Value>" for v in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{listed}</rim:ValueList></rim:Slot>'


def metadata(
    documents: list[tuple[str, bytes]],
    *,
    ins: str = "279035121518989",
    oid: str = "1.2.250.1.213.1.4.10",
    confidentiality: tuple[str, ...] = ("N",),
    hash_of: dict[str, str] | None = None,
    size_of: dict[str, int] | None = None,
) -> bytes:
    entries = []
    for i, (name, content) in enumerate(documents, 1):
        digest = (hash_of or {}).get(name, hashlib.sha1(content).hexdigest())  # noqa: S324 (XDS hash)
        code = re.search(rb'<code code="([^"]+)" displayName="([^"]+)"', content)
        type_code, label = (code.group(1).decode(), code.group(2).decode()) if code else ("", "")
        confs = "".join(
            f'<rim:Classification classificationScheme="{CONFIDENTIALITY_CODE}"'
            f' classifiedObject="Doc{i}" nodeRepresentation="{c}" id="c{i}{c}">'
            + _slot("codingScheme", "1.2.250.1.213.1.1.4.13")
            + "</rim:Classification>"
            for c in confidentiality
        )
        author = "801234567897^BOILEAU^Charles^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS"
        institution = "EHPAD Les Tilleuls^^^^^^^^^1.2.250.1.71.4.2.2^IDNST^^^1750803447"
        person = ("PID-5|PAT-TROIS^DOMINIQUE^^^^^L", "PID-7|19790328", "PID-8|F")
        entries.append(
            f'<rim:ExtrinsicObject id="Doc{i}" mimeType="text/xml" objectType="{DOCUMENT_ENTRY}">'
            + _slot("creationTime", "20200327153500")
            + _slot("hash", digest)
            + _slot("size", str((size_of or {}).get(name, len(content))))
            + _slot("URI", name)
            + _slot("sourcePatientInfo", *person)
            + f'<rim:Classification classificationScheme="{AUTHOR}" classifiedObject="Doc{i}"'
            f' nodeRepresentation="" id="a{i}">'
            + _slot("authorPerson", author)
            + _slot("authorInstitution", institution)
            + "</rim:Classification>"
            f'<rim:Classification classificationScheme="{TYPE_CODE}" classifiedObject="Doc{i}"'
            f' nodeRepresentation="{type_code}" id="t{i}">'
            f'<rim:Name><rim:LocalizedString value="{label}"/></rim:Name></rim:Classification>'
            + confs
            + f'<rim:ExternalIdentifier identificationScheme="{PATIENT_ID}" id="p{i}"'
            f' value="{ins}^^^&amp;{oid}&amp;ISO^NH" registryObject="Doc{i}"/>'
            "</rim:ExtrinsicObject>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"'
        ' xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
        + "".join(entries)
        + "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>"
    ).encode()


def archive(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def xdm(
    documents: list[tuple[str, bytes]] | None = None, *, subset: str = "SUBSET01", **meta: object
) -> bytes:
    """A well-formed IHE_XDM.ZIP holding ``documents`` (default: the level-1 sample)."""
    documents = documents or [("DOC0001.XML", sample(LEVEL1))]
    files = {"README.TXT": b"Archive de test\r\n", "INDEX.HTM": b"<html></html>"}
    for name, content in documents:
        files[f"IHE_XDM/{subset}/{name}"] = content
    files[f"IHE_XDM/{subset}/METADATA.XML"] = metadata(documents, **meta)  # type: ignore[arg-type]
    return archive(files)


def truncated_level1() -> bytes:
    """The level-1 sample with its PDF cut in half (re-encoded: the base64 stays valid)."""
    cda = sample(LEVEL1)
    match = re.search(rb'(representation="B64">)([^<]+)(<)', cda)
    assert match
    pdf = base64.b64decode(b"".join(match.group(2).split()))
    cut = base64.b64encode(pdf[: len(pdf) // 2])
    return cda[: match.start(2)] + cut + cda[match.end(2) :]


def mail_with_archive(
    zipped: bytes,
    *,
    to: str,
    subject: str = "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979",
    filename: str = "IHE_XDM.ZIP",
    codecda: str = "11502-2",
    ins: str = "N",
) -> bytes:
    encoded = base64.encodebytes(zipped).decode()
    return (
        f"From: labo@operateur-test.mssante.fr\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Mon, 16 Nov 2026 09:30:00 +0100\r\nMessage-ID: <xdm.1@operateur-test.mssante.fr>\r\n"
        f"X-MSS-CODECDA: {codecda}\r\nX-MSS-INS: {ins}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\nVeuillez trouver le document.\r\n--b\r\n"
        f'Content-Type: application/zip\r\nContent-Disposition: attachment; filename="{filename}"'
        f"\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b--\r\n"
    ).encode()


def tiny_pdf(text: str = "Bilan") -> bytes:
    """A one-page PDF written by hand (ISO 32000 §7.5: objects, xref, trailer)."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
