"""A process started with a production environment, as .env.example describes it (what the
tests of production refusals share)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def production_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """A complete production environment; `variables` override or blank some of it."""
    return {
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
        "TLS_CRL_URLS": "http://crl.exemple/igc.crl",
        "MSS_NIL": "4242424242",
        "EXPORT_DIR": str(tmp_path / "exports"),
        **variables,
    }


def run_in_production(
    command: list[str], tmp_path: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run `command` from the project's root with that environment (and nothing of ours)."""
    return subprocess.run(
        command,
        cwd=ROOT,
        env=production_env(tmp_path, **variables),
        capture_output=True,
        text=True,
        timeout=120,
    )
