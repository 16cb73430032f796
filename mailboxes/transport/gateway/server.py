"""Building the MX: TLS context and SMTP protocol factory (used by run_gateway and tests)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from mailboxes.transport import crl
from mailboxes.transport.gateway import stats
from mailboxes.transport.gateway.handler import DrainState, GatewayHandler, GatewaySMTP

logger = logging.getLogger(__name__)
GATEWAY_THREADS = 16


def tls_context(
    *, cert: str, key: str, ca_bundle: str, crl_file: str | None = None
) -> ssl.SSLContext:
    """Server side of mutual TLS: our certificate, client certificates required and verified
    against the CA bundle (IGC-Santé in production), TLS 1.2 minimum (mssante-spec §1.5), and
    not revoked by the CRLs of ``crl_file`` (default TLS_CRL_FILE; "" for none; see
    mailboxes/transport/crl.py)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_bundle)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(settings.TLS_CIPHERS)  # the relay offers the same
    # mssante-spec §1.4 inbound step 1: reject revoked client certificates (IGC-Santé CRL).
    crl.load_into(context, settings.TLS_CRL_FILE if crl_file is None else crl_file)
    return context


class ServerContext:
    """The gateway's TLS context, rebuilt for new connections when the CRL file in force is
    replaced (the daily sync), without a restart: the file is looked at, at most every
    ``recheck`` seconds, when a connection arrives. Open sessions keep the context they
    started with. A new file that cannot be loaded leaves the previous context in use."""

    def __init__(
        self,
        *,
        cert: str,
        key: str,
        ca_bundle: str,
        crl_file: str | None = None,
        recheck: float | None = None,
    ) -> None:
        self._args = {"cert": cert, "key": key, "ca_bundle": ca_bundle}
        self.crl_file = settings.TLS_CRL_FILE if crl_file is None else crl_file
        self.recheck = settings.TLS_CRL_RECHECK_SECONDS if recheck is None else recheck
        self._lock = threading.Lock()
        self._stamp = crl.file_stamp(self.crl_file)
        self._context = tls_context(**self._args, crl_file=self.crl_file)
        self._checked = time.monotonic()

    @classmethod
    def from_settings(cls) -> ServerContext:
        return cls(
            cert=settings.GATEWAY_CERT,
            key=settings.GATEWAY_KEY,
            ca_bundle=settings.GATEWAY_CA_BUNDLE,
        )

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < self.recheck:
            return self._context
        with self._lock:
            self._checked = now
            stamp = crl.file_stamp(self.crl_file)
            if stamp != self._stamp:
                try:
                    context = tls_context(**self._args, crl_file=self.crl_file)
                except (OSError, ssl.SSLError) as exc:
                    logger.error("new CRL file not loaded, the previous one stays: %s", exc)
                else:
                    self._context = context
                    logger.info("CRL file %s loaded for new connections", self.crl_file)
                self._stamp = stamp  # one attempt per version of the file
        return self._context


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
    context: ssl.SSLContext | ServerContext, state: DrainState | None = None
) -> Callable[[], GatewaySMTP]:
    """A new SMTP session per connection; with a ServerContext, each gets the context in force
    (a new CRL applies to new connections)."""
    handler = GatewayHandler()
    fixed = context if isinstance(context, ssl.SSLContext) else context.current()
    kwargs = smtp_kwargs(fixed)

    def build() -> GatewaySMTP:
        if isinstance(context, ServerContext):
            kwargs["tls_context"] = context.current()
        protocol = GatewaySMTP(handler, **kwargs)
        protocol.state = state
        return protocol

    return build


async def serve_until(
    stop: asyncio.Event,
    context: ssl.SSLContext | ServerContext,
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
    flushing = asyncio.create_task(stats.flush_every(stop))
    await stop.wait()
    state.draining = True
    deadline = loop.time() + settings.GATEWAY_DRAIN_SECONDS
    while state.active and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if state.active:
        logger.warning("gateway drain timed out with %d open sessions", len(state.active))
    server.close()
    await server.wait_closed()
    await flushing  # the last counts of this process, drained sessions included
    await loop.run_in_executor(None, stats.flush)
