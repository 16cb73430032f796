"""The break-glass operator account: /operateur/admin/ needs a second factor (allauth.mfa,
TOTP here; WebAuthn keys through the same pages) for every account that can reach it, failed
password sign-ins are limited, and the admin can be kept to configured networks."""

from __future__ import annotations

import html
import ipaddress
from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from django.test import Client

from accounts.models import User
from tests.factories import make_professional

pytestmark = pytest.mark.django_db

ADMIN = "/operateur/admin/"
LOGIN = "/operateur/connexion/"
PASSWORD = "Secours-Operateur-2026!"


@pytest.fixture
def operator() -> User:
    return User.objects.create_superuser("secours", "secours@exemple-operateur.fr", PASSWORD)


def _with_totp(user: User) -> str:
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


def _code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, next(yield_hotp_counters_from_time())))


def _sign_in(client: Client, username: str = "secours", password: str = PASSWORD) -> Any:
    return client.post(LOGIN, {"login": username, "password": password, "next": ADMIN})


def test_djangos_own_admin_sign_in_form_is_never_served(operator: User) -> None:
    client = Client()
    response = client.get(f"{ADMIN}login/?next={ADMIN}")
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)
    # Posting a password there signs nobody in.
    client.post(f"{ADMIN}login/", {"username": "secours", "password": PASSWORD})
    assert client.get(ADMIN).status_code == 302


def test_a_password_alone_does_not_open_the_admin(operator: User) -> None:
    client = Client()
    _sign_in(client)

    response = client.get(ADMIN)

    assert response.status_code == 302
    setup = client.get(response["Location"], follow=True)
    assert setup.request["PATH_INFO"].startswith("/operateur/double-authentification/")
    assert client.get(f"{ADMIN}accounts/auditevent/").status_code == 302


def test_password_then_totp_opens_the_admin(operator: User) -> None:
    secret = _with_totp(operator)
    client = Client()

    step = _sign_in(client)
    assert step.status_code == 302 and "double-authentification/authenticate" in step["Location"]
    assert client.get(ADMIN).status_code == 302  # not signed in before the second factor
    wrong = client.post(step["Location"], {"code": "000000" if _code(secret) != "000000" else "1"})
    assert wrong.status_code == 200
    done = client.post(step["Location"], {"code": _code(secret)})

    assert done.status_code == 302
    page = client.get(ADMIN)
    assert page.status_code == 200 and "administration de l'opérateur" in html.unescape(
        page.content.decode()
    )


def test_a_professional_marked_staff_needs_the_second_factor_too() -> None:
    staff = make_professional()
    staff.is_staff = True
    staff.save()
    client = Client()
    client.force_login(staff)  # as after a Pro Santé Connect sign-in

    response = client.get(ADMIN)

    assert response.status_code == 302 and response["Location"].startswith(f"{ADMIN}login/")
    assert client.get(response["Location"])["Location"].startswith(
        "/operateur/double-authentification/"
    )


def test_failed_password_sign_ins_are_limited(operator: User) -> None:
    secret = _with_totp(operator)
    client = Client()
    for _ in range(5):
        assert _sign_in(client, password="mauvais").status_code == 200

    refused = _sign_in(client)

    assert "authenticate" not in refused.get("Location", "")
    assert "Trop de tentatives" in html.unescape(refused.content.decode())
    assert client.get(ADMIN).status_code == 302
    assert secret  # the right password and factor exist; the limit still holds


def _full_session(operator: User, address: str) -> Client:
    secret = _with_totp(operator)
    client = Client(REMOTE_ADDR=address)
    step = _sign_in(client)
    client.post(step["Location"], {"code": _code(secret)})
    return client


def test_the_admin_answers_only_from_the_configured_networks(settings, operator: User) -> None:
    settings.OPERATOR_ADMIN_NETWORKS = [ipaddress.ip_network("10.20.0.0/16")]
    inside = _full_session(operator, "10.20.3.4")
    assert inside.get(ADMIN).status_code == 200

    outside = Client(REMOTE_ADDR="198.51.100.7")
    outside.cookies = inside.cookies  # the same session, from elsewhere

    assert outside.get(ADMIN).status_code == 404
    assert outside.get(f"{ADMIN}accounts/auditevent/").status_code == 404
    assert outside.get(f"{ADMIN}login/").status_code == 404
