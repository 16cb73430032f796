"""Run the MX of the trust space (inbound SMTP with mutual TLS). Drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import warnings
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from mailboxes.gateway.server import serve_until, tls_context


class Command(BaseCommand):
    help = "Démarre la passerelle SMTP entrante de l'espace de confiance MSSanté."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.GATEWAY_HOST)
        parser.add_argument("--port", type=int, default=settings.GATEWAY_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        # aiosmtpd warns at every connection that CERT_REQUIRED "might cause problems": it is
        # what we want (platform-notes §3).
        warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
        context = tls_context(
            cert=settings.GATEWAY_CERT,
            key=settings.GATEWAY_KEY,
            ca_bundle=settings.GATEWAY_CA_BUNDLE,
        )
        asyncio.run(self.serve(context, options["host"], options["port"]))

    async def serve(self, context: Any, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"Passerelle MSSanté à l'écoute sur {host}:{port}")
        await serve_until(stop, context, host, port)
        self.stdout.write("Passerelle arrêtée.")
