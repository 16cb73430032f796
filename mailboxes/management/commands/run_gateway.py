"""Run the MX of the trust space (inbound SMTP with mutual TLS). Drains on SIGTERM.

With ``--processes N`` (GATEWAY_PROCESSES), N processes share the port (SO_REUSEPORT, the
kernel spreads connections): the SMTP state machine and TLS are Python and bound to one core
per process. The parent only supervises: it forwards SIGTERM/SIGINT (every child drains) and
restarts a child that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import warnings
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from mailboxes.transport.gateway.server import ServerContext, serve_until


class Command(BaseCommand):
    help = "Démarre la passerelle SMTP entrante de l'espace de confiance MSSanté."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.GATEWAY_HOST)
        parser.add_argument("--port", type=int, default=settings.GATEWAY_PORT)
        parser.add_argument("--processes", type=int, default=settings.GATEWAY_PROCESSES)

    def handle(self, *args: Any, **options: Any) -> None:
        # aiosmtpd warns at every connection that CERT_REQUIRED "might cause problems": it is
        # what we want (platform-notes §3).
        warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
        # Rebuilt for new connections when the CRL file in force changes (each process
        # looks for itself after the fork).
        context = ServerContext.from_settings()
        host, port, processes = options["host"], options["port"], max(1, options["processes"])
        self.stdout.write(
            f"Passerelle MSSanté à l'écoute sur {host}:{port} ({processes} processus)"
        )
        self.stdout.flush()
        if processes == 1:
            asyncio.run(self.serve(context, host, port, reuse_port=False))
        else:
            self.supervise(context, host, port, processes)
        self.stdout.write("Passerelle arrêtée.")

    async def serve(self, context: Any, host: str, port: int, *, reuse_port: bool) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_until(stop, context, host, port, reuse_port=reuse_port)

    def _spawn(self, context: Any, host: str, port: int) -> int:
        connections.close_all()  # never share a database connection across fork
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                asyncio.run(self.serve(context, host, port, reuse_port=True))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        return pid

    def supervise(self, context: Any, host: str, port: int, processes: int) -> None:
        stopping = False
        children: set[int] = set()

        def forward(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for _ in range(processes):
            children.add(self._spawn(context, host, port))
        while children:
            try:
                pid, _status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            children.discard(pid)
            if not stopping:
                time.sleep(0.5)  # a child that dies at once must not spin the CPU
                children.add(self._spawn(context, host, port))
