"""Sensitive console actions need a recent Pro Santé Connect sign-in: over real HTTP with
the PSC mock, a director whose sign-in is old is asked to sign in again and comes back to
the page, which then opens."""

from __future__ import annotations

import html
import time

import pytest
import requests
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.contrib.sessions.backends.cached_db import SessionStore

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import AuditEvent, Membership, Structure, User
from devtools.psc_mock.views import SSO_COOKIE, sso_cookie_value
from tests.accounts import psc_flow
from tests.factories import make_structure

pytestmark = pytest.mark.django_db(transaction=True)

DOCTOR = "899700120019"  # Dr Claire Martin in the mock's identities


def test_old_sign_in_is_renewed_through_psc_and_the_person_comes_back(psc_live: str) -> None:
    step = psc_flow.sign_in(psc_live, DOCTOR)
    assert step.response.status_code == 200
    session_key = step.session.cookies[settings.SESSION_COOKIE_NAME]
    stored = SessionStore(session_key=session_key)
    signed_at = stored[AUTH_AT_SESSION_KEY]
    assert abs(signed_at - time.time()) < 60  # written by the sign-in, never a password

    user = User.objects.get(national_id=DOCTOR)
    structure = make_structure()
    Membership.objects.update_or_create(
        user=user, structure=structure,
        defaults={"role": Membership.Role.DIRECTOR, "source": Membership.Source.OPERATOR},
    )  # fmt: skip
    page = f"/console/{structure.public_id}/cle/"
    assert step.session.get(f"{psc_live}{page}", timeout=10).status_code == 200

    # An hour later, the key page still opens but a role change does not.
    stored[AUTH_AT_SESSION_KEY] = int(time.time()) - 3600
    stored.save()
    close = f"/console/{structure.public_id}/personnes/"
    membership = Membership.objects.get(user=user, structure=structure)
    r = step.session.post(
        f"{psc_live}/console/{structure.public_id}/personnes/{membership.public_id}/role/",
        data={"role": "member", "csrfmiddlewaretoken": step.session.cookies["csrftoken"]},
        headers={"Referer": f"{psc_live}{close}"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 401
    assert "Confirmez votre identité" in r.text
    membership.refresh_from_db()
    assert membership.role == Membership.Role.DIRECTOR  # nothing was done

    # The page's button signs in again with PSC and comes back to the people page.
    again = step.session.post(
        f"{psc_live}/comptes/psc/connexion/",
        data={
            "csrfmiddlewaretoken": step.session.cookies["csrftoken"],
            "next": close,
            "process": "login",
        },
        allow_redirects=False,
        timeout=20,
    )
    back = psc_flow.follow(psc_flow.choose_identity(psc_flow.Step(step.session, again), DOCTOR))
    assert back.response.status_code == 200
    assert back.response.url.endswith(close)
    renewed = SessionStore(session_key=step.session.cookies[settings.SESSION_COOKIE_NAME])
    # The rule reads the instant PSC says the person authenticated (the id_token's auth_time).
    id_token = SocialAccount.objects.get(uid=DOCTOR).extra_data["id_token"]
    assert renewed[AUTH_AT_SESSION_KEY] == id_token["auth_time"]
    assert time.time() - renewed[AUTH_AT_SESSION_KEY] < 60


def _age_psc_session(session: requests.Session, seconds: int) -> None:
    """Make the mock's single-sign-on session hold an authentication ``seconds`` old, as
    PSC's would be after a morning's work."""
    cookie = next(c for c in session.cookies if c.name == SSO_COOKIE)
    value = sso_cookie_value(
        subject_name_id=DOCTOR, auth_mode="CARD", auth_time=int(time.time()) - seconds
    )
    session.cookies.set(SSO_COOKIE, value, domain=cookie.domain, path=cookie.path)


def _is_callback(response: requests.Response, base_url: str) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith(
        f"{base_url}/comptes/psc/retour/"
    )


def test_the_mock_keeps_a_psc_session_and_honours_prompt_and_max_age(psc_live: str) -> None:
    s = psc_flow.sign_in(psc_live, DOCTOR).session  # opens the mock's PSC session too
    authorize = psc_flow.start(psc_live, session=s).response.headers["Location"]

    # Asked with prompt=login (as the portal always asks), PSC authenticates again...
    asked = s.get(authorize, allow_redirects=False, timeout=10)
    assert asked.status_code == 200 and "Choisissez une identité" in asked.text
    # ...without it, PSC answers at once from its session, as the real one does.
    at_once = s.get(
        psc_flow.with_query(authorize, drop=("prompt", "max_age")), allow_redirects=False
    )
    assert _is_callback(at_once, psc_live)
    assert psc_flow.query_of(at_once.headers["Location"])["code"]

    # max_age: an authentication older than max_age is asked again.
    _age_psc_session(s, 600)
    young_enough = psc_flow.with_query(authorize, drop=("prompt",), max_age="3600")
    too_old = psc_flow.with_query(authorize, drop=("prompt",), max_age="300")
    assert _is_callback(s.get(young_enough, allow_redirects=False), psc_live)
    assert s.get(too_old, allow_redirects=False).status_code == 200

    # prompt=none without a PSC session: login_required, back to the portal (OIDC §3.1.2.6).
    silent = psc_flow.with_query(authorize, drop=("max_age",), prompt="none")
    answer = requests.get(silent, allow_redirects=False, timeout=10)
    assert _is_callback(answer, psc_live)
    assert psc_flow.query_of(answer.headers["Location"])["error"] == "login_required"


def test_signing_out_ends_the_psc_session(psc_live: str) -> None:
    s = psc_flow.sign_in(psc_live, DOCTOR).session
    silent = psc_flow.with_query(
        psc_flow.start(psc_live, session=s).response.headers["Location"],
        drop=("prompt", "max_age"),
    )
    assert _is_callback(s.get(silent, allow_redirects=False), psc_live)

    out = s.post(
        f"{psc_live}/deconnexion/",
        data={"csrfmiddlewaretoken": s.cookies["csrftoken"]},
        timeout=10,
    )

    assert "Vous êtes déconnecté" in out.text
    assert s.get(silent, allow_redirects=False).status_code == 200  # PSC asks again


def _director(national_id: str) -> tuple[User, Structure, Membership]:
    user = User.objects.get(national_id=national_id)
    structure = make_structure()
    membership, _ = Membership.objects.update_or_create(
        user=user, structure=structure,
        defaults={"role": Membership.Role.DIRECTOR, "source": Membership.Source.OPERATOR},
    )  # fmt: skip
    return user, structure, membership


def _change_role(s: requests.Session, base_url: str, membership: Membership) -> int:
    structure = membership.structure
    r = s.post(
        f"{base_url}/console/{structure.public_id}/personnes/{membership.public_id}/role/",
        data={"role": "member", "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        headers={"Referer": f"{base_url}/console/{structure.public_id}/personnes/"},
        allow_redirects=False,
        timeout=10,
    )
    return r.status_code


def test_an_answer_psc_did_not_renew_is_refused_and_the_console_still_asks(psc_live: str) -> None:
    s = psc_flow.sign_in(psc_live, DOCTOR).session
    _user, structure, membership = _director(DOCTOR)
    stored = SessionStore(session_key=s.cookies[settings.SESSION_COOKIE_NAME])
    stored[AUTH_AT_SESSION_KEY] = int(time.time()) - 3600
    stored.save()
    assert _change_role(s, psc_live, membership) == 401
    _age_psc_session(s, 3600)

    # « Se reconnecter »: a PSC that ignored prompt=login would answer at once with the
    # hour-old authentication of its session.
    again = psc_flow.start(
        psc_live, session=s, next=f"/console/{structure.public_id}/personnes/", process="login"
    )
    answer = s.get(
        psc_flow.with_query(again.response.headers["Location"], drop=("prompt", "max_age")),
        allow_redirects=False,
        timeout=10,
    )
    assert _is_callback(answer, psc_live)
    refused = s.get(answer.headers["Location"], timeout=20)

    assert refused.status_code == 400
    assert "Connexion Pro Santé Connect non renouvelée" in html.unescape(refused.text)
    assert AuditEvent.objects.get(action="auth.login_failed").error_code == "auth_not_fresh"
    assert _change_role(s, psc_live, membership) == 401
    membership.refresh_from_db()
    assert membership.role == Membership.Role.DIRECTOR
