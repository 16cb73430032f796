"""Put the IGC-Santé CRLs in force, from files or URLs (default: TLS_CRL_URLS)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailboxes.transport.crl_sync import crl_sync


class Command(BaseCommand):
    help = (
        "Importe les listes de révocation (LCR) IGC-Santé, signature et validité vérifiées, "
        "et les met en vigueur pour la passerelle et le relais."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "paths", nargs="*", help="Fichiers LCR (DER ou PEM ; défaut : TLS_CRL_URLS)"
        )
        parser.add_argument("--url", action="append", default=[], help="URL d'une LCR (répétable)")

    def handle(self, *args: Any, **options: Any) -> None:
        run = crl_sync(sources=[*options["paths"], *options["url"]] or None)
        if run.result == "failure":
            raise CommandError(f"LCR non importée (celle en vigueur reste en place) : {run.error}")
        verb = "inchangée" if run.result == "unchanged" else "mise en vigueur"
        for crl in run.crls:
            self.stdout.write(
                self.style.SUCCESS(
                    f"LCR {verb} : {crl.issuer}, {crl.revoked} certificat(s) révoqué(s), "
                    f"valable jusqu'au {crl.next_update:%d/%m/%Y %H:%M} UTC"
                )
            )
