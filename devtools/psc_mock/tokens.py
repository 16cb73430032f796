"""Access and refresh tokens of the mock: signed, self-contained values (any web process can
check them), with an expiry, a session id and a revocation list in the cache (RFC 7009).

The introspection answer has the fields of the real one
(../shared/samples/psc/PSC200_activetrue_medecin_899700218896.json; annuaire-psc-ins.md §B3).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from django.core import signing
from django.core.cache import cache

TOKEN_SALT = "psc_mock.access"  # noqa: S105 (a signing salt, not a secret)
REFRESH_SALT = "psc_mock.refresh"
TOKEN_TTL = 120  # 120 s in a 2026 BAS payload (§B3)
REFRESH_TTL = 10 * 3600
SUB_PREFIX = "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:"


def _revoked_key(sid: str) -> str:
    return f"psc_mock:revoked:{sid}"


def access_issue(
    *,
    sub: str,
    mode: str,
    client_id: str,
    auth_time: int,
    sid: str = "",
    acr: str = "eidas1",
    lifetime: int = TOKEN_TTL,
) -> str:
    """A new access token for the professional ``sub`` (national id). ``lifetime`` may be
    negative: an already expired token, for tests."""
    now = int(time.time())
    return signing.dumps(
        {
            "sub": sub,
            "mode": mode,
            "cid": client_id,
            "sid": sid or secrets.token_hex(8),
            "jti": secrets.token_hex(8),
            "iat": now,
            "exp": now + lifetime,
            "at": auth_time,
            "acr": acr,
        },
        salt=TOKEN_SALT,
    )


def refresh_issue(*, sub: str, mode: str, client_id: str, auth_time: int, sid: str) -> str:
    return signing.dumps(
        {"sub": sub, "mode": mode, "cid": client_id, "sid": sid, "at": auth_time},
        salt=REFRESH_SALT,
    )


def _live(grant: Any) -> dict[str, Any] | None:
    if not isinstance(grant, dict) or cache.get(_revoked_key(str(grant.get("sid", "")))):
        return None
    return grant


def access_read(token: str) -> dict[str, Any] | None:
    """The claims of a valid access token; None when forged, expired or revoked."""
    try:
        grant = signing.loads(token, salt=TOKEN_SALT, max_age=REFRESH_TTL)
    except signing.BadSignature:
        return None
    if int(grant.get("exp", 0)) <= time.time():
        return None
    return _live(grant)


def refresh_read(token: str) -> dict[str, Any] | None:
    try:
        grant = signing.loads(token, salt=REFRESH_SALT, max_age=REFRESH_TTL)
    except signing.BadSignature:
        return None
    return _live(grant)


def revoke(token: str) -> None:
    """RFC 7009: revoke the session of an access or a refresh token (both end with it)."""
    for salt in (TOKEN_SALT, REFRESH_SALT):
        try:
            grant = signing.loads(token, salt=salt, max_age=REFRESH_TTL)
        except signing.BadSignature:
            continue
        cache.set(_revoked_key(str(grant["sid"])), True, REFRESH_TTL)
        return


def introspection(token: str, *, issuer: str) -> dict[str, Any]:
    """RFC 7662 answer shaped like PSC's (Keycloak): ``{"active": false}`` for anything but a
    live access token."""
    grant = access_read(token)
    if grant is None:
        return {"active": False}
    return {
        "exp": grant["exp"],
        "iat": grant["iat"],
        "auth_time": grant["at"],
        "jti": grant["jti"],
        "iss": issuer,
        "sub": SUB_PREFIX + grant["sub"],
        "typ": "Bearer",
        "azp": grant["cid"],
        "nonce": "",
        "session_state": grant["sid"],
        "preferred_username": grant["sub"],
        "email_verified": False,
        "acr": grant["acr"],
        "scope": "openid scope_all",
        "client_id": grant["cid"],
        "username": grant["sub"],
        "SubjectNameID": grant["sub"],  # only when an access token is introspected (§B3)
        "active": True,
    }
