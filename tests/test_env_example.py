"""`.env.example` copied as the README says must leave every default in force: an empty
variable means "use the default" (mssante_portal.env), never an empty cache URL, broker,
CSP origin list or export directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a production start needs in any case (secrets and the services' addresses).
REQUIRED = {
    "DJANGO_SECRET_KEY": "cle-de-production-" + "x" * 40,
    "DATABASE_URL": "postgres://mssante:motdepasse@127.0.0.1:9/mssante",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "DOVECOT_MASTER_PASSWORD": "mot-de-passe-maitre",
    "PSC_DISCOVERY_URL": "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet/"
    ".well-known/wallet-openid-configuration",
    "PSC_CLIENT_ID": "portail-mssante",
    "PSC_CLIENT_SECRET": "secret-ans",
}
READ = """
import json
from django.conf import settings
import mssante_portal.settings as s
print(json.dumps({name: repr(getattr(s, name, None)) for name in sorted(dir(s)) if name.isupper()}))
"""


def _example() -> dict[str, str]:
    """The variables of .env.example, as `docker compose --env-file` or `set -a; . .env` read
    them: KEY=VALUE lines, comments skipped."""
    found = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def _settings(variables: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", **variables}
    env["PORTAL_VAR_DIR"] = str(tmp_path / "var")
    env["DJANGO_SETTINGS_MODULE"] = "mssante_portal.settings"
    done = subprocess.run(
        [sys.executable, "-c", READ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    settings: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return settings


def test_the_empty_variables_of_env_example_leave_the_defaults(tmp_path: Path) -> None:
    example = _example()
    empty = {k for k, v in example.items() if v == "" and k not in REQUIRED}
    assert {"CACHE_URL", "CELERY_BROKER_URL"} <= empty | set(REQUIRED), "the example changed"
    given = {k: v for k, v in example.items() if v != ""}

    copied = _settings({**example, **REQUIRED}, tmp_path)
    defaults = _settings({**given, **REQUIRED}, tmp_path)

    differing = {
        name: (copied[name], defaults[name])
        for name in defaults
        if copied.get(name) != defaults[name]
    }
    assert differing == {}
    assert "redis://127.0.0.1:9" in copied["CACHES"]
    assert copied["CELERY_BROKER_URL"] == repr("redis://127.0.0.1:9/0")


def test_the_image_collects_its_static_files(tmp_path: Path) -> None:
    """The Dockerfile's collectstatic, with the STATIC_ROOT the image and .env.example give
    (the image's /srv/mssante-portal is this checkout): Django's checks pass (staticfiles.E002
    when STATIC_ROOT is one of STATICFILES_DIRS) and nothing is written (--dry-run)."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    image_root = dockerfile.split("STATIC_ROOT=", 1)[1].split()[0]
    assert _example()["STATIC_ROOT"] == image_root
    assert f"STATIC_ROOT={image_root} python manage.py collectstatic" in dockerfile
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PORTAL_ENV": "production",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SECRET_KEY": "build",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'build.sqlite3'}",
        "DOVECOT_MASTER_PASSWORD": "build",
        "PSC_MOCK_ENABLED": "true",  # its static files too: a demo image turns it on
        "PORTAL_DEMO": "true",
        "STATIC_ROOT": image_root.replace("/srv/mssante-portal", str(ROOT)),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "static files copied" in done.stdout
