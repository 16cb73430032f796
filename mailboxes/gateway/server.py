"""Building the MX: TLS context and SMTP protocol factory (used by run_gateway and tests)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from mailboxes.gateway.handler import DrainState, GatewayHandler, GatewaySMTP

logger = logging.getLogger(__name__)
GATEWAY_THREADS = 16


def tls_context(*, cert: str, key: str, ca_bundle: str) -> ssl.SSLContext:
    """Server side of mutual TLS: our certificate, client certificates required and verified
    against the CA bundle (IGC-Santé in production), TLS 1.2 minimum (mssante-spec §1.5)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_bundle)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ANSSI profile until ANS publishes the list (§1.5): forward secrecy and AEAD only.
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    return context


def smtp_kwargs(context: ssl.SSLContext) -> dict[str, Any]:
    return {
        "hostname": settings.GATEWAY_HOSTNAME,
        "ident": "MSSante gateway",
        "tls_context": context,
        "require_starttls": True,  # RFC 3207: 530 5.7.0 before STARTTLS
        "data_size_limit": settings.GATEWAY_MAX_SIZE,  # RFC 1870 SIZE, 552 beyond
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "command_call_limit": 1000,
    }


def protocol_factory(
    context: ssl.SSLContext, state: DrainState | None = None
) -> Callable[[], GatewaySMTP]:
    handler = GatewayHandler()
    kwargs = smtp_kwargs(context)

    def build() -> GatewaySMTP:
        protocol = GatewaySMTP(handler, **kwargs)
        protocol.state = state
        return protocol

    return build


async def serve_until(
    stop: asyncio.Event,
    context: ssl.SSLContext,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
) -> None:
    """Serve until ``stop`` is set, then drain: new connections get 421, open sessions may
    finish for up to GATEWAY_DRAIN_SECONDS; a message is only ever acknowledged after Dovecot
    took it, so a session cut at the deadline loses nothing (the sender retries)."""
    state = DrainState()
    loop = asyncio.get_running_loop()
    # Database and LMTP work waits on the network: enough threads for every open session.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=GATEWAY_THREADS))
    server = await loop.create_server(
        protocol_factory(context, state), host=host, port=port, reuse_port=reuse_port
    )
    await stop.wait()
    state.draining = True
    deadline = loop.time() + settings.GATEWAY_DRAIN_SECONDS
    while state.active and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if state.active:
        logger.warning("gateway drain timed out with %d open sessions", len(state.active))
    server.close()
    await server.wait_closed()
