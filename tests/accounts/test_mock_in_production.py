"""The Pro Santé Connect mock can never be served in production: the settings refuse to load
with it enabled under PORTAL_ENV=production unless PORTAL_DEMO is set, whichever way the
portal starts (a plain import, manage.py, gunicorn), since a system check does not run
under gunicorn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.production import run_in_production

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
    return run_in_production(ENTRY_POINTS[entry], tmp_path, **variables)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_production_refuses_to_load_with_the_mock(entry: str, tmp_path: Path) -> None:
    refused = _start(entry, tmp_path, PSC_MOCK_ENABLED="true")
    demo = _start(entry, tmp_path, PSC_MOCK_ENABLED="true", PORTAL_DEMO="true")
    plain = _start(entry, tmp_path, PSC_MOCK_ENABLED="false")

    assert refused.returncode != 0
    assert REFUSAL in refused.stderr
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert plain.returncode == 0, plain.stderr[-2000:]
