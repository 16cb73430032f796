"""Run the submission server for mail clients and care software (API LPS, 587 with STARTTLS):
``manage.py run_submission`` (LPS_SUBMISSION_PORT, or --port). Stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailboxes.software.submission import serve_until, tls_context


class Command(BaseCommand):
    help = "Démarre le serveur de soumission (port 587) des logiciels et clients de messagerie."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.LPS_LISTEN)
        parser.add_argument("--port", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] or (int(settings.LPS_SUBMISSION_PORT or 0))
        if not port:
            raise CommandError("LPS_SUBMISSION_PORT est vide : donnez --port.")
        context = tls_context(cert=settings.LPS_TLS_CERT, key=settings.LPS_TLS_KEY)
        self.stdout.write(f"Soumission MSSanté à l'écoute sur {options['host']}:{port}")
        self.stdout.flush()
        asyncio.run(self.serve(context, options["host"], port))
        self.stdout.write("Soumission arrêtée.")

    async def serve(self, context: Any, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_until(stop, context, host, port)
