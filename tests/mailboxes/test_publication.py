"""Publication of our BALs to the national directory: the FHIR PATCH of the MSS guide, the
differences with the last extraction, the dry run, and who may see it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import Membership, Structure, User
from annuaire.extraction import COLUMNS
from annuaire.fhir import METADATA_URL, Publication
from annuaire.services import directory_import
from mailboxes.console.services.publication import publication_plan
from mailboxes.models import Mailbox
from tests.factories import make_membership, make_professional, make_structure

pytestmark = pytest.mark.django_db


def _box(structure: Structure, local: str, kind: str, **fields: object) -> Mailbox:
    return Mailbox.objects.create(
        structure=structure,
        domain=structure.domains.get(),
        local_part=local,
        address=f"{local}@{structure.domains.get().domain}",
        kind=kind,
        display_name=local,
        **fields,
    )


@pytest.fixture
def hosted() -> tuple[Structure, User]:
    structure = make_structure()
    doctor = make_professional(national_id="810001234567", first_name="Claire", last_name="Martin")
    director = make_professional(first_name="Marc", last_name="Lefebvre")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    _box(structure, "claire.martin", "PER", owner=doctor)
    _box(
        structure,
        "soins",
        "ORG",
        responsible=director,
        service="Soins",
        description="Équipe soignante",
    )
    _box(structure, "ancien", "ORG", responsible=director, status=Mailbox.Status.CLOSED)
    _box(structure, "confidentiel", "ORG", responsible=director, liste_rouge=True)
    return structure, director


def _extraction(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    path = tmp_path / "Extraction_Correspondance_MSSante_202611300300.txt"
    lines = ["|".join(COLUMNS)]
    for values in rows:
        full = dict.fromkeys(COLUMNS, "")
        full.update(values)
        lines.append("|".join(full[c] for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    directory_import(path=path)


def _plan() -> dict[str, Publication]:
    return {p.record.address: p for p in publication_plan()}


def test_each_bal_gets_the_patch_of_the_mss_guide(hosted, tmp_path: Path) -> None:
    _extraction(
        tmp_path,
        [
            {
                "Type de BAL": "PER",
                "Adresse BAL": "claire.martin@ehpad-les-tilleuls.mssante.fr",
                "Identification nationale PP": "810001234567",
            },
            {"Type de BAL": "ORG", "Adresse BAL": "ancien@ehpad-les-tilleuls.mssante.fr"},
        ],
    )
    plan = _plan()

    per = plan["claire.martin@ehpad-les-tilleuls.mssante.fr"]
    assert per.target == "Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|810001234567"
    [operation] = per.body["parameter"]
    parts = {p["name"]: p for p in operation["part"]}
    assert parts["type"]["valueCode"] == "replace"
    assert parts["path"]["valueString"] == (
        "Practitioner.telecom.where(value = 'claire.martin@ehpad-les-tilleuls.mssante.fr')"
    )
    point = parts["value"]["valueContactPoint"]
    metadata = next(e for e in point["extension"] if e["url"] == METADATA_URL)["extension"]
    # PER: only the type and listeRouge (description/service/responsible are ORG/APP fields)
    assert [m["url"] for m in metadata] == ["type", "listeRouge"]
    assert per.differences == []

    org = plan["soins@ehpad-les-tilleuls.mssante.fr"]
    assert org.target == "Organization?identifier=https://finess.esante.gouv.fr|690001235"
    [operation] = org.body["parameter"]
    parts = {p["name"]: p for p in operation["part"]}
    assert (
        parts["type"]["valueCode"],
        parts["path"]["valueString"],
        parts["index"]["valueInteger"],
    ) == ("insert", "Organization.telecom", 0)
    metadata = next(
        e for e in parts["value"]["valueContactPoint"]["extension"] if e["url"] == METADATA_URL
    )["extension"]
    values = {
        m["url"]: m.get("valueString", m.get("valueBoolean"))
        for m in metadata
        if m["url"] != "type"
    }
    assert values == {
        "description": "Équipe soignante",
        "service": "Soins",
        "responsible": "Marc Lefebvre",
        "listeRouge": False,
    }
    assert org.differences == ["Absente de l'extraction nationale : à publier."]

    closed = plan["ancien@ehpad-les-tilleuls.mssante.fr"]
    assert closed.operation == "delete"
    assert closed.differences == ["BAL fermée encore présente dans l'extraction : à retirer."]
    # liste rouge: absent from the public file, as it should be
    assert plan["confidentiel@ehpad-les-tilleuls.mssante.fr"].differences == []


def test_a_different_holder_or_service_in_the_extraction_is_shown(hosted, tmp_path: Path) -> None:
    _extraction(
        tmp_path,
        [
            {
                "Type de BAL": "PER",
                "Adresse BAL": "claire.martin@ehpad-les-tilleuls.mssante.fr",
                "Identification nationale PP": "819999999999",
            },
            {
                "Type de BAL": "ORG",
                "Adresse BAL": "soins@ehpad-les-tilleuls.mssante.fr",
                "Service de rattachement": "Infirmerie",
            },
        ],
    )
    plan = _plan()
    assert plan["claire.martin@ehpad-les-tilleuls.mssante.fr"].differences == [
        "Titulaire 819999999999 dans l'extraction, 810001234567 chez nous."
    ]
    assert plan["soins@ehpad-les-tilleuls.mssante.fr"].differences == [
        "Service « Infirmerie » dans l'extraction, « Soins » chez nous."
    ]


def test_the_dry_run_prints_the_payloads_and_sending_is_off_by_default(hosted, capsys) -> None:
    call_command("publish_bals", "--dry-run")
    out = capsys.readouterr().out
    assert "PATCH [base]/Organization?identifier=https://finess.esante.gouv.fr|690001235" in out
    assert "4 BAL, 2 à mettre à jour." in out  # the closed and the liste rouge ones are right

    with pytest.raises(CommandError, match="publication vers l'Annuaire Santé est désactivée"):
        call_command("publish_bals")


def test_the_console_page_is_for_the_structure_director(hosted) -> None:
    _structure, director = hosted
    client = Client()
    client.force_login(director)
    page = client.get("/console/annuaire/").content.decode()
    assert "soins@ehpad-les-tilleuls.mssante.fr" in page
    assert "Absente de l&#x27;extraction nationale : à publier." in page

    nurse = make_professional(first_name="Inès", last_name="Bernard", profession="60")
    make_membership(nurse, _structure)
    other = Client()
    other.force_login(nurse)
    assert other.get("/console/annuaire/").status_code == 404


def test_the_former_address_of_the_console_page_leads_to_it(hosted) -> None:
    _structure, director = hosted
    client = Client()
    client.force_login(director)
    moved = client.get("/bal/console/annuaire/")
    assert moved.status_code == 301 and moved["Location"] == "/console/annuaire/"
    assert "soins@ehpad-les-tilleuls.mssante.fr" in client.get(moved["Location"]).content.decode()
