"""CDA R2 documents (HL7 « ClinicalDocument »), read for display (mssante-spec §3.3, §3.4).

Level 1 (« structuration minimale ») carries a PDF in ``nonXMLBody/text`` (base64); a
structured document (level 3) carries sections whose narrative block (CDA R2 §4.3.5) is mapped
here to a small set of plain HTML elements: the document's own stylesheet, attributes, links
and multimedia never reach the page. The caller still sanitises the result (webmail).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from lxml import etree

from mailboxes.documents.safexml import UnsafeXml, parse_xml

NS = "urn:hl7-org:v3"
H = f"{{{NS}}}"

# INS OIDs (mssante-spec §3.4, FR Core): the identifier of the patient in the trust space.
INS_KINDS = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR de test",
    "1.2.250.1.213.1.4.11": "INS-NIR de démonstration",
}
SEX = {"F": "Féminin", "M": "Masculin", "U": "Inconnu"}
# Confidentiality codes shown by their meaning (mssante-spec §3.4, scheme 1.2.250.1.213.1.1.4.13).
CONFIDENTIALITY = {
    "N": "Normal",
    "R": "Restreint",
    "V": "Très restreint",
    "MASQUE_PS": "Masqué aux professionnels de santé",
    "INVISIBLE_PATIENT": "Invisible pour le patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "Invisible pour les représentants légaux",
}
MAX_SECTIONS = 200
MAX_DEPTH = 12


@dataclass(frozen=True)
class Section:
    title: str
    html: str  # the narrative mapped to plain elements; still to be sanitised
    level: int  # 1 for a top section, 2 for a section inside it...


@dataclass
class Cda:
    type_code: str = ""
    type_label: str = ""
    title: str = ""
    date: str = ""  # YYYY-MM-DD[ HH:MM]
    confidentiality: str = ""
    ins: str = ""
    ins_oid: str = ""
    family: str = ""
    given: str = ""
    birth_date: str = ""
    sex: str = ""
    author: str = ""
    structure: str = ""
    level: int = 0  # 1: embedded file; 3: structured body; 0: neither
    media_type: str = ""
    # The embedded file as base64 text, decoded on first use (``embedded``): the panel lists
    # ten documents without decoding ten PDFs; their page or download decodes one.
    encoded: str = field(default="", repr=False)
    pdf_ok: bool = False  # a whole PDF (header and %%EOF) is embedded
    sections: list[Section] = field(default_factory=list)
    source: bytes = b""  # the document as received, for its download
    problems: list[str] = field(default_factory=list)

    @property
    def birth_date_text(self) -> str:
        return french_date(self.birth_date)

    @property
    def embedded(self) -> bytes:
        """The embedded file (checked as base64 when parsed), b"" when there is none."""
        return base64.b64decode(self.encoded) if self.encoded else b""


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _is_base64(encoded: str) -> bool:
    """RFC 4648 §4: the alphabet, whole quanta, « = » only as the last one or two characters
    (what b64decode(validate=True) refuses), checked without decoding (bytes.translate runs
    in C over the 700 kB of a PDF)."""
    if len(encoded) % 4 or not encoded.isascii():
        return False
    rest = encoded.encode("ascii").translate(None, _ALPHABET)  # what is not the alphabet
    return rest in (b"", b"=", b"==") and encoded.endswith(rest.decode())


_TAIL = 1368  # base64 characters for the last 1,026 bytes, enough for pdf_problem's 1,024


def _ends(encoded: str) -> bytes:
    """The first bytes and the last 1,024 bytes of the base64 ``encoded``, decoded, for
    pdf_problem (header and trailer) without decoding the whole file."""
    if len(encoded) <= 2 * _TAIL:
        return base64.b64decode(encoded)
    return base64.b64decode(encoded[:8]) + base64.b64decode(encoded[-_TAIL:])


def _text(node: etree._Element | None) -> str:
    return " ".join("".join(node.itertext()).split()) if node is not None else ""


def _first(root: etree._Element, path: str) -> etree._Element | None:
    found = root.find(path.replace("h:", H))
    return found


def hl7_date(value: str) -> str:
    """« 20210401134745+0100 » as « 2021-04-01 13:47 », « 19790328 » as « 1979-03-28 »."""
    digits = value[:12]
    if len(digits) >= 8 and digits[:8].isdigit():
        day = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
        if len(digits) >= 12 and digits[8:12].isdigit():
            return f"{day} {digits[8:10]}:{digits[10:12]}"
        return day
    return ""


def french_date(iso: str) -> str:
    """« 2021-04-01 13:47 » as « 01/04/2021 13:47 » (how dates are shown to people)."""
    day, _, time = iso.partition(" ")
    parts = day.split("-")
    if len(parts) != 3:
        return iso
    return f"{parts[2]}/{parts[1]}/{parts[0]}" + (f" {time}" if time else "")


def _person(name: etree._Element | None) -> str:
    if name is None:
        return ""
    parts = [_text(name.find(f"{H}{p}")) for p in ("given", "family")]
    return " ".join(p for p in parts if p)


def _patient(doc: Cda, root: etree._Element) -> None:
    role = _first(root, "h:recordTarget/h:patientRole")
    if role is None:
        doc.problems.append("Le document CDA ne désigne pas de patient.")
        return
    for ident in role.findall(f"{H}id"):
        if ident.get("root", "") in INS_KINDS:
            doc.ins, doc.ins_oid = ident.get("extension", ""), ident.get("root", "")
            break
    patient = role.find(f"{H}patient")
    if patient is None:
        return
    name = patient.find(f"{H}name")
    if name is not None:
        families = name.findall(f"{H}family")
        givens = name.findall(f"{H}given")
        birth = [f for f in families if f.get("qualifier") == "BR"] or families
        first = [g for g in givens if g.get("qualifier") == "BR"] or givens
        doc.family = _text(birth[0]) if birth else ""
        doc.given = _text(first[0]) if first else ""
    birth_time = patient.find(f"{H}birthTime")
    doc.birth_date = hl7_date(birth_time.get("value", "")) if birth_time is not None else ""
    gender = patient.find(f"{H}administrativeGenderCode")
    doc.sex = gender.get("code", "") if gender is not None else ""


NARRATIVE = {
    "paragraph": "p",
    "content": "span",
    "table": "table",
    "thead": "thead",
    "tbody": "tbody",
    "tfoot": "tfoot",
    "tr": "tr",
    "th": "th",
    "td": "td",
    "caption": "caption",
    "item": "li",
    "br": "br",
    "sub": "sub",
    "sup": "sup",
    "footnote": "small",
}
STYLE_CODES = {"bold": "b", "italics": "i", "underline": "u", "emphasis": "em"}
DROPPED = {"renderMultiMedia", "footnoteRef"}  # they point at other content by reference


def _narrative(node: etree._Element, depth: int = 0) -> str:
    """The children of a narrative block as HTML text: known elements mapped, others
    unwrapped (their text kept), every attribute dropped but a cell's span."""
    out: list[str] = [html.escape(node.text or "")]
    for child in node:
        if isinstance(child.tag, str) and depth < MAX_DEPTH * 4:
            local = etree.QName(child).localname
            if local not in DROPPED:
                out.append(_element(child, local, depth + 1))
        out.append(html.escape(child.tail or ""))
    return "".join(out)


def _element(child: etree._Element, local: str, depth: int) -> str:
    inner = _narrative(child, depth)
    if local == "list":
        tag = "ol" if child.get("listType", "").lower() == "ordered" else "ul"
    else:
        tag = NARRATIVE.get(local, "")
    if not tag:
        return inner
    if tag == "br":
        return "<br>"
    attrs = ""
    for name in ("colspan", "rowspan"):
        value = child.get(name, "")
        if value.isdigit() and tag in ("td", "th"):
            attrs += f' {name}="{int(value)}"'
    for style in child.get("styleCode", "").lower().split():
        if style in STYLE_CODES:
            inner = f"<{STYLE_CODES[style]}>{inner}</{STYLE_CODES[style]}>"
    return f"<{tag}{attrs}>{inner}</{tag}>"


def _sections(doc: Cda, body: etree._Element) -> None:
    def walk(parent: etree._Element, level: int) -> None:
        for section in parent.iterfind(f"{H}component/{H}section"):
            if len(doc.sections) >= MAX_SECTIONS or level > MAX_DEPTH:
                return
            text = section.find(f"{H}text")
            doc.sections.append(
                Section(
                    title=_text(section.find(f"{H}title")),
                    html=_narrative(text) if text is not None else "",
                    level=level,
                )
            )
            walk(section, level + 1)

    walk(body, 1)


def pdf_problem(data: bytes) -> str:
    """Why ``data`` is not a whole PDF, or "" (a header and a final ``%%EOF``, ISO 32000 §7.5)."""
    if not data.startswith(b"%PDF-"):
        return "Le fichier joint au document n'est pas un PDF."
    if b"%%EOF" not in data[-1024:]:
        return "Le PDF du document est tronqué : il ne peut pas être affiché."
    return ""


def _body(doc: Cda, root: etree._Element) -> None:
    text = _first(root, "h:component/h:nonXMLBody/h:text")
    if text is not None:
        doc.level = 1
        doc.media_type = text.get("mediaType", "")
        if text.get("representation", "TXT").upper() != "B64":
            doc.problems.append("Le fichier joint au document n'est pas encodé en base64.")
            return
        encoded = "".join((text.text or "").split())
        # RFC 4648 §4 alphabet and padding checked whole (what b64decode(validate=True)
        # checks), the bytes decoded only at both ends.
        if not _is_base64(encoded):
            doc.problems.append("Le fichier joint au document est illisible (base64 invalide).")
            return
        doc.encoded = encoded
        if doc.media_type == "application/pdf":
            if problem := pdf_problem(_ends(encoded)):
                doc.problems.append(problem)
            else:
                doc.pdf_ok = True
        return
    body = _first(root, "h:component/h:structuredBody")
    if body is not None:
        doc.level = 3
        _sections(doc, body)
        return
    doc.problems.append("Le document CDA n'a pas de corps (ni PDF ni sections).")


def parse_cda(data: bytes) -> Cda:
    """The header and body of a CDA document. Never raises on content: what is wrong is
    listed in ``problems`` (French)."""
    doc = Cda(source=data)
    try:
        root = parse_xml(data, what="Le document CDA")
    except UnsafeXml as exc:
        doc.problems.append(str(exc))
        return doc
    if root.tag != f"{H}ClinicalDocument":
        doc.problems.append("Ce fichier n'est pas un document CDA (ClinicalDocument).")
        return doc
    code = root.find(f"{H}code")
    if code is not None:
        doc.type_code, doc.type_label = code.get("code", ""), code.get("displayName", "")
    doc.title = _text(root.find(f"{H}title"))
    when = root.find(f"{H}effectiveTime")
    doc.date = hl7_date(when.get("value", "")) if when is not None else ""
    conf = root.find(f"{H}confidentialityCode")
    doc.confidentiality = conf.get("code", "") if conf is not None else ""
    _patient(doc, root)
    assigned = _first(root, "h:author/h:assignedAuthor")
    if assigned is not None:
        doc.author = _person(assigned.find(f"{H}assignedPerson/{H}name"))
        doc.structure = _text(assigned.find(f"{H}representedOrganization/{H}name"))
    if not doc.structure:
        doc.structure = _text(
            _first(
                root,
                "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:name",
            )
        )
    _body(doc, root)
    return doc
