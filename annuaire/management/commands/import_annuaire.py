"""Import the national MSSanté extraction (file or URL) into the directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annuaire.extraction import ExtractionError
from annuaire.models import DirectoryImport
from annuaire.services import directory_import, directory_import_url


class Command(BaseCommand):
    help = (
        "Importe l'extraction des BAL MSSanté de l'Annuaire Santé "
        "(Extraction_Correspondance_MSSante_<date>.zip ou .txt)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", help="Fichier .zip ou .txt de l'extraction")
        parser.add_argument(
            "--url", help="URL https de l'extraction (défaut : ANNUAIRE_EXTRACTION_URL)"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Accepter un fichier qui retire plus de la moitié de l'annuaire en vigueur",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path, url = options["path"], options["url"]
        if path and url:
            raise CommandError("Donnez un fichier ou une URL, pas les deux.")
        try:
            if path:
                run = self._from_file(Path(path), options["force"])
            else:
                url = url or settings.ANNUAIRE_EXTRACTION_URL
                if not url:
                    raise CommandError(
                        "Aucune source : donnez un fichier, --url, ou ANNUAIRE_EXTRACTION_URL."
                    )
                run = directory_import_url(url=url, force=options["force"])
        except ExtractionError as exc:
            raise CommandError(f"Import refusé : {exc.user_message}") from exc
        self._report(run)

    def _from_file(self, path: Path, force: bool) -> DirectoryImport:
        if not path.is_file():
            raise CommandError(f"Fichier introuvable : {path}")
        with tqdm(
            total=path.stat().st_size,
            unit="o",
            unit_scale=True,
            desc="Lecture",
            disable=not sys.stderr.isatty(),
            file=sys.stderr,
        ) as bar:
            return directory_import(path=path, force=force, progress=bar.update)

    def _report(self, run: DirectoryImport) -> None:
        verb = "inchangé" if run.result == DirectoryImport.Result.UNCHANGED else "importé"
        self.stdout.write(
            self.style.SUCCESS(
                f"Annuaire {verb} en {run.duration_ms / 1000:.1f} s : {run.rows_read} lignes lues, "
                f"{run.added} ajoutées, {run.updated} modifiées, {run.removed} retirées, "
                f"{run.rejected} rejetées, {run.duplicates} en double."
            )
        )
        for reject in run.rejects[:20]:
            self.stdout.write(f"  ligne {reject['line']} : {reject['reason']}")
        if len(run.rejects) > 20:
            self.stdout.write(f"  … et {run.rejected + run.duplicates - 20} autres")
