"""The Pro Santé Connect mock can never be served in production: the settings refuse to load
with it enabled under PORTAL_ENV=production unless PORTAL_DEMO is set, whichever way the
portal starts (a plain import, manage.py, gunicorn), since a system check does not run
under gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFUSAL = "PSC_MOCK_ENABLED=true is refused with PORTAL_ENV=production"
ENTRY_POINTS = {
    "import": [sys.executable, "-c", "import mssante_portal.settings"],
    "manage.py": [sys.executable, "manage.py", "check"],
    "gunicorn": [
        str(Path(sys.executable).with_name("gunicorn")),
        "--check-config",
        "mssante_portal.wsgi:application",
    ],
}


def _start(entry: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run an entry point with a production environment as .env.example describes it."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PORTAL_ENV": "production",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "PORTAL_SITE_URL": "https://portail.exemple-operateur.fr",
        "DJANGO_SECRET_KEY": "cle-de-production-" + "x" * 40,
        "DATABASE_URL": "postgres://mssante:motdepasse@127.0.0.1:9/mssante",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DOVECOT_MASTER_PASSWORD": "mot-de-passe-maitre",
        "PSC_DISCOVERY_URL": "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet/"
        ".well-known/wallet-openid-configuration",
        "PSC_CLIENT_ID": "portail-mssante",
        "PSC_CLIENT_SECRET": "secret-ans",
        "MSS_NIL": "0000000000",
        **variables,
    }
    return subprocess.run(
        ENTRY_POINTS[entry], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_production_refuses_to_load_with_the_mock(entry: str, tmp_path: Path) -> None:
    refused = _start(entry, tmp_path, PSC_MOCK_ENABLED="true")
    demo = _start(entry, tmp_path, PSC_MOCK_ENABLED="true", PORTAL_DEMO="true")
    plain = _start(entry, tmp_path, PSC_MOCK_ENABLED="false")

    assert refused.returncode != 0
    assert REFUSAL in refused.stderr
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert plain.returncode == 0, plain.stderr[-2000:]
