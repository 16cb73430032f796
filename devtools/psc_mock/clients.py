"""The mock's registered clients: the portal (a web client, redirect to its own origin) and
« logiciel métier de test », a native client standing for a care software (DUI, DPI) that
gets tokens to open a BAL over IMAP and submission (API LPS, mssante-spec §2.2)."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    name: str
    native: bool  # a software on the professional's machine: loopback redirects (RFC 8252)


def registered() -> dict[str, Client]:
    clients = [
        Client(settings.PSC_CLIENT_ID, settings.PSC_CLIENT_SECRET, "Portail MSSanté", False),
        Client(
            settings.PSC_MOCK_LPS_CLIENT_ID,
            settings.PSC_MOCK_LPS_CLIENT_SECRET,
            "Logiciel métier de test",
            True,
        ),
    ]
    return {c.client_id: c for c in clients if c.client_id}


def redirect_allowed(client: Client, redirect_uri: str, origins: Collection[str]) -> bool:
    """The portal comes back to one of its own ``origins``; a native client to a loopback
    address on any port (RFC 8252 §7.3), never to another host."""
    parts = urlsplit(redirect_uri)
    if not client.native:
        return f"{parts.scheme}://{parts.netloc}" in origins
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def authenticated(request: HttpRequest) -> Client | None:
    """The client authenticated by ``client_secret_basic`` or ``client_secret_post``."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError, binascii.Error):
            return None
    else:
        client_id, secret = request.POST.get("client_id", ""), request.POST.get("client_secret", "")
    client = registered().get(client_id)
    if client is None or not secrets.compare_digest(secret, client.secret):
        return None
    return client
