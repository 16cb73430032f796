"""A production start is refused, by system checks with stable ids and French messages, when
what has no safe default there is missing: where exports go (absolute, writable), the
X-MSS-NIL product reference, the cache and the broker. Each case starts `manage.py check` in
its own process with a production environment as .env.example describes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.production import run_in_production


def _check(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    return run_in_production([sys.executable, "manage.py", "check"], tmp_path, **variables)


def test_a_complete_production_environment_passes(tmp_path: Path) -> None:
    done = _check(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize(
    ("variables", "check_id", "says"),
    [
        ({"EXPORT_DIR": "var/exports"}, "mssante.E020", "EXPORT_DIR='var/exports' est un chemin"),
        ({"MSS_NIL": ""}, "mssante.E022", "MSS_NIL est vide"),
        ({"REDIS_URL": ""}, "mssante.E023", "Aucune adresse de cache"),
        ({"REDIS_URL": "", "CACHE_URL": "redis://127.0.0.1:9/1"}, "mssante.E024", "courtier"),
    ],
    ids=["relative-export-dir", "no-mss-nil", "no-cache", "no-broker"],
)
def test_a_missing_production_setting_refuses_the_start(
    tmp_path: Path, variables: dict[str, str], check_id: str, says: str
) -> None:
    done = _check(tmp_path, **variables)

    assert done.returncode != 0
    assert check_id in done.stderr and says in done.stderr, done.stderr[-3000:]


def test_an_export_dir_that_cannot_be_written_refuses_the_start(tmp_path: Path) -> None:
    # A file where the directory should be (a volume mounted wrong). The tests run as root,
    # for whom permission bits prove nothing.
    blocker = tmp_path / "volume"
    blocker.write_text("", encoding="utf-8")

    done = _check(tmp_path, EXPORT_DIR=str(blocker / "exports"))

    assert done.returncode != 0
    assert "mssante.E021" in done.stderr
    assert "n'est pas un répertoire accessible en écriture" in done.stderr


def test_empty_broker_and_cache_variables_fall_back_to_redis_url(tmp_path: Path) -> None:
    """.env.example leaves CACHE_URL and CELERY_BROKER_URL empty: REDIS_URL serves both."""
    done = _check(tmp_path, CACHE_URL="", CELERY_BROKER_URL="", EXPORT_DIR="")
    assert done.returncode == 0, done.stderr[-3000:]
