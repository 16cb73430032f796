"""Checking a Pro Santé Connect access token presented by a software (API LPS): PSC's token
introspection (RFC 7662; annuaire-psc-ins.md §B3), the answer judged here, the token kept
nowhere (SC.MSS/CONF.28).

A software opens a session every few seconds with the same token (it keeps it for its 120 s
life, CONF.11), and each introspection is a round trip to PSC. So a token PSC found live is
remembered for a short while (LPS_TOKEN_CACHE_SECONDS, never past its ``exp``) in the cache,
under the SHA-256 of the token: the cache holds who the token speaks for, never the token
(CONF.28), and a key cannot be turned back into a token. Refusals are not remembered. A token
revoked at PSC stops opening sessions once its verdict lapses here (at most that many seconds);
sessions already open end at the token's ``exp`` either way (expiry.py)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass

import requests
from django.conf import settings
from django.core.cache import cache

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


def now() -> float:
    """The clock verdicts and expiries are read against (epoch seconds)."""
    return time.time()


def _verdict_key(token: str) -> str:
    # The issuer too: a verdict of another PSC (a changed configuration) is not ours.
    digest = hashlib.sha256(f"{issuer()}\0{token}".encode()).hexdigest()
    return f"lps:token:{digest}"


def _remembered(token: str) -> TokenIdentity | None:
    seconds = settings.LPS_TOKEN_CACHE_SECONDS
    if seconds <= 0:
        return None
    found = cache.get(_verdict_key(token))
    if not isinstance(found, dict):
        return None
    moment = now()
    if found.get("until", 0) <= moment or found.get("exp", 0) <= moment:
        return None
    return TokenIdentity(str(found["national_id"]), str(found["client_id"]), int(found["exp"]))


def _remember(token: str, identity: TokenIdentity) -> None:
    seconds = settings.LPS_TOKEN_CACHE_SECONDS
    until = min(now() + seconds, identity.expires)
    if seconds <= 0 or until <= now():
        return
    value = {
        "national_id": identity.national_id,
        "client_id": identity.client_id,
        "exp": identity.expires,
        "until": until,
    }
    cache.set(_verdict_key(token), value, timeout=max(1, int(until - now()) + 1))


def token_identity(token: str) -> TokenIdentity:
    """Who ``token`` speaks for. Introspects it at PSC with the portal's client credentials and
    requires ``active``, our PSC issuer, an ``exp`` still ahead and ``acr`` >= eidas1; a live
    verdict is remembered for LPS_TOKEN_CACHE_SECONDS at most (never past ``exp``), under a
    hash of the token (module docstring).

    Raises TokenRefused (with a short ``reason`` for the trace) or PscUnavailable."""
    if not token or len(token) > 8192 or not settings.PSC_DISCOVERY_URL:
        raise TokenRefused("malformed")
    remembered = _remembered(token)
    if remembered is not None:
        return remembered
    identity = _introspected(token)
    _remember(token, identity)
    return identity


_http = threading.local()


def _session() -> requests.Session:
    """This thread's HTTP client for PSC: its connection is kept between introspections, so
    that a login does not pay a new TCP (and TLS) handshake with PSC each time."""
    session: requests.Session | None = getattr(_http, "session", None)
    if session is None:
        session = _http.session = requests.Session()
    return session


def _introspected(token: str) -> TokenIdentity:
    try:
        answer = _session().post(
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
    if not isinstance(exp, int) or exp <= now():
        raise TokenRefused("expired")
    if _acr_level(claims.get("acr")) < MIN_ACR:
        raise TokenRefused("acr")
    # The national id: SubjectNameID when PSC gives it, else preferred_username (§B3).
    national_id = str(claims.get("SubjectNameID") or claims.get("preferred_username") or "")
    if not national_id:
        raise TokenRefused("no_subject")
    software = str(claims.get("azp") or claims.get("client_id") or "")
    return TokenIdentity(national_id, software, exp)
