"""Generate the test PKI (dev and tests only) under PORTAL_VAR_DIR/pki or a given folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.pki import (
    SOFTWARE_CN,
    crl_paths,
    issue_software,
    make_test_pki,
    refresh_test_crl,
)
from devtools.whitelist_sign import trust_env


class Command(BaseCommand):
    help = (
        "Crée une PKI de test (AC, passerelle, opérateur pair, AC étrangère, certificat expiré, "
        "certificat révoqué et la LCR de l'AC)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", default=str(Path(settings.VAR_DIR) / "pki"))
        parser.add_argument(
            "--keep", action="store_true", help="Ne rien faire si la PKI existe déjà."
        )
        parser.add_argument(
            "--software",
            metavar="CN",
            help="Délivre, avec l'AC de test existante, le certificat client d'un logiciel "
            "(BAL applicative, SASL EXTERNAL) portant ce nom commun.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out = Path(options["out"])
        if options["software"]:
            if not (out / "ca.key").exists():
                raise CommandError(f"Pas de PKI de test dans {out} : lancez d'abord make_test_pki.")
            stem = "software-" + re.sub(r"[^a-z0-9.-]+", "-", options["software"].lower())
            issued = issue_software(out, options["software"], stem)
            self.stdout.write(f"certificat {issued.cert}\nclé        {issued.key}")
            return
        if options["keep"] and (out / "ca.crt").exists():
            # A kept PKI outlives its CRL (a few days): re-sign it when it is about to end.
            renewed = refresh_test_crl(out)
            if not (out / "software.crt").exists():  # a PKI made before software certificates
                issue_software(out, SOFTWARE_CN, "software")
            self.stdout.write(
                f"PKI de test conservée : {out}" + (" (LCR renouvelée)" if renewed else "")
            )
            return
        for role, issued in make_test_pki(out).items():
            self.stdout.write(f"{role:<8} {issued.cert}  {issued.subject}")
        self.stdout.write(f"{'lcr':<8} {crl_paths(out)[0]}")
        # What an instance sets to trust the whitelists this PKI's signer signs.
        for name, value in trust_env(out).items():
            self.stdout.write(f"{name}={value}")
