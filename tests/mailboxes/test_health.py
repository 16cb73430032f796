"""/sante/ for compose's healthchecks: liveness, and readiness checking the database, the
broker and Dovecot for real (the package's private Dovecot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_liveness_answers_without_sign_in() -> None:
    response = Client().get("/sante/")
    assert (response.status_code, response.json()) == (200, {"etat": "ok"})


def test_readiness_checks_each_dependency(dovecot: Any) -> None:
    response = Client().get("/sante/pret/")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "etat": "ok",
        "base_de_donnees": "ok",
        "courtier": "ok",
        "dovecot": "ok",
    }


def test_readiness_names_what_is_down_and_nothing_more(
    dovecot: Any, settings: Any, tmp_path: Path
) -> None:
    settings.DOVECOT_DIR = str(tmp_path / "aucun-dovecot")  # no socket answers there
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"  # nothing listens on port 9

    response = Client().get("/sante/pret/")

    assert response.status_code == 503
    assert response.json() == {
        "etat": "indisponible",
        "base_de_donnees": "ok",
        "courtier": "indisponible",
        "dovecot": "indisponible",
    }
    assert "127.0.0.1" not in response.content.decode()


def test_probes_from_inside_the_container_are_answered_and_other_pages_keep_the_host_check(
    settings: Any,
) -> None:
    """Compose's healthcheck sends Host 127.0.0.1 over plain HTTP; the portal only serves its
    public name, over HTTPS."""
    settings.ALLOWED_HOSTS = ["portail.exemple-operateur.fr"]
    settings.SECURE_SSL_REDIRECT = True

    probe = Client().get("/sante/", HTTP_HOST="127.0.0.1:8000")
    page = Client().get("/connexion/", HTTP_HOST="127.0.0.1:8000")
    public = Client().get("/connexion/", HTTP_HOST="portail.exemple-operateur.fr")

    assert (probe.status_code, probe.json()) == (200, {"etat": "ok"})
    assert page.status_code == 400  # DisallowedHost
    assert (public.status_code, public["Location"]) == (
        301,
        "https://portail.exemple-operateur.fr/connexion/",
    )
