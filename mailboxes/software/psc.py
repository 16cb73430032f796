"""Checking a Pro Santé Connect access token presented by a software (API LPS): PSC's token
introspection (RFC 7662; annuaire-psc-ins.md §B3), the answer judged here, the token kept
nowhere (SC.MSS/CONF.28)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import requests
from django.conf import settings

from mssante_portal.errors import PortalError

DISCOVERY_SUFFIX = "/.well-known/wallet-openid-configuration"
_ACR = re.compile(r"eidas(\d+)")
MIN_ACR = 1  # §B2: eidas1 is the level PSC gives; lower or unknown is refused


class TokenRefused(PortalError):
    """The token does not prove a professional: inactive, expired, foreign or too weak."""

    code = "token_refused"
    http_status = 403
    user_message = "Jeton Pro Santé Connect refusé : reconnectez-vous à Pro Santé Connect."

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class PscUnavailable(PortalError):
    code = "psc_unavailable"
    http_status = 503
    permanent = False
    user_message = "Pro Santé Connect ne répond pas : réessayez dans un instant."


@dataclass(frozen=True)
class TokenIdentity:
    national_id: str
    client_id: str  # the software the professional signed in to (``azp``)
    expires: int  # the token's ``exp`` (epoch seconds)


def issuer() -> str:
    """PSC's issuer, from the discovery URL the portal is configured with (§B1)."""
    return settings.PSC_DISCOVERY_URL.removesuffix(DISCOVERY_SUFFIX)


def _acr_level(value: object) -> int:
    match = _ACR.fullmatch(str(value or ""))
    return int(match.group(1)) if match else -1


def token_identity(token: str) -> TokenIdentity:
    """Who ``token`` speaks for. Introspects it at PSC with the portal's client credentials and
    requires ``active``, our PSC issuer, an ``exp`` still ahead and ``acr`` >= eidas1.

    Raises TokenRefused (with a short ``reason`` for the trace) or PscUnavailable."""
    if not token or len(token) > 8192 or not settings.PSC_DISCOVERY_URL:
        raise TokenRefused("malformed")
    try:
        answer = requests.post(
            f"{issuer()}/protocol/openid-connect/token/introspect",
            data={"token": token},
            auth=(settings.PSC_CLIENT_ID, settings.PSC_CLIENT_SECRET),
            timeout=settings.PSC_HTTP_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise PscUnavailable() from exc
    if answer.status_code != 200:
        raise PscUnavailable()
    try:
        claims = answer.json()
    except ValueError as exc:
        raise PscUnavailable() from exc
    if not isinstance(claims, dict) or claims.get("active") is not True:
        raise TokenRefused("inactive")  # RFC 7662 §2.2: expired, revoked or unknown
    if claims.get("iss") != issuer():
        raise TokenRefused("issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= time.time():
        raise TokenRefused("expired")
    if _acr_level(claims.get("acr")) < MIN_ACR:
        raise TokenRefused("acr")
    # The national id: SubjectNameID when PSC gives it, else preferred_username (§B3).
    national_id = str(claims.get("SubjectNameID") or claims.get("preferred_username") or "")
    if not national_id:
        raise TokenRefused("no_subject")
    software = str(claims.get("azp") or claims.get("client_id") or "")
    return TokenIdentity(national_id, software, exp)
