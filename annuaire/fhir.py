"""Publication of the BALs we host to the national directory, as the FHIR MSS implementation
guide defines it (../shared/reference/mssante-spec.md §4, §5.1): a FHIR Patch (`Parameters`)
on the carrier resource, targeted by a conditional PATCH on its business identifier, with the
BAL as a `telecom` ContactPoint carrying the `as-ext-mailbox-mss-metadata` extension.

Pure functions over plain records: the mailboxes app describes its BALs (BalRecord), this
module builds the requests and compares them with what the last imported extraction says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from annuaire.models import DirectoryEntry

METADATA_URL = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata"
EMAIL_TYPE_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
TYPE_MESSAGERIE = (
    "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
)
TYPE_BAL = "https://mos.esante.gouv.fr/NOS/TRE_R257-TypeBAL/FHIR/TRE-R257-TypeBAL"
IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
IDNAT_STRUCT = "urn:oid:1.2.250.1.71.4.2.2"
FINESS = "https://finess.esante.gouv.fr"


@dataclass(frozen=True)
class BalRecord:
    """What the directory must know of one BAL we host (§5.1 data model)."""

    address: str
    kind: str  # PER / ORG / APP
    active: bool  # False: closed, to withdraw from the directory
    national_id: str = ""  # PER: the holder's idNat_PS (8 + RPPS)
    structure_kind: str = ""  # ORG/APP: finess_ej / finess_eg / siret
    structure_id: str = ""
    description: str = ""
    service: str = ""
    responsible: str = ""  # free text: the habilitated professional's name
    liste_rouge: bool = False


@dataclass
class Publication:
    record: BalRecord
    resource: str  # Practitioner / Organization
    target: str  # conditional PATCH target, relative to the FHIR base
    operation: str  # insert / replace / delete
    body: dict[str, Any]
    differences: list[str] = field(default_factory=list)  # French, vs the last extraction
    in_extraction: bool = False


def _contact_point(record: BalRecord) -> dict[str, Any]:
    metadata: list[dict[str, Any]] = [
        {
            "url": "type",
            "valueCodeableConcept": {"coding": [{"system": TYPE_BAL, "code": record.kind}]},
        }
    ]
    if record.kind != "PER":  # PER: only listeRouge and rank are editable (§4)
        metadata += [
            {"url": key, "valueString": value}
            for key, value in (
                ("description", record.description),
                ("service", record.service),
                ("responsible", record.responsible),
            )
            if value
        ]
    metadata.append({"url": "listeRouge", "valueBoolean": record.liste_rouge})
    return {
        "system": "email",
        "value": record.address,
        "extension": [
            {
                "url": EMAIL_TYPE_URL,
                "valueCoding": {"system": TYPE_MESSAGERIE, "code": "MSSANTE"},
            },
            {"url": METADATA_URL, "extension": metadata},
        ],
    }


def _target(record: BalRecord) -> tuple[str, str]:
    if record.kind == "PER":
        return "Practitioner", f"Practitioner?identifier={IDNAT_PS}|{record.national_id}"
    if record.structure_kind.startswith("finess"):
        return "Organization", f"Organization?identifier={FINESS}|{record.structure_id}"
    # SIRET: the national structure id is "3" + SIRET (idNat_Struct prefixes, reference §D)
    return "Organization", f"Organization?identifier={IDNAT_STRUCT}|3{record.structure_id}"


def publication_build(record: BalRecord, listed: DirectoryEntry | None) -> Publication:
    """The PATCH for one BAL, chosen against what the last extraction shows: insert a BAL the
    directory does not show, replace one it shows, delete a closed one it still shows."""
    resource, target = _target(record)
    where = f"{resource}.telecom.where(value = '{record.address}')"
    parts: list[dict[str, Any]]
    if not record.active:
        operation, parts = "delete", [{"name": "path", "valueString": where}]
    elif listed is None:
        operation = "insert"
        parts = [
            {"name": "path", "valueString": f"{resource}.telecom"},
            {"name": "index", "valueInteger": 0},
            {"name": "value", "valueContactPoint": _contact_point(record)},
        ]
    else:
        operation = "replace"
        parts = [
            {"name": "path", "valueString": where},
            {"name": "value", "valueContactPoint": _contact_point(record)},
        ]
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "operation", "part": [{"name": "type", "valueCode": operation}, *parts]}
        ],
    }
    publication = Publication(record, resource, target, operation, body)
    publication.in_extraction = listed is not None
    publication.differences = publication_differences(record, listed)
    return publication


def publication_differences(record: BalRecord, listed: DirectoryEntry | None) -> list[str]:
    """What the last imported extraction says differently (French, for the console)."""
    if listed is None:
        if not record.active:
            return []
        if record.liste_rouge:
            return []  # liste rouge: the public extraction leaves it out, as it should
        if record.kind == "APP":
            return []  # APP BALs are not in the flat extraction (reference §A1)
        return ["Absente de l'extraction nationale : à publier."]
    out = []
    if not record.active:
        out.append("BAL fermée encore présente dans l'extraction : à retirer.")
    if record.liste_rouge:
        out.append("BAL en liste rouge pourtant présente dans l'extraction publique.")
    if listed.bal_type != record.kind:
        out.append(f"Type {listed.bal_type} dans l'extraction, {record.kind} chez nous.")
    if record.kind == "PER" and listed.pp_national_id != record.national_id:
        out.append(
            f"Titulaire {listed.pp_national_id or '(aucun)'} dans l'extraction, "
            f"{record.national_id} chez nous."
        )
    if record.kind != "PER" and record.service != listed.service:
        out.append(
            f"Service « {listed.service or '(vide)'} » dans l'extraction, "
            f"« {record.service or '(vide)'} » chez nous."
        )
    return out
