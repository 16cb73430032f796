"""End the IMAP sessions of software whose PSC token has expired (SC.MSS/CONF.10), on the
machine that runs Dovecot: ``manage.py end_software_sessions`` once, or ``--every 5``."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mailboxes.software.expiry import sessions_end_expired


class Command(BaseCommand):
    help = "Termine les sessions IMAP des logiciels dont le jeton PSC a expiré."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=0, help="secondes entre deux passages")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            ended = sessions_end_expired()
            if ended:
                self.stdout.write(f"{ended} session(s) de logiciel terminée(s).")
            if not options["every"]:
                return
            time.sleep(options["every"])
