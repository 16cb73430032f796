"""Show (--dry-run) or send the FHIR PATCH that publishes each BAL we host to the national
directory, with the differences from the last imported extraction."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Structure
from mailboxes.console.services.publication import (
    PublicationDisabled,
    publication_plan,
    publication_send,
)


class Command(BaseCommand):
    help = "Publie les BAL hébergées dans l'Annuaire Santé (FHIR PATCH) ; --dry-run : affiche."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Afficher sans envoyer")
        parser.add_argument("--structure", help="FINESS ou SIRET d'une structure")
        parser.add_argument(
            "--differences", action="store_true", help="Seulement les BAL qui diffèrent"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        structures = None
        if options["structure"]:
            structures = Structure.objects.filter(identifier=options["structure"])
            if not structures.exists():
                raise CommandError(f"Structure inconnue : {options['structure']}")
        plan = publication_plan(structures=structures)
        if options["differences"]:
            plan = [p for p in plan if p.differences]
        for p in plan:
            state = "dans l'extraction" if p.in_extraction else "absente de l'extraction"
            self.stdout.write(self.style.MIGRATE_HEADING(f"{p.record.address} ({state})"))
            for difference in p.differences:
                self.stdout.write(f"  ! {difference}")
            self.stdout.write(f"  PATCH [base]/{p.target}")
            self.stdout.write(json.dumps(p.body, ensure_ascii=False, indent=2))
        self.stdout.write(
            f"{len(plan)} BAL, {sum(1 for p in plan if p.differences)} à mettre à jour."
        )
        if options["dry_run"]:
            return
        try:
            results = publication_send(publications=plan)
        except PublicationDisabled as exc:
            raise CommandError(exc.user_message) from exc
        failed = [r for r in results if not 200 <= r.status < 300]
        for r in failed:
            self.stderr.write(f"{r.publication.record.address} : HTTP {r.status} {r.detail}")
        if failed:
            raise CommandError(f"{len(failed)} publication(s) refusée(s) sur {len(results)}.")
        self.stdout.write(self.style.SUCCESS(f"{len(results)} BAL publiées."))
