"""Write this operator's published BALs as lines of the national extraction (the format of
annuaire.extraction.COLUMNS). The two-operator trust space plays the Annuaire Santé with it:
each operator's BALs are gathered and imported into every operator's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from annuaire.extraction import COLUMNS
from devtools.demo.management.commands.load_demo import _annuaire_row
from mailboxes.models import Mailbox


class Command(BaseCommand):
    help = "Écrit les BAL publiées de l'opérateur au format de l'extraction nationale."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        boxes = (
            Mailbox.objects.filter(status=Mailbox.Status.ACTIVE, liste_rouge=False)
            .exclude(kind=Mailbox.Kind.APP)
            .select_related("structure", "owner")
            .order_by("address")
        )
        lines = []
        for box in boxes:
            row = dict.fromkeys(COLUMNS, "") | _annuaire_row(box)
            lines.append("|".join(row[c].replace("|", " ") for c in COLUMNS))
        options["path"].write_text("|".join(COLUMNS) + "\n" + "\n".join(lines) + "\n", "utf-8")
        self.stdout.write(f"{len(lines)} BAL écrites dans {options['path']}")
