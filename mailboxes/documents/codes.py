"""Coded values of the XDS metadata (mssante-spec §3.4) that no form asks: the class of a
document, the type of the structure that produced it and the practice setting. Never invented:
every code and label below is copied from an ANS value set, cited where it is defined.

Sources:
- JDV_J02 « XdsHealthcareFacilityTypeCode-CISIS » (OID 1.2.250.1.213.1.1.5.466, revision
  2024-12-13), as shipped with the ANS CDA test contents (ansforge/TestContenuCDA-3-0, commit
  7cd489b3, ``jeuxDeValeurs/JDV_J02_XdsHealthcareFacilityTypeCode_CISIS.xml``: the repository
  and commit of ../shared/samples/cda). Its codes come from TRE_R02-SecteurActivite
  (OID 1.2.250.1.71.4.2.4), the « secteur d'activité » the RPPS gives each situation
  d'exercice (PSC ``codeSecteurDactivite``, annuaire-psc-ins.md).
- JDV_J04 « XdsPracticeSettingCode-CISIS » (OID 1.2.250.1.213.1.1.5.467, revision
  2024-09-27), same repository and commit (``jeuxDeValeurs/JDV_J04_XdsPracticeSettingCode_
  CISIS.xml``), codes of TRE_A01-CadreExercice (OID 1.2.250.1.213.1.1.4.9).
- JDV_J06 « XdsClassCode-CISIS » (OID 1.2.250.1.213.1.1.5.462, version 20230922120000), codes
  of TRE_A03-ClasseDocument (OID 1.2.250.1.213.1.1.4.1), ANS « Terminologies de santé »
  (ansforge/IG-terminologie-de-sante, ValueSet JDV-J06-XdsClassCode-CISIS).
- ASS_X04 « CorrespondanceType-Classe-CISIS » (OID 1.2.250.1.213.1.1.4.249, version
  20250415120000, ansforge/ig-terminlogie-de-sante ``ASS-X04-CorrespondanceType-Classe-
  CISIS.fsh``): the classCode is deduced from the typeCode by this table (CI-SIS « Lien entre
  l'en-tête CDA et les métadonnées XDS »: « classCode est déduit de typeCode selon la table de
  correspondance ... ASS_X04 »).
- Where the CDA header carries each of them: the ANS stylesheet that derives XDM metadata
  from a CDA header (TestContenuCDA-3-0 ``FeuilleDeStyle/CDAHeaderToXDM.xsl``):
  healthcareFacilityTypeCode = componentOf/encompassingEncounter/location/healthCareFacility/
  code, practiceSettingCode = documentationOf/serviceEvent/performer/assignedEntity/
  representedOrganization/standardIndustryClassCode, eventCodeList = each documentationOf/
  serviceEvent/code. The ANS samples show both: the DLU of an EHPAD carries SA17 and
  ETABLISSEMENT, the level-1 document SA07 and AMBULATOIRE.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounts.models import Structure

SECTOR_OID = "1.2.250.1.71.4.2.4"  # TRE_R02-SecteurActivite
PRACTICE_OID = "1.2.250.1.213.1.1.4.9"  # TRE_A01-CadreExercice
CLASS_OID = "1.2.250.1.213.1.1.4.1"  # TRE_A03-ClasseDocument


@dataclass(frozen=True)
class Code:
    code: str
    label: str
    system: str


# JDV_J02, the concepts of TRE_R02 (its two TRE_A00 concepts, EXP_PATIENT and SNR, name no
# structure), in the value set's order.
FACILITY_TYPES: dict[str, str] = {
    "SA01": "Etablissement public de santé",
    "SA02": "Hôpital militaire du Service de santé des armées",
    "SA03": "Etablissement privé PSPH",
    "SA04": "Etablissement privé non PSPH",
    "SA05": "Centre de santé",
    "SA06": "Autre structure du Service de santé des armées",
    "SA07": "Cabinet individuel",
    "SA08": "Cabinet de groupe",
    "SA09": "Exercice en société",
    "SA10": "Transporteur sanitaire",
    "SA12": "Etablissement de soins et prévention",
    "SA13": "Prévention et soins en entreprise",
    "SA14": "Etablissements scolaires, universitaires et de formation hors champ FINESS",
    "SA15": "PMI et Planification familiale",
    "SA16": "Etablissement pour personnes handicapées",
    "SA17": "Etablissement pour personnes âgées",
    "SA18": "Etablissement aide à la famille",
    "SA19": "Etablissements FINESS de formation aux professions sanitaires et sociales",
    "SA20": "Etablissement pour la protection de l'enfance",
    "SA21": "Etablissement d'hébergement et de réadaptation",
    "SA22": "Recherche",
    "SA23": "Assurance privée",
    "SA24": "Organisme de sécurité sociale",
    "SA25": "Laboratoire de biologie médicale",
    "SA26": "Ministère ou Service déconcentré",
    "SA27": "Collectivité territoriale",
    "SA28": "Association ou organisme humanitaire",
    "SA29": "Laboratoire d'analyses et de biologie médicale",
    "SA30": "Autre établissement sanitaire",
    "SA31": "Répartition et Distribution de médicaments et dispositifs médicaux",
    "SA32": "Fabrication, Exploitation et Importation de médicaments et dispositifs médicaux",
    "SA33": "Pharmacie d'officine",
    "SA34": "Centre de dialyse",
    "SA35": "Para-pharmacie",
    "SA36": "Centre anti-cancer",
    "SA37": "Centre de transfusion sanguine",
    "SA38": "Pharmacie minière",
    "SA39": "Pharmacie mutualiste",
    "SA40": "Secteur privé, praticien hospitalier temps plein",
    "SA41": "Autre établissement du domaine social ou médico-social",
    "SA42": "Appareillage médical",
    "SA43": "Secteur non défini",
    "SA44": "Recrutement ou Gestion RH",
    "SA45": "Communication, Marketing, Consulting, Média",
    "SA46": (
        "Fabrication, Exploitation, Importation, Répartition, Distribution médicaments et "
        "dispositifs médicaux"
    ),
    "SA47": "Incendie et secours",
    "SA48": "Entreprise industrielle et tertiaire hors industrie pharmaceutique",
    "SA49": "Entité Outre-Mer",
    "SA50": "Permanence des soins ambulatoires hors cabinet",
    "SA51": "Structure de coopération avec autorisation de soins",
    "SA52": "Maison de santé ou Pôle de santé",
    "SA53": "Siège administratif d'un établissement de santé",
    "SA54": "Centre de dépistage et de prévention",
    "SA55": "Laboratoire pharmaceutique préparant et délivrant des allergènes",
    "SA56": "Propharmacie",
    "SA57": "Structure de coopération avec mission de coordination de soins",
    "SA58": "Entreprise de taxis",
    "SA59": "Laboratoire de biologie médicale hors catégorie standard",
    "SA60": "Centres médicaux SNCF",
    "SA61": "Structure Dispensatrice à domicile d'Oxygène à usage médical",
    "SA63": "Communauté professionnelle territoriale de santé et équipe de soins spécialisés",
    "SA64": "Société de téléconsultation",
    "SA65": "Antenne de pharmacie",
    "SA66": "Services de Prévention et de Santé au Travail (SPST)",
    "SA67": "Maisons médicales de garde (MMG)",
    "SA68": "Services départementaux d'incendie et de secours",
    "SA69": "Maisons de naissance",
}
UNDEFINED_SECTOR = "SA43"  # JDV_J02 « Secteur non défini »: a structure nobody has typed yet

# JDV_J04, the concepts of TRE_A01 (EXP_PATIENT and SNR left out, as above).
PRACTICE_SETTINGS: dict[str, str] = {
    "AMBULATOIRE": "Ambulatoire",
    "AMO": "Organisme d'assurance maladie obligatoire",
    "DEPISTAGE": "Dépistage",
    "ESSMS": "Etablissement ou Service Social ou Médico-Social",
    "ETABLISSEMENT": "Etablissement de santé",
    "HAD": "Hospitalisation à domicile",
    "MAD": "Maintien à domicile",
    "PALLIATIF": "Soins palliatifs",
    "SAD": "Soins à domicile",
    "SAMU_SMUR": "SAMU/SMUR",
}

# The structures this portal hosts, by sector (the choice offered in the console), with the
# practice setting their documents are produced in: the social and medico-social sectors
# (EHPAD, IME, SSIAD, foyers...) in « ESSMS », health establishments in « ETABLISSEMENT »,
# practices and health centres in « AMBULATOIRE » (the pairing SA07 + AMBULATOIRE is the ANS
# level-1 sample's). Every code is in JDV_J02 / JDV_J04 above.
PRACTICE_SETTING_OF_SECTOR: dict[str, str] = {
    "SA17": "ESSMS",  # Etablissement pour personnes âgées (EHPAD, résidence autonomie, SSIAD)
    "SA16": "ESSMS",  # Etablissement pour personnes handicapées (IME, MAS, FAM, SESSAD)
    "SA20": "ESSMS",  # Etablissement pour la protection de l'enfance
    "SA18": "ESSMS",  # Etablissement aide à la famille
    "SA21": "ESSMS",  # Etablissement d'hébergement et de réadaptation
    "SA41": "ESSMS",  # Autre établissement du domaine social ou médico-social
    "SA01": "ETABLISSEMENT",  # Etablissement public de santé
    "SA03": "ETABLISSEMENT",  # Etablissement privé PSPH
    "SA04": "ETABLISSEMENT",  # Etablissement privé non PSPH
    "SA30": "ETABLISSEMENT",  # Autre établissement sanitaire
    "SA05": "AMBULATOIRE",  # Centre de santé
    "SA52": "AMBULATOIRE",  # Maison de santé ou Pôle de santé
    "SA07": "AMBULATOIRE",  # Cabinet individuel
    "SA08": "AMBULATOIRE",  # Cabinet de groupe
    "SA09": "AMBULATOIRE",  # Exercice en société
}

# JDV_J06: the classes our document types fall in.
CLASSES: dict[str, str] = {
    "10": "Compte rendu",
    "11": "Synthèse",
    "31": "Imagerie médicale",
    "44": "Plan de soins, protocole de soins",
}
# ASS_X04, the rows of the document types compose offers (build.DOCUMENT_TYPES, LOINC).
CLASS_OF_TYPE: dict[str, str] = {
    "11488-4": "10",
    "34112-3": "10",
    "74207-2": "11",
    "83981-1": "10",
    "88348-8": "11",
    "11502-2": "10",
    "18748-4": "31",
    "18776-5": "44",
    "80788-3": "44",
    "11506-3": "10",
    "28653-4": "10",
}


def class_of(type_code: str) -> Code:
    """The XDS classCode of a document of type ``type_code`` (ASS_X04). KeyError for a type
    the table does not list (none of build.DOCUMENT_TYPES)."""
    code = CLASS_OF_TYPE[type_code]
    return Code(code, CLASSES[code], CLASS_OID)


def facility(code: str) -> Code:
    return Code(code, FACILITY_TYPES[code], SECTOR_OID)


def practice_setting_of(sector: str) -> Code | None:
    """The practice setting of a structure of ``sector``, None for a sector the table above
    does not pair (then neither the CDA header nor the metadata carry one)."""
    setting = PRACTICE_SETTING_OF_SECTOR.get(sector)
    return Code(setting, PRACTICE_SETTINGS[setting], PRACTICE_OID) if setting else None


def sector_choices() -> list[tuple[str, str]]:
    """The console's choice: the sectors paired with a practice setting, by label."""
    return sorted(
        ((c, FACILITY_TYPES[c]) for c in PRACTICE_SETTING_OF_SECTOR), key=lambda item: item[1]
    )


def sector_of(structure: Structure) -> tuple[str, str]:
    """(sector code, where it comes from) for ``structure``: the type chosen in the console;
    else the sector the RPPS gives most often to the situations d'exercice at this structure
    (Pro Santé Connect ``codeSecteurDactivite`` of its members, annuaire-psc-ins.md), when it
    is a JDV_J02 code; else SA43 « Secteur non défini ». The source is "structure",
    "annuaire" or "defaut"."""
    if structure.facility_type_code in FACILITY_TYPES:
        return structure.facility_type_code, "structure"
    sectors = structure.activities.order_by("sector_code").values_list("sector_code", flat=True)
    found = Counter(code for code in sectors if code in FACILITY_TYPES).most_common(1)
    if found:
        return found[0][0], "annuaire"
    return UNDEFINED_SECTOR, "defaut"
