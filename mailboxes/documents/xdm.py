"""IHE XDM archives (``IHE_XDM.ZIP``, mssante-spec §3.4) read in memory, safe by construction.

The zip is read from bytes: nothing is extracted to disk, entry names are only dictionary
keys (never paths), nested archives are listed and never opened. Caps on the entry count,
each entry's size, the total and the compression ratio stop zip bombs before they inflate;
sizes are counted while reading, so an entry lying about its size is stopped too.
Every ``IHE_XDM/*/METADATA.XML`` is read (the subset name varies: SUBSET01, SS000001...).
Nothing here raises on content: what is wrong is said in French in ``problems``.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass, field

from lxml import etree

from mailboxes.documents.cda import (
    CONFIDENTIALITY,
    INS_KINDS,
    SEX,
    Cda,
    french_date,
    hl7_date,
    parse_cda,
)
from mailboxes.documents.safexml import UnsafeXml, parse_xml

MAX_ENTRIES = 200
MAX_ENTRY_SIZE = 25 * 1024 * 1024
MAX_TOTAL_SIZE = 60 * 1024 * 1024
MAX_RATIO = 100  # uncompressed / compressed, per entry
ARCHIVE_NAME = "ihe_xdm.zip"

RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
# XDS classification schemes and identifiers (IHE ITI TF-3 §4.2.5).
TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SUBMISSION_PATIENT_ID = "urn:uuid:6b5aea1a-874a-4603-a4bc-96a0a7b38446"
_UNSAFE_NAME = re.compile(r"(^|/)\.\.(/|$)|^/|^[A-Za-z]:|[\x00-\x1f\x7f]")
_SUBSET_XML = re.compile(r"^IHE_XDM/[^/]+/[^/]+\.XML$", re.IGNORECASE)
_METADATA = re.compile(r"^IHE_XDM/([^/]+)/METADATA\.XML$", re.IGNORECASE)


_TOO_MANY = (
    "L'archive contient trop de fichiers ({count}, au plus {limit}) : elle n'est pas ouverte."
)
_TOO_BIG = (
    "L'archive est anormalement volumineuse une fois décompressée (bombe zip possible) : "
    "elle n'est pas ouverte."
)


class ArchiveRefused(ValueError):
    """The zip itself is refused (not a zip, a bomb, a dangerous name)."""


@dataclass(frozen=True)
class Patient:
    ins: str
    ins_kind: str  # INS-NIR, INS-NIA... or « identifiant local »
    family: str
    given: str
    birth_date: str  # YYYY-MM-DD
    sex: str  # Féminin, Masculin...

    @property
    def birth_date_text(self) -> str:
        return french_date(self.birth_date)


@dataclass
class Document:
    number: int  # 1-based across the archive, stable for one archive (URLs)
    path: str  # the entry's name in the archive
    mime_type: str
    type_code: str = ""
    type_label: str = ""
    author: str = ""
    structure: str = ""
    date: str = ""
    confidentiality: list[str] = field(default_factory=list)  # labels (CONFIDENTIALITY)
    hash_ok: bool | None = None  # None: no file or nothing declared to compare with
    size_ok: bool | None = None
    size: int = 0
    cda: Cda | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def date_text(self) -> str:
        return french_date(self.date)

    @property
    def is_cda(self) -> bool:
        return self.cda is not None and self.cda.level in (1, 3)

    @property
    def has_pdf(self) -> bool:
        return self.cda is not None and self.cda.level == 1 and self.cda.pdf_ok


@dataclass
class Archive:
    patients: list[Patient] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)  # name, uncompressed size
    problems: list[str] = field(default_factory=list)

    def document(self, number: int) -> Document | None:
        return next((d for d in self.documents if d.number == number), None)


def is_xdm_archive(filename: str) -> bool:
    """The attachment an MSSanté message carries its documents in (any case)."""
    return filename.strip().lower() == ARCHIVE_NAME


def _read_entries(data: bytes) -> tuple[dict[str, bytes], list[tuple[str, int]], list[str]]:
    """The regular entries by name, the listing, and notes on skipped ones. Raises
    ArchiveRefused."""
    # Counted before zipfile reads its central directory, which builds one object per entry:
    # a million tiny entries would cost memory before any check of ours ran.
    count = data.count(b"PK\x01\x02")  # central directory file header (APPNOTE §4.3.12)
    if count > MAX_ENTRIES:
        raise ArchiveRefused(_TOO_MANY.format(count=count, limit=MAX_ENTRIES))
    if len(data) > MAX_TOTAL_SIZE:
        raise ArchiveRefused(_TOO_BIG)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ArchiveRefused("Le fichier IHE_XDM.ZIP n'est pas une archive zip lisible.") from exc
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ArchiveRefused(_TOO_MANY.format(count=len(infos), limit=MAX_ENTRIES))
    declared = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        if _UNSAFE_NAME.search(name) or "\\" in info.filename:
            raise ArchiveRefused(
                "L'archive contient un nom de fichier dangereux (chemin hors de l'archive) : "
                "elle n'est pas ouverte."
            )
        declared += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_ENTRY_SIZE or declared > MAX_TOTAL_SIZE or ratio > MAX_RATIO:
            raise ArchiveRefused(_TOO_BIG)
    entries: dict[str, bytes] = {}
    listing: list[tuple[str, int]] = []
    notes: list[str] = []
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        try:
            with archive.open(info) as stream:
                # Read one byte past what is allowed: a header lying about sizes is caught.
                content = stream.read(min(MAX_ENTRY_SIZE, MAX_TOTAL_SIZE - total) + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error,
                EOFError, OSError, ValueError):  # fmt: skip
            notes.append(f"Le fichier {info.filename} de l'archive est illisible.")
            continue
        total += len(content)
        if len(content) > info.file_size or total > MAX_TOTAL_SIZE:
            raise ArchiveRefused(_TOO_BIG)
        listing.append((info.filename, len(content)))
        if info.filename.lower().endswith(".zip") or content.startswith(b"PK\x03\x04"):
            notes.append(
                f"L'archive contient une autre archive ({info.filename}) : elle n'est pas ouverte."
            )
            continue
        entries[info.filename] = content
    return entries, listing, notes


def _slot(node: etree._Element, name: str) -> list[str]:
    for slot in node.iterfind(f"{RIM}Slot"):
        if slot.get("name") == name:
            return [(v.text or "").strip() for v in slot.iterfind(f"{RIM}ValueList/{RIM}Value")]
    return []


def _label(node: etree._Element) -> str:
    found = node.find(f"{RIM}Name/{RIM}LocalizedString")
    return found.get("value", "") if found is not None else ""


def _classifications(node: etree._Element, scheme: str) -> list[etree._Element]:
    return [
        c for c in node.iterfind(f"{RIM}Classification") if c.get("classificationScheme") == scheme
    ]


def _external_id(node: etree._Element, scheme: str) -> str:
    for ident in node.iterfind(f"{RIM}ExternalIdentifier"):
        if ident.get("identificationScheme") == scheme:
            return ident.get("value", "")
    return ""


def split_patient_id(value: str) -> tuple[str, str]:
    """« 279035121518989^^^&1.2.250.1.213.1.4.10&ISO » as (identifier, assigning OID) (HL7 CX)."""
    ident, _, rest = value.partition("^^^")
    oid = rest.split("&")[1] if rest.count("&") >= 1 else ""
    return ident.strip(), oid.strip()


def _xcn_name(value: str) -> str:
    """An HL7 XCN (« id^FAMILY^Given^... ») as « Given FAMILY »."""
    parts = value.split("^")
    family = parts[1] if len(parts) > 1 else ""
    given = parts[2] if len(parts) > 2 else ""
    return " ".join(p for p in (given, family) if p)


def _patient(entry: etree._Element) -> Patient | None:
    ins, oid = split_patient_id(_external_id(entry, PATIENT_ID))
    if not ins:
        return None
    info = {v.split("|", 1)[0]: v.split("|", 1)[-1] for v in _slot(entry, "sourcePatientInfo")}
    name = info.get("PID-5", "").split("^")
    return Patient(
        ins=ins,
        ins_kind=INS_KINDS.get(oid, "identifiant local"),
        family=name[0] if name else "",
        given=name[1] if len(name) > 1 else "",
        birth_date=hl7_date(info.get("PID-7", "")),
        sex=SEX.get(info.get("PID-8", ""), info.get("PID-8", "")),
    )


def _check_file(doc: Document, entry: etree._Element, content: bytes) -> None:
    hashes, sizes = _slot(entry, "hash"), _slot(entry, "size")
    if hashes:
        doc.hash_ok = hashlib.sha1(content).hexdigest().lower() == hashes[0].lower()  # noqa: S324
        if not doc.hash_ok:
            doc.problems.append(
                "L'empreinte (hash) du fichier ne correspond pas à celle annoncée dans "
                "METADATA.XML : le document a pu être modifié."
            )
    if sizes:
        doc.size_ok = sizes[0].isdigit() and int(sizes[0]) == len(content)
        if not doc.size_ok:
            doc.problems.append("La taille du fichier ne correspond pas à celle de METADATA.XML.")


def _document(
    number: int, subset: str, entry: etree._Element, entries: dict[str, bytes], archive: Archive
) -> Document:
    uri = (_slot(entry, "URI") or [""])[0]
    path = f"IHE_XDM/{subset}/{uri}"
    doc = Document(number=number, path=path, mime_type=entry.get("mimeType", ""))
    for c in _classifications(entry, TYPE_CODE)[:1]:
        doc.type_code, doc.type_label = c.get("nodeRepresentation", ""), _label(c)
    for c in _classifications(entry, AUTHOR)[:1]:
        doc.author = _xcn_name((_slot(c, "authorPerson") or [""])[0])
        doc.structure = (_slot(c, "authorInstitution") or [""])[0].split("^")[0]
    doc.date = hl7_date((_slot(entry, "creationTime") or [""])[0])
    for c in _classifications(entry, CONFIDENTIALITY_CODE):
        code = c.get("nodeRepresentation", "")
        doc.confidentiality.append(CONFIDENTIALITY.get(code, _label(c) or code))
    key = next((k for k in entries if k.lower() == path.lower()), None)
    if not uri or "/" in uri or "\\" in uri or key is None:
        doc.problems.append(f"Le fichier « {uri or '?'} » annoncé dans METADATA.XML est absent.")
        return doc
    content = entries[key]
    doc.size = len(content)
    _check_file(doc, entry, content)
    if doc.mime_type in ("text/xml", "application/xml") or key.lower().endswith(".xml"):
        doc.cda = parse_cda(content)
        doc.problems += doc.cda.problems
        _compare(doc, entry, doc.cda)
    return doc


def _compare(doc: Document, entry: etree._Element, cda: Cda) -> None:
    """The CDA header must name the patient and type the metadata name (CI-SIS « lien entre
    l'en-tête CDA et les métadonnées XDS »); the header wins for display."""
    ins, _oid = split_patient_id(_external_id(entry, PATIENT_ID))
    if cda.ins and ins and cda.ins != ins:
        doc.problems.append(
            f"Le patient du document (INS {cda.ins}) n'est pas celui de METADATA.XML "
            f"(INS {ins}) : vérifiez l'identité avant tout usage."
        )
    if cda.type_code and doc.type_code and cda.type_code != doc.type_code:
        doc.problems.append("Le type du document diffère entre METADATA.XML et le document CDA.")
    doc.type_code = cda.type_code or doc.type_code
    doc.type_label = cda.type_label or doc.type_label
    doc.author = cda.author or doc.author
    doc.structure = cda.structure or doc.structure
    doc.date = cda.date or doc.date
    if not doc.confidentiality and cda.confidentiality:
        doc.confidentiality = [CONFIDENTIALITY.get(cda.confidentiality, cda.confidentiality)]


def _unlisted(archive: Archive, entries: dict[str, bytes]) -> None:
    """Without metadata, the XML files of the subsets are still shown (unverified: no hash
    or size to compare with), so that the reader can open what was sent."""
    for key in sorted(entries):
        if _SUBSET_XML.match(key):
            cda = parse_cda(entries[key])
            if cda.level:
                doc = Document(number=len(archive.documents) + 1, path=key, mime_type="text/xml")
                doc.size, doc.cda = len(entries[key]), cda
                doc.type_code, doc.type_label = cda.type_code, cda.type_label
                doc.author, doc.structure, doc.date = cda.author, cda.structure, cda.date
                if cda.confidentiality:
                    conf = cda.confidentiality
                    doc.confidentiality = [CONFIDENTIALITY.get(conf, conf)]
                doc.problems += cda.problems
                archive.documents.append(doc)


def read_archive(data: bytes) -> Archive:
    """The patients and documents of an IHE_XDM.ZIP. Never raises on content."""
    archive = Archive()
    try:
        entries, archive.files, archive.problems = _read_entries(data)
    except ArchiveRefused as exc:
        archive.problems.append(str(exc))
        return archive
    metadata = sorted(k for k in entries if _METADATA.match(k))
    if not metadata:
        archive.problems.append(
            "L'archive ne contient pas de fichier IHE_XDM/…/METADATA.XML : le patient et les "
            "documents ne peuvent pas être vérifiés."
        )
        _unlisted(archive, entries)
        return archive
    for key in metadata:
        match = _METADATA.match(key)
        assert match is not None
        subset = match.group(1)
        try:
            root = parse_xml(entries[key], what=f"Le fichier {key}")
        except UnsafeXml as exc:
            archive.problems.append(str(exc))
            continue
        for entry in root.iter(f"{RIM}ExtrinsicObject"):
            if entry.get("objectType") != DOCUMENT_ENTRY:
                continue
            patient = _patient(entry)
            if patient is not None and patient not in archive.patients:
                archive.patients.append(patient)
            archive.documents.append(
                _document(len(archive.documents) + 1, subset, entry, entries, archive)
            )
    if len({p.ins for p in archive.patients}) > 1:
        archive.problems.append("L'archive concerne plusieurs patients : vérifiez chaque document.")
    return archive
