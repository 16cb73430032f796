"""Only a plain sign-in exists: nobody attaches a Pro Santé Connect identity to an account
that is not theirs, and a sign-in never rewrites the national id of an account."""

from __future__ import annotations

import html

import pytest
from allauth.socialaccount.models import SocialAccount

from accounts.errors import NationalIdMismatch
from accounts.models import Activity, AuditEvent, User
from accounts.psc.claims import parse_userinfo
from accounts.services import user_sync_from_psc
from tests.accounts import psc_flow
from tests.factories import make_professional, psc_sample

DOCTOR = "899700120019"  # Dr Claire Martin in the mock's identities
NURSE = "899700120027"
REFUSED = "Cette connexion n'est pas possible"
MISMATCH = "Identité Pro Santé Connect différente du compte"


def _signed_in_as(step: psc_flow.Step, base_url: str) -> str:
    """The national id the portal shows to this browser ('' when it is signed out)."""
    r = step.session.get(f"{base_url}/", allow_redirects=False, timeout=10)
    if r.status_code != 200:
        return ""
    ids = User.objects.filter(national_id__gt="").values_list("national_id", flat=True)
    shown = [national_id for national_id in ids if national_id and national_id in r.text]
    assert len(shown) == 1, shown
    return str(shown[0])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("process", ["connect", "redirect", "lier"])
def test_an_open_session_cannot_attach_a_second_psc_identity(psc_live: str, process: str) -> None:
    doctor_browser = psc_flow.sign_in(psc_live, DOCTOR)
    doctor = User.objects.get(national_id=DOCTOR)

    # Someone with a minute at the doctor's open session tries to link their own card.
    attempt = psc_flow.start(psc_live, session=doctor_browser.session, process=process)

    assert attempt.response.status_code == 400
    assert "Location" not in attempt.response.headers  # never sent on to PSC
    assert REFUSED in html.unescape(attempt.response.text)
    failure = AuditEvent.objects.get(action="auth.login_failed")
    assert failure.error_code == "process_refused"
    assert SocialAccount.objects.filter(user=doctor).count() == 1

    # That identity, signing in later from its own browser, lands in its own account.
    nurse_browser = psc_flow.sign_in(psc_live, NURSE)

    assert _signed_in_as(nurse_browser, psc_live) == NURSE
    nurse = User.objects.get(national_id=NURSE)
    assert nurse.pk != doctor.pk
    assert SocialAccount.objects.get(uid=NURSE).user == nurse
    doctor.refresh_from_db()
    assert doctor.national_id == DOCTOR
    assert list(SocialAccount.objects.filter(user=doctor).values_list("uid", flat=True)) == [DOCTOR]


@pytest.mark.django_db(transaction=True)
def test_a_refused_process_never_contacts_psc(psc_live: str, psc_unreachable) -> None:
    step = psc_flow.sign_in(psc_live, DOCTOR)
    psc_unreachable()  # were PSC contacted, the answer would be « injoignable » (502)

    attempt = psc_flow.start(psc_live, session=step.session, process="connect")

    assert attempt.response.status_code == 400
    assert REFUSED in html.unescape(attempt.response.text)
    assert AuditEvent.objects.get(action="auth.login_failed").error_code == "process_refused"
    assert _signed_in_as(step, psc_live) == DOCTOR  # the refusal does not touch the session


@pytest.mark.django_db(transaction=True)
def test_an_identity_linked_to_another_account_is_refused_and_traced(psc_live: str) -> None:
    # A link made before linking was closed: the nurse's PSC identity points at the doctor.
    doctor = make_professional(national_id=DOCTOR, first_name="Claire", last_name="Martin")
    SocialAccount.objects.create(user=doctor, provider="prosanteconnect", uid=NURSE)

    step = psc_flow.sign_in(psc_live, NURSE)

    assert step.response.status_code == 400
    assert MISMATCH in html.unescape(step.response.text)
    assert _signed_in_as(step, psc_live) == ""
    doctor.refresh_from_db()
    assert (doctor.national_id, doctor.first_name) == (DOCTOR, "Claire")
    assert not Activity.objects.filter(user=doctor).exists()
    failure = AuditEvent.objects.get(action="auth.login_failed")
    assert failure.error_code == "identity_mismatch"
    assert failure.target_id == str(doctor.public_id)
    assert failure.details == {"national_id": NURSE}
    assert not AuditEvent.objects.filter(action="auth.login").exists()


@pytest.mark.django_db
def test_sync_never_rewrites_the_national_id_of_an_account() -> None:
    claims = psc_sample("userinfo_899700427885_HelperTest.json")
    doctor = make_professional(national_id=DOCTOR, first_name="Claire", last_name="Martin")
    operator = User.objects.create(username="operateur", is_staff=True, is_superuser=True)
    signed_in_at = doctor.psc_refreshed_at

    for account in (doctor, operator):
        with pytest.raises(NationalIdMismatch):
            user_sync_from_psc(user=account, identity=parse_userinfo(claims))

    doctor.refresh_from_db()
    operator.refresh_from_db()
    assert (doctor.national_id, doctor.first_name, doctor.psc_refreshed_at) == (
        DOCTOR,
        "Claire",
        signed_in_at,
    )
    assert operator.national_id in ("", None)
    assert not Activity.objects.exists()
