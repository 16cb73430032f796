"""French error pages (issue 19): what a person sees on a 400, 403, 404 or 500, with DEBUG off
as in production and in the public demo, and the favicon every page links to."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.views import defaults

from tests.factories import make_professional

pytestmark = pytest.mark.django_db


def test_debug_is_off_in_these_tests(settings) -> None:
    assert settings.DEBUG is False  # the pages below are the ones DEBUG off serves


def test_a_missing_page_is_french() -> None:
    client = Client()
    client.force_login(make_professional())
    response = client.get("/nulle-part/")
    assert response.status_code == 404
    text = response.content.decode()
    assert "Page introuvable" in text and "Not Found" not in text


def test_a_bad_request_is_french() -> None:
    # A Host the portal does not serve: Django's SuspiciousOperation, answered 400.
    response = Client().get("/", HTTP_HOST="hote-inconnu.example")
    assert response.status_code == 400
    text = response.content.decode()
    assert "Demande incorrecte" in text and "Bad Request" not in text
    assert 'lang="fr"' in text


def test_an_expired_form_is_french() -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_professional())
    response = client.post("/deconnexion/")
    assert response.status_code == 403
    text = response.content.decode()
    assert "Formulaire expiré" in text and "CSRF" not in text


def test_a_refused_action_is_french() -> None:
    request = RequestFactory().get("/console/")
    request.user = AnonymousUser()
    response = defaults.permission_denied(request, PermissionDenied())
    assert response.status_code == 403
    text = response.content.decode()
    assert "Accès refusé" in text and "Forbidden" not in text


def test_a_server_error_is_french() -> None:
    response = defaults.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    text = response.content.decode()
    assert "Le service a rencontré une erreur" in text and "Server Error" not in text


def test_every_page_links_the_favicon() -> None:
    client = Client()
    page = client.get("/connexion/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    icon = finders.find("favicon.svg")  # what collectstatic ships and whitenoise serves
    assert icon and Path(str(icon)).read_text(encoding="utf-8").startswith("<svg")
