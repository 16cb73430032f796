from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from accounts.identifiers import luhn_ok, national_id_kind, validate_finess, validate_siret
from accounts.models import AuditEvent, Membership, Structure, StructureDomain
from accounts.services import membership_set_role, structure_create
from tests.factories import make_professional, make_structure


@pytest.mark.parametrize(
    "finess", ["010000024", "010780054", "250000700", "690001235", "2A0000014"]
)
def test_valid_finess_numbers(finess: str) -> None:
    assert validate_finess(finess) == finess


def test_finess_is_normalised() -> None:
    assert validate_finess(" 69 000 1235 ") == "690001235"


@pytest.mark.parametrize(
    ("finess", "code"),
    [
        ("690001236", "finess_key"),
        ("69000123", "finess_format"),
        ("6900012350", "finess_format"),
        ("ABCDEFGHI", "finess_format"),
    ],
)
def test_invalid_finess_numbers(finess: str, code: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_finess(finess)
    assert exc.value.code == code
    assert "FINESS" in str(exc.value.messages[0])


def test_siret() -> None:
    assert validate_siret("732 829 320 00074") == "73282932000074"
    with pytest.raises(ValidationError):
        validate_siret("73282932000075")


def test_luhn_and_national_id_kinds() -> None:
    assert luhn_ok("99700427885")  # test RPPS from the PSC samples
    assert national_id_kind("899700427885") == "RPPS"
    assert national_id_kind("0012600631") == "ADELI"
    assert national_id_kind("ANS20210107161422") == "AUTRE"


@pytest.mark.django_db
def test_structure_create_with_domain_is_traced() -> None:
    structure = structure_create(
        identifier_kind="finess_eg",
        identifier="690002001",
        name="IME Les Coquelicots",
        domains=["IME-Les-Coquelicots.mssante.fr"],
    )

    assert list(structure.domains.values_list("domain", flat=True)) == [
        "ime-les-coquelicots.mssante.fr"
    ]
    assert AuditEvent.objects.get(action="structure.created").target_id == str(structure.public_id)


@pytest.mark.django_db
def test_structure_create_refuses_a_bad_finess_and_writes_nothing() -> None:
    with pytest.raises(ValidationError):
        structure_create(
            identifier_kind="finess_eg", identifier="690001236", name="X", domains=["x.mssante.fr"]
        )

    assert not Structure.objects.exists()
    assert not StructureDomain.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_structure_create_refuses_a_taken_domain_and_rolls_back() -> None:
    make_structure(domain="ehpad-les-tilleuls.mssante.fr")

    with pytest.raises(ValidationError) as exc:
        structure_create(
            identifier_kind="finess_eg",
            identifier="690002001",
            name="IME",
            domains=["ehpad-les-tilleuls.mssante.fr"],
        )

    assert "appartient déjà" in exc.value.messages[0]
    assert Structure.objects.count() == 1


@pytest.mark.django_db
def test_role_change_is_traced_with_actor_and_roles() -> None:
    structure = make_structure()
    director = make_professional(first_name="Marc")
    nurse = make_professional(first_name="Julien")
    Membership.objects.create(user=nurse, structure=structure, role="member", source="psc")

    membership_set_role(structure=structure, user=nurse, role="director", actor=director)

    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.actor == director
    assert event.structure == structure
    assert event.details == {
        "user": str(nurse.public_id),
        "old_role": "member",
        "new_role": "director",
    }
    assert Membership.objects.get(user=nurse).role == "director"


@pytest.mark.django_db
def test_setting_the_same_role_writes_no_trace() -> None:
    structure = make_structure()
    nurse = make_professional()
    Membership.objects.create(user=nurse, structure=structure, role="member", source="psc")

    membership_set_role(structure=structure, user=nurse, role="member", actor=None)

    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValidationError):
        membership_set_role(
            structure=make_structure(), user=make_professional(), role="king", actor=None
        )
    assert not Membership.objects.exists()
