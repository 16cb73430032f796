"""The coded XDS metadata of a health document we send (issue 20 leftovers): classCode,
healthcareFacilityTypeCode and practiceSettingCode agree with the CDA header field by field;
every code is the one the ANS samples and value sets give; the structure's type is chosen in
the console, else taken from the directory's sector of its professionals."""

from __future__ import annotations

import html
import io
import zipfile
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from lxml import etree

from accounts.models import Activity, AuditEvent, Membership, Structure, User
from mailboxes.documents.build import (
    CLASS_CODE,
    DOCUMENT_TYPES,
    FACILITY_TYPE_CODE,
    PRACTICE_SETTING_CODE,
    HealthDocument,
    cda_problems,
    health_document_build,
)
from mailboxes.documents.codes import (
    CLASS_OF_TYPE,
    FACILITY_TYPES,
    PRACTICE_OID,
    PRACTICE_SETTINGS,
    SECTOR_OID,
    sector_of,
)
from mailboxes.documents.xdm import RIM
from mailboxes.models import Mailbox
from mailboxes.webmail.services.compose import DocumentRequest, health_document_of
from tests.factories import SHARED, make_membership, make_professional, make_structure
from tests.mailboxes.test_documents_send import AUTHOR_ID, NOW, PATIENT
from tests.mailboxes.xdm_build import tiny_pdf

H = "{urn:hl7-org:v3}"
SAMPLES = SHARED / "samples" / "cda"
pytestmark = pytest.mark.django_db
EVENT_CODE_LIST = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"  # IHE ITI TF-3 Table 4.2.5-1


def _build(sector: str, type_code: str = "74207-2") -> HealthDocument:
    return health_document_build(
        pdf=tiny_pdf(),
        patient=PATIENT,
        author=replace(AUTHOR_ID, sector=sector),
        type_code=type_code,
        act_date=date(2026, 12, 1),
        sender="claire.martin@ehpad.mssante.fr",
        now=NOW,
    )


def _header_and_entry(built: HealthDocument) -> tuple[etree._Element, etree._Element]:
    with zipfile.ZipFile(io.BytesIO(built.archive)) as zipped:
        meta = etree.fromstring(zipped.read("IHE_XDM/SUBSET01/METADATA.XML"))
    [entry] = meta.iter(f"{RIM}ExtrinsicObject")
    return etree.fromstring(built.cda, etree.XMLParser(huge_tree=True)), entry


def _classified(entry: etree._Element, scheme: str) -> list[tuple[str, str, str]]:
    """(nodeRepresentation, codingScheme, label) of each classification in ``scheme``."""
    found = []
    for c in entry.iterfind(f"{RIM}Classification"):
        if c.get("classificationScheme") == scheme:
            [coding] = [
                v.text
                for s in c.iterfind(f"{RIM}Slot")
                if s.get("name") == "codingScheme"
                for v in s.iterfind(f"{RIM}ValueList/{RIM}Value")
            ]
            label = c.find(f"{RIM}Name/{RIM}LocalizedString").get("value")
            found.append((c.get("nodeRepresentation"), coding, label))
    return found


def _coded(node: etree._Element | None) -> tuple[str, str, str]:
    assert node is not None
    return node.get("code"), node.get("codeSystem"), node.get("displayName")


@pytest.fixture(scope="module")
def ehpad_dlu() -> HealthDocument:
    return _build("SA17")


def test_the_facility_type_and_the_practice_setting_repeat_the_cda_header(
    ehpad_dlu: HealthDocument,
) -> None:
    cda, entry = _header_and_entry(ehpad_dlu)
    # healthcareFacilityTypeCode <- componentOf/encompassingEncounter/location/
    # healthCareFacility/code (the ANS stylesheet CDAHeaderToXDM.xsl).
    place = cda.find(
        f"{H}componentOf/{H}encompassingEncounter/{H}location/{H}healthCareFacility/{H}code"
    )
    assert _classified(entry, FACILITY_TYPE_CODE) == [_coded(place)]
    assert _coded(place) == ("SA17", SECTOR_OID, "Etablissement pour personnes âgées")
    # practiceSettingCode <- documentationOf/serviceEvent/performer/assignedEntity/
    # representedOrganization/standardIndustryClassCode.
    performer = cda.find(f"{H}documentationOf/{H}serviceEvent/{H}performer/{H}assignedEntity")
    setting = performer.find(f"{H}representedOrganization/{H}standardIndustryClassCode")
    assert _classified(entry, PRACTICE_SETTING_CODE) == [_coded(setting)]
    assert _coded(setting) == (
        "ESSMS",
        PRACTICE_OID,
        "Etablissement ou Service Social ou Médico-Social",
    )
    # The performer is the author, at the author's structure.
    author = cda.find(f"{H}author/{H}assignedAuthor")
    assert performer.find(f"{H}id").get("extension") == author.find(f"{H}id").get("extension")
    organisation = performer.find(f"{H}representedOrganization/{H}id")
    assert organisation.get("extension") == "1750803447"
    # classCode: the class ASS_X04 gives the header's type code (a DLU is a « Synthèse »).
    type_code = cda.find(f"{H}code").get("code")
    assert _classified(entry, CLASS_CODE) == [
        (CLASS_OF_TYPE[type_code], "1.2.250.1.213.1.1.4.1", "Synthèse")
    ]
    # eventCodeList: one per documentationOf/serviceEvent/code; ours has none.
    assert cda.find(f"{H}documentationOf/{H}serviceEvent/{H}code") is None
    assert _classified(entry, EVENT_CODE_LIST) == []
    assert cda_problems(ehpad_dlu.cda) == []


@pytest.mark.parametrize("type_code", sorted(DOCUMENT_TYPES))
def test_every_document_type_has_its_class(type_code: str) -> None:
    cda, entry = _header_and_entry(_build("SA16", type_code))
    [(code, system, label)] = _classified(entry, CLASS_CODE)
    assert code == CLASS_OF_TYPE[cda.find(f"{H}code").get("code")]
    assert system == "1.2.250.1.213.1.1.4.1" and label
    assert _classified(entry, PRACTICE_SETTING_CODE)[0][0] == "ESSMS"


def test_a_sector_without_a_practice_setting_leaves_it_out_of_header_and_metadata() -> None:
    cda, entry = _header_and_entry(_build("SA43"))
    place = cda.find(
        f"{H}componentOf/{H}encompassingEncounter/{H}location/{H}healthCareFacility/{H}code"
    )
    assert _classified(entry, FACILITY_TYPE_CODE) == [_coded(place)]
    assert _coded(place) == ("SA43", SECTOR_OID, "Secteur non défini")
    assert cda.find(f".//{H}standardIndustryClassCode") is None
    assert _classified(entry, PRACTICE_SETTING_CODE) == []


@pytest.mark.parametrize(
    ("sample", "facility", "setting"),
    [
        ("DLU-EHPAD-FLUDT_2022.01.xml", "SA17", "ETABLISSEMENT"),
        ("DOC_NON_STRUCTURE_CDA-R2-N1.xml", "SA07", "AMBULATOIRE"),
    ],
)
def test_our_codes_are_those_of_the_ans_samples(sample: str, facility: str, setting: str) -> None:
    root = etree.parse(str(SAMPLES / sample)).getroot()
    code, system, label = _coded(root.find(f".//{H}healthCareFacility/{H}code"))
    assert (code, system) == (facility, SECTOR_OID) and FACILITY_TYPES[code] == label
    code, system, label = _coded(root.find(f".//{H}serviceEvent//{H}standardIndustryClassCode"))
    assert (code, system) == (setting, PRACTICE_OID) and PRACTICE_SETTINGS[code] == label


def _activity(user: User, structure: Structure, sector: str, position: int = 0) -> None:
    Activity.objects.create(user=user, position=position, sector_code=sector, structure=structure)


def test_the_sector_comes_from_the_console_else_the_directory_else_undefined() -> None:
    structure = make_structure()
    assert sector_of(structure) == ("SA43", "defaut")
    nurse, doctor, other = make_professional(), make_professional(), make_professional()
    _activity(nurse, structure, "SA17")
    _activity(doctor, structure, "SA17")
    _activity(other, structure, "SA01")
    _activity(other, make_structure(name="Autre", finess="690002365", domain=None), "SA16", 1)
    assert sector_of(structure) == ("SA17", "annuaire")
    structure.facility_type_code = "SA16"
    structure.save()
    assert sector_of(structure) == ("SA16", "structure")


def _page(response: Any) -> str:
    return html.unescape(response.content.decode())


def test_the_director_chooses_the_structures_type_in_the_console() -> None:
    structure = make_structure()
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    _activity(director, structure, "SA17")
    client = Client()
    client.force_login(director)
    url = reverse("console:sector", args=[structure.public_id])

    page = _page(client.get(url))
    assert "Etablissement pour personnes âgées" in page and "d'après le secteur" in page
    assert "Etablissement ou Service Social ou Médico-Social" in page

    refused = client.post(url, {"secteur": "SA58"})  # a J02 code, not a structure we host
    assert refused.status_code == 400 and "Sélectionnez un choix valide" in _page(refused)
    structure.refresh_from_db()
    assert structure.facility_type_code == ""

    done = client.post(url, {"secteur": "SA16"}, follow=True)
    assert "Le type de structure est enregistré." in _page(done)
    structure.refresh_from_db()
    assert structure.facility_type_code == "SA16"
    trace = AuditEvent.objects.get(action="structure.sector_set")
    assert trace.actor == director and trace.details == {"before": "", "after": "SA16"}


def test_a_document_sent_from_a_bal_names_its_structures_type() -> None:
    structure = make_structure()
    structure.facility_type_code = "SA16"
    structure.save()
    doctor = make_professional(first_name="Claire", last_name="Martin")
    box = Mailbox(structure=structure, address="claire.martin@ehpad-les-tilleuls.mssante.fr")
    request = DocumentRequest(
        pdf=tiny_pdf(), patient=PATIENT, type_code="18776-5", act_date=date(2026, 12, 1)
    )
    built = health_document_of(mailbox=box, actor=doctor, request=request)
    cda, entry = _header_and_entry(built)
    assert _classified(entry, FACILITY_TYPE_CODE) == [
        ("SA16", SECTOR_OID, "Etablissement pour personnes handicapées")
    ]
    assert _classified(entry, PRACTICE_SETTING_CODE)[0][0] == "ESSMS"
    assert _classified(entry, CLASS_CODE)[0][:2] == ("44", "1.2.250.1.213.1.1.4.1")
    place = cda.find(f".//{H}healthCareFacility/{H}id")
    assert place.get("extension") == "1690001235"  # idNat_Struct: 1 + FINESS
