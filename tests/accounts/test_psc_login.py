"""Sign-in with Pro Santé Connect over real HTTP against the mock (live server)."""

from __future__ import annotations

import html
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from allauth.socialaccount.models import SocialAccount

from accounts.models import AuditEvent, Membership, User
from tests.accounts import psc_flow
from tests.factories import make_professional, make_structure

pytestmark = pytest.mark.django_db(transaction=True)

DOCTOR = "899700120019"  # Dr Claire Martin in the mock's identities
NURSE = "899700120027"


def _signed_in(step: psc_flow.Step, base_url: str) -> bool:
    """Whether the browser session is signed in: the home page answers instead of redirecting."""
    r = step.session.get(f"{base_url}/", allow_redirects=False, timeout=10)
    return r.status_code == 200


def test_sign_in_creates_the_account_and_shows_identity_and_structures(psc_live: str) -> None:
    make_structure(name="EHPAD Les Tilleuls", finess="690001235")

    step = psc_flow.sign_in(psc_live, DOCTOR)

    assert step.response.status_code == 200
    page = step.response.text
    assert "Claire" in page and "MARTIN" in page.upper()
    assert "Médecin" in page
    assert "Médecine générale" in page
    assert "EHPAD LES TILLEULS" in page.upper()
    assert "Structure cliente du portail" in page
    assert "Carte CPS" in page
    user = User.objects.get(national_id=DOCTOR)
    assert not user.has_usable_password()
    assert SocialAccount.objects.get(user=user).uid == DOCTOR
    assert Membership.objects.filter(user=user, structure__identifier="690001235").exists()
    login = AuditEvent.objects.get(action="auth.login")
    assert login.actor == user and login.result == "success"


def test_sign_in_refreshes_a_known_professional_and_reports_e_cps(psc_live: str) -> None:
    existing = make_professional(
        national_id=NURSE, first_name="Ancien", last_name="Nom", profession=""
    )

    step = psc_flow.sign_in(psc_live, NURSE, auth_mode="ecps")

    assert step.response.status_code == 200
    existing.refresh_from_db()
    assert existing.first_name != "Ancien"
    assert existing.profession_code == "60"
    assert existing.last_auth_mode == "MOBILE"
    assert "e-CPS" in step.response.text
    assert User.objects.filter(national_id=NURSE).count() == 1


def test_userinfo_as_signed_jwt_is_accepted(psc_live: str, settings) -> None:
    settings.PSC_MOCK_USERINFO_FORMAT = "jwt"

    step = psc_flow.sign_in(psc_live, DOCTOR)

    assert step.response.status_code == 200
    assert User.objects.filter(national_id=DOCTOR).exists()


def test_the_authorize_request_carries_psc_parameters(psc_live: str) -> None:
    step = psc_flow.start(psc_live)

    location = step.response.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert set(query["scope"][0].split()) == {"openid", "scope_all"}
    assert query["acr_values"] == ["eidas1"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["nonce"][0]) >= 32
    assert query["state"][0]
    # OIDC Core §3.1.2.1: PSC must authenticate the person again, whatever session it holds.
    assert query["prompt"] == ["login"]
    assert query["max_age"] == ["0"]


def test_a_request_cannot_change_what_is_asked_of_psc(psc_live: str) -> None:
    """allauth lets the sign-in request add scopes and authorization parameters (?scope=,
    ?auth_params=): a forged button must not lower the level, skip the prompt or widen
    the scope."""
    s = requests.Session()
    s.get(f"{psc_live}/connexion/", timeout=10)
    forged = "prompt=none&max_age=86400&acr_values=eidas0&nonce=connu"
    r = s.post(
        f"{psc_live}/comptes/psc/connexion/?scope=email,offline_access&auth_params="
        + quote(forged),
        data={"csrfmiddlewaretoken": s.cookies["csrftoken"]},
        allow_redirects=False,
        timeout=20,
    )

    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert set(query["scope"][0].split()) == {"openid", "scope_all"}
    assert query["acr_values"] == ["eidas1"]
    assert query["prompt"] == ["login"]
    assert query["max_age"] == ["0"]
    assert query["nonce"] != ["connu"]


def _assert_refused(step: psc_flow.Step, base_url: str, title: str, code: str) -> None:
    assert title in html.unescape(step.response.text)
    assert not User.objects.filter(national_id=DOCTOR).exists()
    assert not SocialAccount.objects.exists()
    assert not _signed_in(step, base_url)
    failure = AuditEvent.objects.get(action="auth.login_failed")
    assert failure.result == "failure" and failure.error_code == code
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_cancel_at_the_idp(psc_live: str) -> None:
    step = psc_flow.follow(
        psc_flow.choose_identity(psc_flow.start(psc_live), DOCTOR, action="cancel")
    )

    _assert_refused(step, psc_live, "Connexion annulée", "cancelled")


def test_wrong_state_is_refused(psc_live: str) -> None:
    step = psc_flow.choose_identity(psc_flow.start(psc_live), DOCTOR)
    forged = psc_flow.with_query(step.response.headers["Location"], state="etat-forge")
    step = psc_flow.Step(step.session, step.session.get(forged, timeout=20))

    assert step.response.status_code == 400
    _assert_refused(step, psc_live, "Demande de connexion expirée ou inconnue", "state_mismatch")


@pytest.mark.parametrize(
    ("fault", "title", "code"),
    [
        ("wrong_nonce", "Jeton d'identité refusé", "nonce_mismatch"),
        ("tampered_id_token", "Jeton d'identité invalide", "id_token_invalid"),
        ("expired_id_token", "Jeton d'identité expiré", "id_token_expired"),
        ("unknown_kid", "Clé de signature inconnue", "unknown_signing_key"),
        ("wrong_acr", "Niveau d'authentification insuffisant", "acr_insufficient"),
        ("no_subject_name_id", "Identité professionnelle incomplète", "userinfo_invalid"),
        # OIDC Core §2 and §3.1.2.1: auth_time is required when max_age is asked.
        ("no_auth_time", "Jeton d'identité invalide", "id_token_invalid"),
    ],
)
def test_untrustworthy_answers_are_refused(
    psc_live: str, settings, fault: str, title: str, code: str
) -> None:
    settings.PSC_MOCK_FAULT = fault

    step = psc_flow.sign_in(psc_live, DOCTOR)

    assert step.response.status_code == 400
    _assert_refused(step, psc_live, title, code)


def test_userinfo_jwt_without_subject_name_id_is_refused(psc_live: str, settings) -> None:
    settings.PSC_MOCK_USERINFO_FORMAT = "jwt"
    settings.PSC_MOCK_FAULT = "no_subject_name_id"

    step = psc_flow.sign_in(psc_live, DOCTOR)

    _assert_refused(step, psc_live, "Identité professionnelle incomplète", "userinfo_invalid")


def test_idp_unreachable(psc_live: str, psc_unreachable) -> None:
    psc_unreachable()

    step = psc_flow.start(psc_live)

    assert step.response.status_code == 502
    _assert_refused(step, psc_live, "Pro Santé Connect est injoignable", "idp_unreachable")


def test_replayed_callback_is_refused(psc_live: str) -> None:
    step = psc_flow.choose_identity(psc_flow.start(psc_live), DOCTOR)
    callback = step.response.headers["Location"]
    first = step.session.get(callback, timeout=20)
    assert first.status_code == 200

    # A second use of the same code and state, from another browser (an attacker who saw the URL).
    other = requests.Session()
    replay = other.get(callback, timeout=20)

    assert replay.status_code == 400
    assert "Demande de connexion expirée ou inconnue" in replay.text
    assert User.objects.filter(national_id=DOCTOR).count() == 1


def test_logout_ends_the_portal_session_and_goes_through_end_session(psc_live: str) -> None:
    step = psc_flow.sign_in(psc_live, DOCTOR)
    s = step.session

    r = s.post(
        f"{psc_live}/deconnexion/",
        data={"csrfmiddlewaretoken": s.cookies["csrftoken"]},
        allow_redirects=False,
        timeout=10,
    )

    assert r.status_code == 302
    end_session = r.headers["Location"]
    assert "/_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/logout" in end_session
    query = parse_qs(urlsplit(end_session).query)
    assert query["id_token_hint"][0].count(".") == 2
    assert query["post_logout_redirect_uri"] == [f"{psc_live}/deconnecte/"]
    final = s.get(end_session, timeout=10)
    assert final.url.startswith(f"{psc_live}/deconnecte/")
    assert "Vous êtes déconnecté" in final.text
    assert not _signed_in(psc_flow.Step(s, final), psc_live)
    assert AuditEvent.objects.filter(action="auth.logout", result="success").count() == 1


def test_logout_needs_post_with_csrf(psc_live: str) -> None:
    step = psc_flow.sign_in(psc_live, DOCTOR)

    get = step.session.get(f"{psc_live}/deconnexion/", allow_redirects=False, timeout=10)
    forged = step.session.post(f"{psc_live}/deconnexion/", allow_redirects=False, timeout=10)

    assert get.status_code == 405
    assert forged.status_code == 403
    assert _signed_in(step, psc_live)
