"""Health documents built for sending (mssante-spec §3.2-§3.4): a PDF becomes a CDA R2 level-1
document (« structuration minimale », the shape of the ANS sample
``DOC_NON_STRUCTURE_CDA-R2-N1.xml``), validated against the CDA R2 schema with the French
extensions (``xsd/CDA_extended.xsd``, copied from ../shared/samples/cda/xsd), wrapped in an
``IHE_XDM.ZIP`` whose XDS metadata repeat the CDA header, beside the same PDF as PDF/A-1b
(Ghostscript), with the subject (ECO.2.1.3), the PDF name (ECO.2.1.6) and the MSSanté headers
(ECO.2.4.1, ECO.2.4.2). Pure building over bytes: no store, no transport.
"""

from __future__ import annotations

import base64
import functools
import glob
import hashlib
import io
import subprocess
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from mailboxes.documents.codes import (
    UNDEFINED_SECTOR,
    Code,
    class_of,
    facility,
    practice_setting_of,
)
from mailboxes.documents.xdm import (
    AUTHOR,
    CONFIDENTIALITY_CODE,
    DOCUMENT_ENTRY,
    PATIENT_ID,
    SUBMISSION_PATIENT_ID,
    TYPE_CODE,
)

HERE = Path(__file__).resolve().parent
CDA_SCHEMA = HERE / "xsd" / "CDA_extended.xsd"
PDFA_DEF = HERE / "pdfa_def.ps"
LOINC = "2.16.840.1.113883.6.1"
# Document types an ESMS sends, codes and labels of the CI-SIS value set JDV_J07
# « XdsTypeCode-CISIS » (OID 1.2.250.1.213.1.1.5.471, ANS terminologies 1.12.0, 2026-06-29),
# all LOINC. 11502-2 and 74207-2 are also the codes of the ANS samples
# (../shared/samples/cda/README.md); mssante-spec §3.2 cites 34112-3 and 15508-5.
DOCUMENT_TYPES: dict[str, str] = {
    "11488-4": "CR ou fiche de consultation ou de visite",
    "34112-3": "CR hospitalier (séjour)",
    "74207-2": "Document de liaison d'urgence",
    "83981-1": "Lettre de liaison à la sortie d'une structure sociale ou médico-sociale",
    "88348-8": "Lettre de liaison d'entrée en structure sociale ou médico-sociale",
    "11502-2": "CR d'examens biologiques",
    "18748-4": "CR d'imagerie médicale",
    "18776-5": "Plan personnalisé de soins",
    "80788-3": "Projet personnalisé d'accompagnement",
    "11506-3": "CR ou fiche de suivi de soins par auxiliaire médical",
    "28653-4": "Document du secteur social / médico-social",
}
# INS OIDs (mssante-spec §3.4): NIR, NIA, and the test NIR every non-production run uses
# (the ANS samples carry their INS under 1.2.250.1.213.1.4.10).
INS_NIR, INS_NIA, INS_NIR_TEST = (
    "1.2.250.1.213.1.4.8",
    "1.2.250.1.213.1.4.9",
    "1.2.250.1.213.1.4.10",
)
RPPS_OID = "1.2.250.1.71.4.2.1"  # idNat_PS (mssante-spec §3.4)
STRUCTURE_OID = "1.2.250.1.71.4.2.2"  # idNat_Struct
CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"  # HL7 Confidentiality, « N » Normal
# IHE XDS-SD: a PDF scanned or produced elsewhere, wrapped in CDA (ITI TF-3 §5.2, formatCode).
XDS_SD_PDF = "urn:ihe:iti:xds-sd:pdf:2008"
FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DOCUMENT_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SUBMISSION_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
CONTENT_TYPE_CODE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SUBMISSION_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SUBMISSION_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
# DocumentEntry classification schemes (IHE ITI TF-3 Table 4.2.5-1; the ANS stylesheet
# CDAHeaderToXDM.xsl uses the same two last ones, mailboxes.documents.codes).
CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
FACILITY_TYPE_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
PRACTICE_SETTING_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
SUBSET = "SUBSET01"
CDA_NAME = "DOC0001.XML"
SEX_LABELS = {"F": "Féminin", "M": "Masculin", "U": "Inconnu"}


class DocumentRefused(ValueError):
    """The document cannot be built; ``str(exc)`` says why, in French."""


@dataclass(frozen=True)
class PatientIdentity:
    """The patient as typed in compose: INS and the four identity traits (Ref#2 §3.8.2)."""

    ins: str  # 15 characters, checked by annuaire.ins.parse_ins
    family: str  # birth name
    given: str  # first given name at birth
    birth_date: date
    sex: str  # F, M, U
    qualified: bool  # status « identité qualifiée » (INSi and an identity document, RNIV)
    test_identity: bool = False  # non-production runs: the test NIR OID

    @property
    def oid(self) -> str:
        if self.ins[0] in "78":
            return INS_NIA
        return INS_NIR_TEST if self.test_identity else INS_NIR

    @property
    def ins_qualified(self) -> bool:
        """ECO.2.4.2 / Ref#2 §3.8.2: a qualified INS is the matricule with its OID and the four
        traits, for an identity whose status is « qualifiée »."""
        return self.qualified and all(
            (self.ins, self.family, self.given, self.birth_date, self.sex)
        )

    def identifier(self, structure_id: str, document_id: uuid.UUID) -> tuple[str, str]:
        """(root, extension) naming the patient in the CDA and the metadata. The INS only for
        a qualified identity: « Le matricule INS ne peut être véhiculé que dans le cas d'une
        identité qualifiée » (annuaire-psc-ins.md, RNIV statuses). Otherwise an identifier
        local to the sending structure (ISO/IEC 9834-8 OID from its idNat_Struct), drawn from
        the document's id so that nothing of the matricule leaks; the recipient matches on
        the traits."""
        if self.ins_qualified:
            return self.oid, self.ins
        root = _oid_of(uuid.uuid5(uuid.NAMESPACE_OID, f"{STRUCTURE_OID}.{structure_id}"))
        return root, uuid.uuid5(document_id, "patient").hex.upper()


@dataclass(frozen=True)
class AuthorIdentity:
    national_id: str  # idNat_PS (« 8 » + RPPS), from Pro Santé Connect
    family: str
    given: str
    structure_name: str
    structure_id: str  # idNat_Struct: « 1 » + FINESS, « 3 » + SIRET
    sector: str = UNDEFINED_SECTOR  # the structure's TRE_R02 sector (codes.sector_of)

    @property
    def facility(self) -> Code:
        """healthcareFacilityTypeCode (JDV_J02)."""
        return facility(self.sector)

    @property
    def practice_setting(self) -> Code | None:
        """practiceSettingCode (JDV_J04), None when the sector pairs with none."""
        return practice_setting_of(self.sector)


@dataclass(frozen=True)
class HealthDocument:
    """What goes into the message: the archive, the PDF/A beside it, their names, the subject
    and the MSSanté headers."""

    archive: bytes
    pdf: bytes
    pdf_name: str
    cda: bytes
    subject: str
    code_cda: str  # X-MSS-CODECDA
    ins_flag: str  # X-MSS-INS


def _hl7_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def _oid_of(value: uuid.UUID) -> str:
    return f"2.25.{value.int}"  # ISO/IEC 9834-8: an OID from a UUID, unique without a registry


def _ascii_upper(text: str) -> str:
    """A name in upper case without accents (ECO.2.1.3: « NOM de naissance en majuscules
    sans accents »)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(folded.upper().split())


def subject_of(*, type_label: str, patient: PatientIdentity) -> str:
    """Référentiel #2 ECO.2.1.3 (mssante-spec §3.3): « XDM/1.0/DDM+<libellé> <NOM> <prénom>
    <JJ/MM/AAAA> », the label cut at 40 characters, the birth name in ASCII upper case."""
    given = " ".join(patient.given.split())
    return (
        f"XDM/1.0/DDM+{type_label[:40]} {_ascii_upper(patient.family)} {given} "
        f"{patient.birth_date:%d/%m/%Y}"
    )


def _name_part(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    kept = "".join(c if c.isalnum() or c in " '-." else " " for c in folded)
    return " ".join(kept.split())  # « _ » separates the fields: never inside one


def pdf_name_of(*, act_date: date, type_label: str, patient: PatientIdentity) -> str:
    """Référentiel #2 ECO.2.1.6 (mssante-spec §3.3): « <date de l'acte>_<type document>_<NOM>_
    <prénom>_<numéro de dossier>.pdf »; no file number here (the only optional field)."""
    parts = [
        f"{act_date:%Y%m%d}",
        _name_part(type_label),
        _ascii_upper(_name_part(patient.family)),
        _name_part(patient.given),
    ]
    return "_".join(parts) + ".pdf"


def _icc_profile() -> str:
    found = sorted(glob.glob("/usr/share/ghostscript/*/iccprofiles/srgb.icc"))
    if not found:
        raise DocumentRefused(
            "La conversion en PDF/A est indisponible (Ghostscript absent) : prévenez l'exploitant."
        )
    return found[-1]


def pdf_to_pdfa(pdf: bytes, *, timeout: float = 60) -> bytes:
    """``pdf`` converted to PDF/A-1b by Ghostscript (ECO.2.1.5 wants a PDF/A-1 beside the
    archive), through pipes: nothing is written to disk. Raises DocumentRefused."""
    icc = _icc_profile()
    command = [
        "gs", "-q", "-dPDFA=1", "-dBATCH", "-dNOPAUSE", "-dSAFER",
        "-sColorConversionStrategy=RGB", "-sDEVICE=pdfwrite", "-dPDFACompatibilityPolicy=1",
        f"--permit-file-read={icc}", f"-sPDFA_ICC={icc}",
        "-sstdout=%stderr", "-sOutputFile=%stdout", str(PDFA_DEF), "-",
    ]  # fmt: skip
    try:
        done = subprocess.run(  # noqa: S603 (fixed arguments, the PDF on stdin)
            command, input=pdf, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise DocumentRefused(
            "La conversion en PDF/A est indisponible (Ghostscript absent) : prévenez l'exploitant."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise DocumentRefused("Le PDF est trop long à convertir en PDF/A.") from exc
    if done.returncode != 0 or not done.stdout.startswith(b"%PDF-"):
        raise DocumentRefused("Ce PDF est illisible : il ne peut pas être converti en PDF/A.")
    return done.stdout


@functools.cache
def _schema() -> etree.XMLSchema:
    """The CDA R2 schema, loaded once per process (a few hundred ms)."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(CDA_SCHEMA), parser))


def cda_problems(cda: bytes) -> list[str]:
    """Where ``cda`` breaks the CDA R2 schema (empty when valid)."""
    schema = _schema()
    root = etree.fromstring(
        cda, etree.XMLParser(no_network=True, resolve_entities=False, huge_tree=True)
    )
    if schema.validate(root):
        return []
    return [f"ligne {e.line} : {e.message}" for e in schema.error_log][:10]


def _attr(value: str) -> str:
    return quoteattr(value)


def _hl7(value: str) -> str:
    """A value inside an HL7 v2 field (XCN, XON, CX), its delimiters escaped (HL7 v2.5 §2.7.4:
    \\F\\ for |, \\S\\ for ^, \\T\\ for &, \\R\\ for ~, \\E\\ for the escape itself)."""
    escapes = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
    return "".join(escapes.get(c, c) for c in value)


def build_cda(
    *,
    pdf: bytes,
    patient: PatientIdentity,
    author: AuthorIdentity,
    type_code: str,
    act_date: date,
    document_id: uuid.UUID,
    now: datetime,
) -> bytes:
    """A CDA R2 level-1 document (structuration minimale, CI-SIS) carrying ``pdf``: header with
    the patient (INS and the four traits), the author (idNat_PS) and the structure as author
    organisation and custodian, the type (LOINC, JDV_J07), confidentiality « N », the act as
    the service event performed by the author at the structure with its practice setting
    (standardIndustryClassCode, JDV_J04), and the structure's type as the encounter's
    healthCareFacility code (JDV_J02): where the ANS derive practiceSettingCode and
    healthcareFacilityTypeCode from (codes.py). No serviceEvent code: no eventCodeList."""
    label = DOCUMENT_TYPES[type_code]
    patient_root, patient_extension = patient.identifier(author.structure_id, document_id)
    when = _hl7_time(now)
    doc_oid = _oid_of(document_id)
    sex = patient.sex if patient.sex in SEX_LABELS else "U"
    author_name = (
        f"<name><given>{escape(author.given)}</given>"
        f"<family>{escape(author.family)}</family></name>"
    )
    structure = (
        f"<id root={_attr(STRUCTURE_OID)} extension={_attr(author.structure_id)}/>"
        f"<name>{escape(author.structure_name)}</name>"
    )
    setting = author.practice_setting
    setting_xml = (
        f"<standardIndustryClassCode code={_attr(setting.code)}"
        f" displayName={_attr(setting.label)} codeSystem={_attr(setting.system)}/>"
        if setting
        else ""
    )
    place = author.facility
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<realmCode code="FR"/>
<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
<templateId root="2.16.840.1.113883.2.8.2.1"/>
<templateId root="1.2.250.1.213.1.1.1.1"/>
<templateId root="1.3.6.1.4.1.19376.1.2.20"/>
<id root={_attr(doc_oid)}/>
<code code={_attr(type_code)} displayName={_attr(label)}
  codeSystem="{LOINC}" codeSystemName="LOINC"/>
<title>{escape(label)}</title>
<effectiveTime value="{when}"/>
<confidentialityCode code="N" displayName="Normal" codeSystem="{CONFIDENTIALITY_OID}"/>
<languageCode code="fr-FR"/>
<setId root={_attr(doc_oid + ".1")}/>
<versionNumber value="1"/>
<recordTarget><patientRole>
<id root={_attr(patient_root)} extension={_attr(patient_extension)}/>
<patient classCode="PSN"><name>
<family qualifier="BR">{escape(patient.family)}</family>
<given qualifier="BR">{escape(patient.given)}</given>
</name>
<administrativeGenderCode code="{sex}" displayName={_attr(SEX_LABELS[sex])}
  codeSystem="2.16.840.1.113883.5.1"/>
<birthTime value="{patient.birth_date:%Y%m%d}"/>
</patient>
</patientRole></recordTarget>
<author><time value="{when}"/><assignedAuthor>
<id root="{RPPS_OID}" extension={_attr(author.national_id)}/>
<assignedPerson>{author_name}</assignedPerson>
<representedOrganization>{structure}</representedOrganization>
</assignedAuthor></author>
<custodian><assignedCustodian><representedCustodianOrganization>{structure}</representedCustodianOrganization></assignedCustodian></custodian>
<legalAuthenticator><time value="{when}"/><signatureCode code="S"/><assignedEntity>
<id root="{RPPS_OID}" extension={_attr(author.national_id)}/>
<assignedPerson>{author_name}</assignedPerson>
</assignedEntity></legalAuthenticator>
<documentationOf><serviceEvent>
<effectiveTime><low value="{act_date:%Y%m%d}"/><high value="{act_date:%Y%m%d}"/></effectiveTime>
<performer typeCode="PRF"><assignedEntity>
<id root="{RPPS_OID}" extension={_attr(author.national_id)}/>
<assignedPerson>{author_name}</assignedPerson>
<representedOrganization>{structure}{setting_xml}</representedOrganization>
</assignedEntity></performer>
</serviceEvent></documentationOf>
<componentOf><encompassingEncounter>
<effectiveTime><low value="{act_date:%Y%m%d}"/><high value="{act_date:%Y%m%d}"/></effectiveTime>
<location><healthCareFacility>
<id root={_attr(STRUCTURE_OID)} extension={_attr(author.structure_id)}/>
<code code={_attr(place.code)} displayName={_attr(place.label)} codeSystem={_attr(place.system)}/>
</healthCareFacility></location>
</encompassingEncounter></componentOf>
<component><nonXMLBody>
<text mediaType="application/pdf" representation="B64">{base64.b64encode(pdf).decode()}</text>
</nonXMLBody></component>
</ClinicalDocument>
"""
    return xml.encode("utf-8")


def _slot(name: str, *values: str) -> str:
    listed = "".join(f"<rim:Value>{escape(v)}</rim:Value>" for v in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{listed}</rim:ValueList></rim:Slot>'


def _classification(
    scheme: str, obj: str, ident: str, code: str = "", coding: str = "", label: str = "",
    slots: str = "",
) -> str:  # fmt: skip
    name = f"<rim:Name><rim:LocalizedString value={_attr(label)}/></rim:Name>" if label else ""
    coding_slot = _slot("codingScheme", coding) if coding else ""
    return (
        f'<rim:Classification classificationScheme="{scheme}" classifiedObject="{obj}"'
        f" nodeRepresentation={_attr(code)} id={_attr(ident)}>"
        f"{slots}{coding_slot}{name}</rim:Classification>"
    )


def _external(scheme: str, obj: str, ident: str, value: str, label: str) -> str:
    return (
        f'<rim:ExternalIdentifier identificationScheme="{scheme}" registryObject="{obj}"'
        f" value={_attr(value)} id={_attr(ident)}>"
        f"<rim:Name><rim:LocalizedString value={_attr(label)}/></rim:Name>"
        "</rim:ExternalIdentifier>"
    )


def metadata_of(
    *,
    cda: bytes,
    patient: PatientIdentity,
    author: AuthorIdentity,
    type_code: str,
    act_date: date,
    document_id: uuid.UUID,
    now: datetime,
) -> bytes:
    """XDS metadata (ebRIM 3.0 SubmitObjectsRequest, IHE ITI TF-3 §4.2) of the one document,
    each field taken from what the CDA header says (CI-SIS « Lien entre l'en-tête CDA et les
    métadonnées XDS », mssante-spec §3.4): patientId = recordTarget id, sourcePatientInfo =
    the traits, author = author, typeCode = code, confidentialityCode, creationTime =
    effectiveTime (UTC), serviceStart/StopTime = the act, uniqueId = the document id,
    classCode = the class of the type (ASS_X04), healthcareFacilityTypeCode = the encounter's
    healthCareFacility code, practiceSettingCode = the performer organisation's
    standardIndustryClassCode (when the sector has one), plus the SHA-1 hash and the size of
    the file. No eventCodeList: the header's serviceEvent has no code."""
    label = DOCUMENT_TYPES[type_code]
    utc = now.astimezone(tz=None).utctimetuple()
    created = (
        f"{utc.tm_year:04d}{utc.tm_mon:02d}{utc.tm_mday:02d}"
        f"{utc.tm_hour:02d}{utc.tm_min:02d}{utc.tm_sec:02d}"
    )
    root, extension = patient.identifier(author.structure_id, document_id)
    # HL7 CX: NH (national health number) for the INS, PI (patient internal) for a local id.
    patient_id = f"{extension}^^^&{root}&ISO^{'NH' if patient.ins_qualified else 'PI'}"
    person = (
        f"{_hl7(author.national_id)}^{_hl7(author.family)}^{_hl7(author.given)}"
        f"^^^^^^&{RPPS_OID}&ISO^D^^^IDNPS"
    )
    institution = (
        f"{_hl7(author.structure_name)}^^^^^^^^^{STRUCTURE_OID}^IDNST^^^{_hl7(author.structure_id)}"
    )
    author_slots = _slot("authorPerson", person) + _slot("authorInstitution", institution)
    sex = patient.sex if patient.sex in SEX_LABELS else "U"
    doc, ss = "Document01", "SubmissionSet01"
    klass, place, setting = class_of(type_code), author.facility, author.practice_setting
    setting_xml = (
        _classification(
            PRACTICE_SETTING_CODE, doc, "cl10", setting.code, setting.system, setting.label
        )
        if setting
        else ""
    )
    entry = (
        f'<rim:ExtrinsicObject id="{doc}" mimeType="text/xml" objectType="{DOCUMENT_ENTRY}"'
        ' status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved">'
        + _slot("creationTime", created)
        + _slot("languageCode", "fr-FR")
        + _slot("legalAuthenticator", person)
        + _slot("serviceStartTime", f"{act_date:%Y%m%d}")
        + _slot("serviceStopTime", f"{act_date:%Y%m%d}")
        + _slot("sourcePatientId", patient_id)
        + _slot(
            "sourcePatientInfo",
            f"PID-3|{patient_id}",
            f"PID-5|{_hl7(patient.family)}^{_hl7(patient.given)}^^^^^L",
            f"PID-7|{patient.birth_date:%Y%m%d}",
            f"PID-8|{sex}",
        )
        + _slot("hash", hashlib.sha1(cda).hexdigest())  # noqa: S324 (XDS mandates SHA-1)
        + _slot("size", str(len(cda)))
        + _slot("URI", CDA_NAME)
        + f"<rim:Name><rim:LocalizedString value={_attr(label)}/></rim:Name>"
        + _classification(AUTHOR, doc, "cl01", slots=author_slots)
        + _classification(CONFIDENTIALITY_CODE, doc, "cl02", "N", CONFIDENTIALITY_OID, "Normal")
        + _classification(
            FORMAT_CODE,
            doc,
            "cl03",
            XDS_SD_PDF,
            "1.3.6.1.4.1.19376.1.2.3",
            "Document à corps non structuré en PDF",
        )
        + _classification(TYPE_CODE, doc, "cl04", type_code, LOINC, label)
        + _classification(CLASS_CODE, doc, "cl08", klass.code, klass.system, klass.label)
        + _classification(FACILITY_TYPE_CODE, doc, "cl09", place.code, place.system, place.label)
        + setting_xml
        + _external(PATIENT_ID, doc, "ei01", patient_id, "XDSDocumentEntry.patientId")
        + _external(
            DOCUMENT_UNIQUE_ID, doc, "ei02", _oid_of(document_id), "XDSDocumentEntry.uniqueId"
        )
        + "</rim:ExtrinsicObject>"
    )
    package = (
        f'<rim:RegistryPackage id="{ss}">'
        + _slot("submissionTime", created)
        + f"<rim:Name><rim:LocalizedString value={_attr(label)}/></rim:Name>"
        + _classification(SUBMISSION_AUTHOR, ss, "cl05", slots=author_slots)
        + _classification(CONTENT_TYPE_CODE, ss, "cl06", type_code, LOINC, label)
        + _external(
            SUBMISSION_UNIQUE_ID,
            ss,
            "ei03",
            _oid_of(document_id) + ".2",
            "XDSSubmissionSet.uniqueId",
        )
        + _external(
            SUBMISSION_SOURCE_ID,
            ss,
            "ei04",
            f"{STRUCTURE_OID}.{author.structure_id}",
            "XDSSubmissionSet.sourceId",
        )
        + _external(SUBMISSION_PATIENT_ID, ss, "ei05", patient_id, "XDSSubmissionSet.patientId")
        + "</rim:RegistryPackage>"
        f'<rim:Classification id="cl07" classifiedObject="{ss}"'
        f' classificationNode="{SUBMISSION_SET}"/>'
        f'<rim:Association id="as01" associationType="urn:oasis:names:tc:ebxml-regrep:'
        f'AssociationType:HasMember" sourceObject="{ss}" targetObject="{doc}">'
        + _slot("SubmissionSetStatus", "Original")
        + "</rim:Association>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"'
        ' xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">'
        f"<rim:RegistryObjectList>{entry}{package}</rim:RegistryObjectList>"
        "</lcm:SubmitObjectsRequest>\n"
    ).encode()


def _readme(author: AuthorIdentity, sender: str, now: datetime) -> bytes:
    return (
        "Archive IHE XDM (IHE ITI TF-1 §16, mssante-spec §3.4)\r\n\r\n"
        f"Expediteur : {sender}\r\n"
        f"Structure : {author.structure_name}\r\n"
        f"Date : {now:%d/%m/%Y %H:%M}\r\n"
        "Application : Portail MSSante (webmail), version 0.1.0\r\n\r\n"
        "Ouvrez INDEX.HTM, ou lisez IHE_XDM/SUBSET01/METADATA.XML avec un logiciel compatible\r\n"
        "IHE XDM.\r\n\r\n"
        "README.TXT\r\nINDEX.HTM\r\nIHE_XDM/\r\n  SUBSET01/\r\n    METADATA.XML\r\n"
        f"    {CDA_NAME}\r\n"
    ).encode()


_INDEX = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" lang="fr"><head><title>IHE XDM</title></head>'
    '<body><p><a href="README.TXT">README.TXT</a></p>'
    f'<p><a href="IHE_XDM/{SUBSET}/METADATA.XML">Métadonnées</a> - '
    f'<a href="IHE_XDM/{SUBSET}/{CDA_NAME}">Document</a></p></body></html>\n'
).encode()


def build_archive(*, cda: bytes, metadata: bytes, readme: bytes) -> bytes:
    """The IHE_XDM.ZIP: README.TXT and INDEX.HTM at the root, the subset with METADATA.XML
    and the CDA (mssante-spec §3.4 layout)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.TXT", readme)
        archive.writestr("INDEX.HTM", _INDEX)
        archive.writestr(f"IHE_XDM/{SUBSET}/METADATA.XML", metadata)
        archive.writestr(f"IHE_XDM/{SUBSET}/{CDA_NAME}", cda)
    return out.getvalue()


def health_document_build(
    *,
    pdf: bytes,
    patient: PatientIdentity,
    author: AuthorIdentity,
    type_code: str,
    act_date: date,
    sender: str,
    now: datetime,
) -> HealthDocument:
    """Everything a message carrying one health document needs. The PDF is converted to
    PDF/A-1b first and that PDF/A is both embedded in the CDA and attached beside the archive
    (ECO.2.1.5: the PDF beside is the one of the level-1 CDA). The CDA is validated against
    the schema before anything is returned. Raises DocumentRefused (French)."""
    if type_code not in DOCUMENT_TYPES:
        raise DocumentRefused("Choisissez le type du document dans la liste.")
    if not pdf.startswith(b"%PDF-"):
        raise DocumentRefused("Le document de santé doit être un fichier PDF.")
    pdfa = pdf_to_pdfa(pdf)
    document_id = uuid.uuid4()
    cda = build_cda(
        pdf=pdfa, patient=patient, author=author, type_code=type_code, act_date=act_date,
        document_id=document_id, now=now,
    )  # fmt: skip
    if problems := cda_problems(cda):
        raise DocumentRefused(
            "Le document CDA produit n'est pas conforme au schéma CDA R2 ("
            + "; ".join(problems[:3])
            + ") : vérifiez l'identité du patient et de l'auteur."
        )
    metadata = metadata_of(
        cda=cda, patient=patient, author=author, type_code=type_code, act_date=act_date,
        document_id=document_id, now=now,
    )  # fmt: skip
    label = DOCUMENT_TYPES[type_code]
    return HealthDocument(
        archive=build_archive(cda=cda, metadata=metadata, readme=_readme(author, sender, now)),
        pdf=pdfa,
        pdf_name=pdf_name_of(act_date=act_date, type_label=label, patient=patient),
        cda=cda,
        subject=subject_of(type_label=label, patient=patient),
        code_cda=type_code,
        ins_flag="O" if patient.ins_qualified else "N",
    )
