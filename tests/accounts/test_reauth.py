"""Sensitive console actions need a recent Pro Santé Connect sign-in: over real HTTP with
the PSC mock, a director whose sign-in is old is asked to sign in again and comes back to
the page, which then opens."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.contrib.sessions.backends.cached_db import SessionStore

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import Membership, User
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
    assert time.time() - renewed[AUTH_AT_SESSION_KEY] < 60
