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
