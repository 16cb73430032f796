"""Import the operator whitelist from a file or a URL (default: WHITELIST_URL)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annuaire.services import whitelist_sync


class Command(BaseCommand):
    help = "Importe la liste blanche des opérateurs MSSanté (fichier ou URL), signature vérifiée."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "source", nargs="?", help="Chemin ou URL https (défaut : WHITELIST_URL)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        run = whitelist_sync(source=options["source"])
        if run.result == "failure":
            raise CommandError(
                f"Liste blanche non importée (la précédente reste en vigueur) : {run.error}"
            )
        stats = run.stats
        verb = "inchangée" if run.result == "unchanged" else "importée"
        changes = (
            f", {stats['added']} ajoutés, {stats['removed']} retirés" if "added" in stats else ""
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Liste blanche {verb} : {stats.get('entries')} entrées, "
                f"{stats.get('domains')} domaines, {stats.get('dns')} DN{changes}"
            )
        )
