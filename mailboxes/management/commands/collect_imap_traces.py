"""Copy what software did over IMAP (Dovecot's mail_log lines of API LPS sessions) into the
journal: ``manage.py collect_imap_traces`` once, or ``--every 5`` to keep following the log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from mailboxes.software.imap_traces import collect


class Command(BaseCommand):
    help = "Reporte au journal les actions des logiciels en IMAP (journal de Dovecot)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--log", default=str(Path(settings.DOVECOT_DIR) / "dovecot.log"))
        parser.add_argument("--every", type=float, default=0, help="secondes entre deux lectures")

    def handle(self, *args: Any, **options: Any) -> None:
        log = Path(options["log"])
        while True:
            written = collect(log)
            if written:
                self.stdout.write(f"{written} trace(s) IMAP ajoutée(s) au journal.")
            if not options["every"]:
                return
            time.sleep(options["every"])
