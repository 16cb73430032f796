"""Sessions end after an idle time (SESSION_IDLE_TIMEOUT, 30 minutes by default) as well as
after their absolute lifetime (SESSION_COOKIE_AGE), whatever the activity."""

from __future__ import annotations

import html
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from accounts.middleware import SESSION_SEEN_KEY, SESSION_STARTED_KEY
from tests.factories import make_professional

pytestmark = pytest.mark.django_db


def _signed_in() -> Client:
    client = Client()
    client.force_login(make_professional())
    assert client.get("/").status_code == 200
    return client


def _set(client: Client, values: dict[str, float]) -> None:
    session = client.session
    for key, value in values.items():
        session[key] = value
    session.save()


def test_a_session_ends_after_thirty_minutes_without_activity() -> None:
    client = _signed_in()
    # What the store keeps: the session row itself dies after the idle time.
    row = Session.objects.get(session_key=client.session.session_key)
    assert row.expire_date <= timezone.now() + timedelta(minutes=30, seconds=5)

    _set(client, {SESSION_SEEN_KEY: time.time() - 29 * 60})
    assert client.get("/").status_code == 200  # still in, and the activity counts again
    assert time.time() - client.session[SESSION_SEEN_KEY] < 5

    _set(client, {SESSION_SEEN_KEY: time.time() - 31 * 60})
    page = client.get("/", follow=True)

    assert page.redirect_chain[-1][0].startswith("/connexion/")
    assert "Votre session a expiré après 30 minutes d'inactivité" in html.unescape(
        page.content.decode()
    )
    assert client.get("/").status_code == 302
    assert "_auth_user_id" not in client.session


def test_a_session_ends_after_its_absolute_lifetime_even_when_in_use() -> None:
    client = _signed_in()
    started = client.session[SESSION_STARTED_KEY]
    assert client.get("/").status_code == 200
    assert client.session[SESSION_STARTED_KEY] == started  # activity does not extend it

    _set(
        client,
        {
            SESSION_STARTED_KEY: time.time() - settings.SESSION_COOKIE_AGE - 1,
            SESSION_SEEN_KEY: time.time(),
        },
    )
    page = client.get("/", follow=True)

    assert page.redirect_chain[-1][0].startswith("/connexion/")
    assert "Votre session a atteint sa durée maximale de 8 heures" in html.unescape(
        page.content.decode()
    )
    assert client.get("/").status_code == 302


def test_the_idle_time_is_a_setting(settings) -> None:
    settings.SESSION_IDLE_TIMEOUT = 5 * 60
    client = _signed_in()

    _set(client, {SESSION_SEEN_KEY: time.time() - 6 * 60})

    assert client.get("/").status_code == 302
