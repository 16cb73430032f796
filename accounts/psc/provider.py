"""Pro Santé Connect as a django-allauth OpenID Connect provider.

allauth's generic OIDC client is reused for the code flow, PKCE and state; this module adds
what PSC and our security rules need and allauth does not do (../shared/reference/
annuaire-psc-ins.md §B):
- discovery at the non-standard ``.well-known/wallet-openid-configuration`` path (§B1);
- ``nonce`` sent and checked (OIDC Core §3.1.2.1, §3.1.3.7 step 11);
- the id_token signature always checked against the JWKS, even though it came over TLS from the
  token endpoint (allauth skips that check, OIDC Core §3.1.3.7 step 6 allows it; we do not);
- ``acr`` checked against the requested level (§B2: eidas1);
- a fresh authentication every time: ``prompt=login`` and ``max_age=0`` sent, the id_token's
  ``auth_time`` required and later than the request (OIDC Core §3.1.2.1, §3.1.3.7 step 13);
  it becomes the session's sign-in instant, which the console's « connexion récente » reads;
- only a plain sign-in: allauth's ``connect`` and ``redirect`` processes, and the scopes and
  parameters it lets a request add, are refused before PSC is contacted;
- userinfo accepted as JSON or as a signed JWT, by Content-Type (§B3);
- the account keyed by ``SubjectNameID``, not ``sub`` (§B4).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
import requests
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.helpers import render_authentication_error
from allauth.socialaccount.providers.base.constants import AuthProcess
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.openid_connect.provider import (
    OpenIDConnectProvider,
    OpenIDConnectProviderAccount,
)
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from accounts.psc import errors
from accounts.psc.claims import ClaimsError, parse_userinfo

# Sign-ins in progress: {state id: {"nonce": ..., "sent_at": epoch seconds of the request}}.
NONCES_SESSION_KEY = "psc_nonces"
ID_TOKEN_SESSION_KEY = "psc_id_token"  # noqa: S105 (a session key name, not a secret)
# Levels of assurance we accept when eidas1 is requested (§B2: the id_token acr must be >= the
# requested level; eidas2/eidas3 appear in older PSC documents).
ACR_RANKS = {"eidas1": 1, "eidas2": 2, "eidas3": 3}
# Tolerated clock difference with PSC (seconds), for exp/iat and for auth_time.
CLOCK_SKEW = 30
SIGNING_ALGORITHMS = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
]


class PscSession(requests.Session):
    """HTTP session for calls to PSC: bounded timeouts, so a dead IdP is a clear error page."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", settings.PSC_HTTP_TIMEOUT)
        return super().request(*args, **kwargs)


class ProSanteConnectAdapter(OpenIDConnectOAuth2Adapter):
    def __init__(self, request: HttpRequest, provider_id: str = "prosanteconnect") -> None:
        super().__init__(request, provider_id)

    def get_callback_url(self, request: HttpRequest, app: Any) -> str:
        return request.build_absolute_uri(reverse("prosanteconnect_callback"))

    # -- the pieces allauth does not check ---------------------------------------------------

    def _jwks(self) -> dict[str, Any]:
        with get_adapter().get_requests_session() as sess:
            resp = sess.get(self.openid_config["jwks_uri"])
            resp.raise_for_status()
            data = resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise errors.PscProtocolError("JWKS document has no keys")
        return data

    def _verify_jwt(self, token: str, *, audience: str, require_exp: bool) -> dict[str, Any]:
        """Verify a JWS from PSC against its JWKS; return the claims."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise errors.PscIdTokenInvalid("not a JWS") from exc
        alg = header.get("alg")
        if alg not in SIGNING_ALGORITHMS:
            raise errors.PscIdTokenInvalid(f"algorithm {alg!r} refused")
        kid = header.get("kid")
        jwk = next(
            (k for k in self._jwks()["keys"] if isinstance(k, dict) and k.get("kid") == kid), None
        )
        if jwk is None:
            raise errors.PscUnknownSigningKey(f"kid {kid!r} is not in the JWKS")
        try:
            key = jwt.PyJWK.from_dict(jwk, algorithm=alg).key
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=self.openid_config["issuer"],
                options={"require": ["iss", "aud", "exp", "iat"] if require_exp else ["iss"]},
                leeway=CLOCK_SKEW,
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.PscIdTokenExpired(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise errors.PscIdTokenInvalid(str(exc)) from exc

    def _pending_request(self, request: HttpRequest) -> tuple[str, int]:
        """The nonce sent for this callback's state, and when the request was sent."""
        state_id = request.GET.get("state", "")
        pending = request.session.get(NONCES_SESSION_KEY, {})
        sent = pending.pop(state_id, None)
        request.session[NONCES_SESSION_KEY] = pending
        if not isinstance(sent, dict) or not sent.get("nonce"):
            raise errors.PscNonceMismatch("no nonce stored for this state")
        return str(sent["nonce"]), int(sent["sent_at"])

    def _check_auth_time(self, claims: dict[str, Any], *, sent_at: int) -> None:
        """We asked for prompt=login and max_age=0: PSC must have authenticated the person
        after our request (OIDC Core §3.1.2.1: auth_time is then REQUIRED; §3.1.3.7 step 13).
        An older auth_time means a PSC session answered without asking anyone."""
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
            raise errors.PscIdTokenInvalid("the id_token has no auth_time")
        if auth_time < sent_at - CLOCK_SKEW:
            raise errors.PscAuthNotFresh(
                f"auth_time {auth_time} is {sent_at - auth_time:.0f} s older than the request"
            )
        if auth_time > time.time() + CLOCK_SKEW:
            raise errors.PscIdTokenInvalid(f"auth_time {auth_time} is in the future")

    def _fetch_user_info(self, access_token: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {access_token}"}
        with get_adapter().get_requests_session() as sess:
            response = sess.get(self.profile_url, headers=headers)
            response.raise_for_status()
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/jwt":
            # Signed userinfo ("jeton userinfo", §B3): same keys as the id_token.
            app = self.get_provider().app
            return self._verify_jwt(
                response.text.strip(), audience=app.client_id, require_exp=False
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise errors.PscUserinfoInvalid("userinfo is neither JSON nor JWT") from exc
        if not isinstance(data, dict):
            raise errors.PscUserinfoInvalid("userinfo is not an object")
        return data

    def complete_login(self, request: HttpRequest, app: Any, token: Any, **kwargs: Any) -> Any:
        response = kwargs["response"]
        id_token = response.get("id_token")
        if not id_token:
            raise errors.PscIdTokenInvalid("the token response has no id_token")
        claims = self._verify_jwt(id_token, audience=app.client_id, require_exp=True)
        nonce, sent_at = self._pending_request(request)
        # OIDC Core §3.1.3.7 step 11: the nonce must be the one we sent for this state.
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise errors.PscNonceMismatch("id_token nonce differs from the one sent")
        self._check_auth_time(claims, sent_at=sent_at)
        wanted = ACR_RANKS.get(settings.PSC_ACR_VALUES, 1)
        if ACR_RANKS.get(str(claims.get("acr", "")), 0) < wanted:
            raise errors.PscAcrInsufficient(
                f"acr {claims.get('acr')!r} below {settings.PSC_ACR_VALUES}"
            )

        userinfo = self._fetch_user_info(token.token)
        if userinfo.get("sub") and userinfo.get("sub") != claims.get("sub"):
            # OIDC Core §5.3.2: the userinfo sub must match the id_token sub.
            raise errors.PscUserinfoInvalid("userinfo sub differs from id_token sub")
        try:
            parse_userinfo(userinfo)
        except ClaimsError as exc:
            raise errors.PscUserinfoInvalid(str(exc)) from exc
        # Kept for RP-initiated logout (id_token_hint); it is not a credential for the portal.
        request.session[ID_TOKEN_SESSION_KEY] = id_token
        return self.get_provider().sociallogin_from_response(
            request, {"userinfo": userinfo, "id_token": claims}
        )


class ProSanteConnectAccount(OpenIDConnectProviderAccount):
    def to_str(self) -> str:
        return str(self.account.uid)


class ProSanteConnectProvider(OpenIDConnectProvider):
    id = "prosanteconnect"
    name = "Pro Santé Connect"
    account_class = ProSanteConnectAccount
    oauth2_adapter_class = ProSanteConnectAdapter
    supports_token_authentication = False

    def wk_server_url(self, url: str) -> str:
        # §B1: the full discovery URL is configured (PSC_DISCOVERY_URL), never guessed.
        return url

    def get_login_url(self, request: HttpRequest, **kwargs: Any) -> str:
        return reverse("prosanteconnect_login")

    def get_callback_url(self) -> str:
        return reverse("prosanteconnect_callback")

    def get_oauth2_adapter(self, request: HttpRequest) -> ProSanteConnectAdapter:
        return ProSanteConnectAdapter(request)

    def extract_uid(self, data: dict[str, Any]) -> str:
        # §B4: SubjectNameID (idNat_PS) is the stable key; `sub` changed form over the years.
        return parse_userinfo(data["userinfo"]).national_id

    def extract_common_fields(self, data: dict[str, Any]) -> dict[str, Any]:
        identity = parse_userinfo(data["userinfo"])
        return {
            "username": identity.national_id,
            "first_name": identity.first_name,
            "last_name": identity.last_name,
        }

    def extract_email_addresses(self, data: dict[str, Any]) -> list[Any]:
        return []  # PSC e-mails are rarely present and never the portal's concern.

    def redirect(
        self,
        request: HttpRequest,
        process: Any,
        next_url: Any = None,
        data: Any = None,
        **kwargs: Any,
    ) -> HttpResponse:
        """Send the browser to PSC for a plain sign-in; every start goes through here."""
        if process != AuthProcess.LOGIN:
            # `connect` would attach the identity about to sign in to the account of whoever
            # holds this session; `redirect` signs in without a session. Neither exists here.
            return render_authentication_error(
                request, self, exception=errors.PscProcessRefused(f"process {process!r}")
            )
        nonce = secrets.token_urlsafe(32)
        state_id = secrets.token_urlsafe(16)
        # Only what we configure: allauth would let the request add scopes (?scope=) and
        # parameters (?auth_params=), enough to skip the prompt or lower the level.
        kwargs["scope"] = self.get_scope()
        kwargs["auth_params"] = {
            **self.get_auth_params(),
            "nonce": nonce,
            # OIDC Core §3.1.2.1: authenticate the person now, even if PSC holds a session
            # (a shared workstation, or « Se reconnecter » before a sensitive action).
            "prompt": "login",
            "max_age": "0",
        }
        pending = request.session.get(NONCES_SESSION_KEY, {})
        # Keep a few concurrent sign-ins (several tabs), not an unbounded list.
        pending = dict(list(pending.items())[-4:])
        pending[state_id] = {"nonce": nonce, "sent_at": int(time.time())}
        request.session[NONCES_SESSION_KEY] = pending
        try:
            return super().redirect(
                request, process, next_url=next_url, data=data, state_id=state_id, **kwargs
            )
        except requests.RequestException as exc:
            request.session.get(NONCES_SESSION_KEY, {}).pop(state_id, None)
            request.session.modified = True
            return render_authentication_error(
                request, self, exception=errors.PscUnreachable(str(exc))
            )
        except (KeyError, ValueError, OAuth2Error) as exc:
            request.session.get(NONCES_SESSION_KEY, {}).pop(state_id, None)
            request.session.modified = True
            return render_authentication_error(
                request, self, exception=errors.PscProtocolError(str(exc))
            )


provider_classes = [ProSanteConnectProvider]
