"""Get tokens from the mock as a care software would, over real HTTP: authorization-code flow
of the « logiciel métier de test » client (PKCE, loopback redirect, RFC 8252), refresh and
revoke. Used by ``manage.py psc_token`` and by the tests."""

from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from django.conf import settings

OIDC = "/_dev/psc/auth/realms/esante-wallet/protocol/openid-connect"
AUTHORIZE = "/_dev/psc/wallet/auth"
REDIRECT = "http://127.0.0.1:53682/callback"  # the software's loopback listener (RFC 8252 §7.3)


class _Csrf(HTMLParser):
    token = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("name") == "csrfmiddlewaretoken":
            self.token = a.get("value") or ""


def _auth() -> tuple[str, str]:
    return (settings.PSC_MOCK_LPS_CLIENT_ID, settings.PSC_MOCK_LPS_CLIENT_SECRET)


def token_for(base_url: str, national_id: str, *, auth_mode: str = "card") -> dict[str, Any]:
    """The token answer (access_token, refresh_token, ...) after the professional
    ``national_id`` chose to sign in on the mock's page. Raises RuntimeError on refusal."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    params = {
        "response_type": "code",
        "client_id": settings.PSC_MOCK_LPS_CLIENT_ID,
        "redirect_uri": REDIRECT,
        "scope": "openid scope_all",
        "acr_values": "eidas1",
        "state": secrets.token_hex(8),
        "nonce": secrets.token_hex(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "login",
        "max_age": "",
    }
    with requests.Session() as browser:
        page = browser.get(f"{base_url}{AUTHORIZE}?{urlencode(params)}", timeout=10)
        if page.status_code != 200:
            raise RuntimeError(f"page d'autorisation : HTTP {page.status_code}")
        form = _Csrf()
        form.feed(page.text)
        chosen = browser.post(
            f"{base_url}{AUTHORIZE}",
            data={
                **params,
                "csrfmiddlewaretoken": form.token,
                "identity": national_id,
                "auth_mode": auth_mode,
                "action": "login",
            },
            headers={"Referer": page.url},
            allow_redirects=False,
            timeout=10,
        )
        location = chosen.headers.get("Location", "")
        code = parse_qs(urlsplit(location).query).get("code", [""])[0]
        if not code:
            raise RuntimeError(f"pas de code d'autorisation (HTTP {chosen.status_code})")
        answer = browser.post(
            f"{base_url}{OIDC}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
            auth=_auth(),
            timeout=10,
        )
    if answer.status_code != 200:
        raise RuntimeError(f"jeton refusé : {answer.text}")
    return dict(answer.json())


def token_refresh(base_url: str, refresh_token: str) -> dict[str, Any]:
    answer = requests.post(
        f"{base_url}{OIDC}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=_auth(),
        timeout=10,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"rafraîchissement refusé : {answer.text}")
    return dict(answer.json())


def token_revoke(base_url: str, token: str) -> None:
    requests.post(f"{base_url}{OIDC}/revoke", data={"token": token}, auth=_auth(), timeout=10)
