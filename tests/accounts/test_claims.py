"""Claim mapping, checked with every real userinfo document in ../shared/samples/psc/."""

from __future__ import annotations

import pytest

from accounts.models import Activity, AuditEvent, Membership, Structure, User
from accounts.psc.claims import ClaimsError, parse_userinfo
from accounts.services import user_sync_from_psc
from tests.factories import PSC_SAMPLES, make_professional, psc_sample

USERINFO_SAMPLES = sorted(
    p.name for p in PSC_SAMPLES.glob("*.json") if "SubjectNameID" in p.read_text()
)


def test_every_userinfo_sample_is_found() -> None:
    # The introspection response and the discovery document are not userinfo documents.
    assert USERINFO_SAMPLES == [
        "UserInfo_site_PSC.json",
        "userinfo_899700427885_HelperTest.json",
        "userinfo_ANS20231122132732_synapse_test.json",
    ]


@pytest.mark.parametrize("name", USERINFO_SAMPLES)
def test_each_sample_maps_to_an_identity(name: str) -> None:
    document = psc_sample(name)

    identity = parse_userinfo(document)

    assert identity.national_id == document["SubjectNameID"]
    assert identity.first_name == document["given_name"]
    assert identity.last_name == document["family_name"]
    assert (
        identity.exercices[0].profession_code
        == document["SubjectRefPro"]["exercices"][0]["codeProfession"]
    )
    expected = sum(len(ex["activities"]) for ex in document["SubjectRefPro"]["exercices"])
    assert len(identity.activities) == expected


def test_rpps_card_sample_details() -> None:
    identity = parse_userinfo(psc_sample("userinfo_899700427885_HelperTest.json"))

    assert identity.national_id == "899700427885"
    assert identity.civility == "DR"
    assert identity.auth_mode == "CARD"
    assert identity.main_exercice is not None
    assert identity.main_exercice.savoir_faire_code == "SM26"
    cabinet, hospital = identity.activities
    assert (cabinet.name, cabinet.mode, cabinet.technical_id, cabinet.city) == (
        "CABINET M DOC0042788",
        "L",
        "R102671",
        "PARIS",
    )
    assert (hospital.finess_site, hospital.finess_legal, hospital.mode) == (
        "0B0193488",
        "1B0064166",
        "S",
    )


def test_edit_sample_with_siret_activities() -> None:
    identity = parse_userinfo(psc_sample("UserInfo_site_PSC.json"))

    assert identity.national_id == "ANS20210107161422"
    assert identity.civility == "M"
    assert [a.siret for a in identity.activities if a.siret] == ["00000000016972", "00000000079608"]
    assert identity.auth_mode == ""  # absent in this document


def test_top_level_civility_is_used_when_the_exercice_has_none() -> None:
    identity = parse_userinfo(psc_sample("userinfo_ANS20231122132732_synapse_test.json"))

    assert identity.civility == "M"
    assert identity.main_exercice is not None
    assert identity.main_exercice.profession_code == "80"
    assert identity.activities[0].city == "PARIS"
    assert identity.activities[0].postal_code == "75015"


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"SubjectNameID": ""},
        {"SubjectNameID": None},
        {"SubjectNameID": "<script>"},
        {"SubjectNameID": ["899700427885"]},
        "not a dict",
    ],
)
def test_documents_without_a_usable_national_id_are_refused(document: object) -> None:
    with pytest.raises(ClaimsError):
        parse_userinfo(document)  # type: ignore[arg-type]


def test_garbage_inside_subject_ref_pro_is_skipped() -> None:
    identity = parse_userinfo(
        {
            "SubjectNameID": "899700427885",
            "SubjectRefPro": {"exercices": ["x", {"activities": [None, 3]}]},
        }
    )

    assert identity.national_id == "899700427885"
    assert len(identity.exercices) == 1
    assert identity.activities == []


@pytest.mark.django_db
def test_sync_stores_identity_activities_and_memberships_of_hosted_structures() -> None:
    hospital = Structure.objects.create(
        identifier_kind="finess_eg", identifier="0B0193488", name="Hôpital générique"
    )
    user = make_professional(national_id="899700427885", first_name="X", last_name="Y")

    user_sync_from_psc(
        user=user, identity=parse_userinfo(psc_sample("userinfo_899700427885_HelperTest.json"))
    )

    user = User.objects.get(pk=user.pk)
    assert (user.first_name, user.last_name, user.civility) == ("KIT", "DOC0042788", "DR")
    assert (user.profession_code, user.savoir_faire_code, user.last_auth_mode) == (
        "10",
        "SM26",
        "CARD",
    )
    assert user.psc_refreshed_at is not None
    activities = list(Activity.objects.filter(user=user))
    assert [a.structure_id for a in activities] == [None, hospital.pk]
    membership = Membership.objects.get(user=user)
    assert (membership.structure, membership.role, membership.source) == (hospital, "member", "psc")
    assert AuditEvent.objects.filter(
        action="membership.added", target_id=str(membership.public_id)
    ).exists()


@pytest.mark.django_db
def test_an_ended_activity_removes_the_psc_membership_but_not_a_director_role() -> None:
    hospital = Structure.objects.create(
        identifier_kind="finess_eg", identifier="0B0193488", name="Hôpital"
    )
    other = Structure.objects.create(
        identifier_kind="finess_eg", identifier="690001235", name="EHPAD"
    )
    user = make_professional(national_id="899700427885")
    Membership.objects.create(user=user, structure=other, role="director", source="operator")
    document = psc_sample("userinfo_899700427885_HelperTest.json")
    user_sync_from_psc(user=user, identity=parse_userinfo(document))
    assert Membership.objects.filter(user=user, structure=hospital).exists()

    document["SubjectRefPro"]["exercices"][0]["activities"] = document["SubjectRefPro"][
        "exercices"
    ][0]["activities"][:1]
    user_sync_from_psc(user=user, identity=parse_userinfo(document))

    assert not Membership.objects.filter(user=user, structure=hospital).exists()
    assert Membership.objects.get(user=user, structure=other).role == "director"
    assert AuditEvent.objects.filter(action="membership.removed").count() == 1
