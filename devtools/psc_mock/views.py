"""A Pro Santé Connect look-alike (dev and demo only): discovery, authorize, token, userinfo,
JWKS, end_session, with PSC's path shapes (../shared/reference/annuaire-psc-ins.md §B).

Codes and access tokens are signed, self-contained values (django.core.signing), so any web
process can serve any step; a code is single-use through the cache.

Like PSC, the mock keeps a single-sign-on session (a signed cookie of its own, under its own
path): asked again without ``prompt=login``, it answers at once with the ``auth_time`` of that
session; ``prompt=login`` or an exceeded ``max_age`` make it ask again; ``prompt=none`` never
asks (OIDC Core §3.1.2.1). The portal's re-authentication is tested against this behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from devtools.psc_mock import tokens
from devtools.psc_mock.clients import authenticated, redirect_allowed, registered
from devtools.psc_mock.identities import get_identity, picker_rows
from devtools.psc_mock.keys import public_jwk, rogue_key, signing_key

CODE_SALT = "psc_mock.code"
SSO_SALT = "psc_mock.sso"
SSO_COOKIE = "psc_mock_sso"
CODE_TTL = 60
TOKEN_TTL = tokens.TOKEN_TTL
SSO_TTL = 10 * 3600  # a PSC session lasts a working day
AUTH_MODES = {"card": "CARD", "ecps": "MOBILE"}  # e-CPS value unconfirmed in the reference [?]
PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "acr_values",
          "code_challenge", "code_challenge_method", "prompt", "max_age")  # fmt: skip
PROMPTS = {"none", "login", "consent", "select_account"}


def _origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _issuer(request: HttpRequest) -> str:
    return _origin(request) + reverse("psc_mock:issuer")


def _fault() -> str:
    return str(getattr(settings, "PSC_MOCK_FAULT", "") or "")


def discovery(request: HttpRequest) -> JsonResponse:
    issuer = _issuer(request)
    return JsonResponse(
        {
            "issuer": issuer,
            "authorization_endpoint": _origin(request) + reverse("psc_mock:authorize"),
            "token_endpoint": f"{issuer}/protocol/openid-connect/token",
            "introspection_endpoint": f"{issuer}/protocol/openid-connect/token/introspect",
            "revocation_endpoint": f"{issuer}/protocol/openid-connect/revoke",
            "userinfo_endpoint": f"{issuer}/protocol/openid-connect/userinfo",
            "jwks_uri": f"{issuer}/protocol/openid-connect/certs",
            "end_session_endpoint": f"{issuer}/protocol/openid-connect/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "scope_all", "eidas1", "profile", "email"],
            "acr_values_supported": ["eidas1"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "userinfo_signing_alg_values_supported": ["RS256", "none"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "acr",
                "auth_time",
                "nonce",
                "SubjectNameID",
                "SubjectRefPro",
            ],
        }
    )


def _authorize_error(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "psc_mock/error.html", {"message": message}, status=400)


def _validated(request: HttpRequest, data: Any) -> tuple[dict[str, str], str | None]:
    params = {name: str(data.get(name, ""))[:2000] for name in PARAMS}
    client = registered().get(params["client_id"])
    if client is None:
        return params, "Application cliente inconnue."
    # The portal's own origin: the one this request came to, or PORTAL_SITE_URL's when the
    # portal reaches the mock by an internal name (containers: http://web:8000).
    if not redirect_allowed(client, params["redirect_uri"], {_origin(request), settings.SITE_URL}):
        return params, "Adresse de retour non enregistrée pour cette application."
    if params["response_type"] != "code" or "openid" not in params["scope"].split():
        return (
            params,
            "Demande d'autorisation invalide (response_type=code et scope openid attendus).",
        )
    if params["code_challenge"] and params["code_challenge_method"] != "S256":
        return params, "Méthode PKCE non prise en charge (S256 attendue)."
    prompts = set(params["prompt"].split())
    if not prompts <= PROMPTS or ("none" in prompts and len(prompts) > 1):
        return params, "Paramètre prompt invalide."  # OIDC Core §3.1.2.1
    if params["max_age"] and not params["max_age"].isdigit():
        return params, "Paramètre max_age invalide (un nombre de secondes est attendu)."
    return params, None


def _back(params: dict[str, str], **values: str) -> HttpResponseRedirect:
    query = urlencode({**values, "state": params["state"]})
    sep = "&" if "?" in params["redirect_uri"] else "?"
    return HttpResponseRedirect(f"{params['redirect_uri']}{sep}{query}")


def sso_cookie_value(*, subject_name_id: str, auth_mode: str, auth_time: int) -> str:
    """The mock's single-sign-on session: who authenticated, how, and when."""
    return signing.dumps(
        {"sub": subject_name_id, "mode": auth_mode, "auth_time": auth_time}, salt=SSO_SALT
    )


def _sso_path() -> str:
    return reverse("psc_mock:authorize").removesuffix("wallet/auth")  # authorize and logout


def _sso_session(request: HttpRequest) -> dict[str, Any] | None:
    try:
        sso = signing.loads(request.COOKIES.get(SSO_COOKIE, ""), salt=SSO_SALT, max_age=SSO_TTL)
    except signing.BadSignature:
        return None
    if not isinstance(sso, dict) or get_identity(str(sso.get("sub", ""))) is None:
        return None
    return sso


def _code(params: dict[str, str], *, sub: str, mode: str, auth_time: int) -> HttpResponseRedirect:
    code = signing.dumps(
        {
            "sub": sub,
            "mode": mode,
            "client_id": params["client_id"],
            "redirect_uri": params["redirect_uri"],
            "nonce": params["nonce"],
            "challenge": params["code_challenge"],
            "auth_time": auth_time,
            "jti": secrets.token_hex(8),
        },
        salt=CODE_SALT,
    )
    return _back(params, code=code)


@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    params, error = _validated(request, request.GET if request.method == "GET" else request.POST)
    if error:
        return _authorize_error(request, error)
    if request.method == "GET":
        # OIDC Core §3.1.2.1: a live session answers at once unless prompt=login asks for a
        # new authentication or the last one is older than max_age; prompt=none never asks.
        prompts = set(params["prompt"].split())
        sso = _sso_session(request)
        too_old = (
            sso is not None
            and params["max_age"] != ""
            and time.time() - sso["auth_time"] > int(params["max_age"])
        )
        if sso is not None and "login" not in prompts and not too_old:
            return _code(params, sub=sso["sub"], mode=sso["mode"], auth_time=sso["auth_time"])
        if "none" in prompts:
            return _back(params, error="login_required")
        return render(
            request,
            "psc_mock/authorize.html",
            {
                "params": params,
                "identities": picker_rows(),
                "client_name": registered()[params["client_id"]].name,
            },
        )
    if request.POST.get("action") == "cancel":
        return _back(params, error="access_denied", error_description="L'utilisateur a annulé")
    identity = get_identity(request.POST.get("identity", ""))
    mode = AUTH_MODES.get(request.POST.get("auth_mode", ""))
    if identity is None or mode is None:
        return render(
            request,
            "psc_mock/authorize.html",
            {
                "params": params,
                "identities": picker_rows(),
                "client_name": registered()[params["client_id"]].name,
                "error": "Choisissez une identité et un moyen.",
            },
            status=400,
        )
    auth_time = int(time.time())
    response = _code(params, sub=identity["SubjectNameID"], mode=mode, auth_time=auth_time)
    response.set_cookie(
        SSO_COOKIE,
        sso_cookie_value(
            subject_name_id=identity["SubjectNameID"], auth_mode=mode, auth_time=auth_time
        ),
        max_age=SSO_TTL,
        path=_sso_path(),
        secure=request.is_secure(),
        httponly=True,
        samesite="Lax",
    )
    return response


def _grant_error(error: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": error}, status=status)


def _sign(claims: dict[str, Any]) -> str:
    fault = _fault()
    key = rogue_key() if fault == "unknown_kid" else signing_key()
    kid = public_jwk(key)["kid"]
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
    if fault == "tampered_id_token":
        header, payload, signature = token.split(".")
        forged = jwt.utils.base64url_decode(payload).replace(b'"acr"', b'"acR"')
        token = ".".join([header, jwt.utils.base64url_encode(forged).decode(), signature])
    return token


def _refreshed(request: HttpRequest, client_id: str) -> JsonResponse:
    """RFC 6749 §6: a new access token for a live refresh token of the same client."""
    grant = tokens.refresh_read(request.POST.get("refresh_token", ""))
    if grant is None or grant["cid"] != client_id:
        return _grant_error("invalid_grant")
    access = tokens.access_issue(
        sub=grant["sub"], mode=grant["mode"], client_id=client_id, auth_time=grant["at"],
        sid=grant["sid"],
    )  # fmt: skip
    return JsonResponse(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "refresh_token": request.POST["refresh_token"],
            "refresh_expires_in": tokens.REFRESH_TTL,
            "scope": "openid scope_all",
        }
    )


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> JsonResponse:
    client = authenticated(request)
    if client is None:
        return _grant_error("invalid_client", 401)
    if request.POST.get("grant_type") == "refresh_token" and client.native:
        return _refreshed(request, client.client_id)
    if request.POST.get("grant_type") != "authorization_code":
        return _grant_error("unsupported_grant_type")
    raw = request.POST.get("code", "")
    try:
        code = signing.loads(raw, salt=CODE_SALT, max_age=CODE_TTL)
    except signing.BadSignature:
        return _grant_error("invalid_grant")
    if not cache.add(f"psc_mock:code:{code['jti']}", True, CODE_TTL * 2):
        return _grant_error("invalid_grant")  # a code is used once (RFC 6749 §4.1.2)
    if (
        code["redirect_uri"] != request.POST.get("redirect_uri")
        or code["client_id"] != client.client_id
    ):
        return _grant_error("invalid_grant")
    if code["challenge"]:
        verifier = request.POST.get("code_verifier", "")
        digest = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if not secrets.compare_digest(digest, code["challenge"]):
            return _grant_error("invalid_grant")  # RFC 7636 §4.6
    now = int(time.time())
    fault = _fault()
    issued = now - 3600 if fault == "expired_id_token" else now
    id_token = _sign(
        {
            "iss": _issuer(request),
            "sub": f"{tokens.SUB_PREFIX}{code['sub']}",
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": issued,
            "exp": issued + 300,
            "nonce": "nonce-falsifie" if fault == "wrong_nonce" else code["nonce"],
            "acr": "eidas0" if fault == "wrong_acr" else "eidas1",
            "preferred_username": code["sub"],
            "sid": secrets.token_hex(8),
            "jti": secrets.token_hex(8),
            **({} if fault == "no_auth_time" else {"auth_time": code["auth_time"]}),
        }
    )
    sid = secrets.token_hex(8)
    access = tokens.access_issue(
        sub=code["sub"], mode=code["mode"], client_id=client.client_id,
        auth_time=code["auth_time"], sid=sid,
    )  # fmt: skip
    answer: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL,
        "id_token": id_token,
        "scope": "openid scope_all",
    }
    if client.native:  # the software keeps the session open with it (SC.MSS/CONF.10-11)
        answer["refresh_token"] = tokens.refresh_issue(
            sub=code["sub"], mode=code["mode"], client_id=client.client_id,
            auth_time=code["auth_time"], sid=sid,
        )  # fmt: skip
        answer["refresh_expires_in"] = tokens.REFRESH_TTL
    return JsonResponse(answer)


@csrf_exempt
@require_POST
def introspect(request: HttpRequest) -> JsonResponse:
    """RFC 7662, as PSC (Keycloak) answers it to an authenticated client (§B3)."""
    if authenticated(request) is None:
        return _grant_error("invalid_client", 401)
    return JsonResponse(
        tokens.introspection(request.POST.get("token", ""), issuer=_issuer(request))
    )


@csrf_exempt
@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    """RFC 7009 §2.2: 200 whether or not the token was known."""
    if authenticated(request) is None:
        return _grant_error("invalid_client", 401)
    tokens.revoke(request.POST.get("token", ""))
    return HttpResponse(status=200)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def userinfo(request: HttpRequest) -> HttpResponse:
    header = request.headers.get("Authorization", "")
    grant = tokens.access_read(header.removeprefix("Bearer "))
    if grant is None:
        response = JsonResponse({"error": "invalid_token"}, status=401)
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    identity = get_identity(grant["sub"])
    if identity is None:
        return JsonResponse({"error": "invalid_token"}, status=401)
    claims = {**identity, "authMode": grant["mode"]}
    if _fault() == "no_subject_name_id":
        claims.pop("SubjectNameID")
    if settings.PSC_MOCK_USERINFO_FORMAT == "jwt":
        signed = jwt.encode(
            {
                **claims,
                "iss": _issuer(request),
                "aud": grant["cid"],
                "iat": int(time.time()),
            },
            signing_key(),
            algorithm="RS256",
            headers={"kid": public_jwk(signing_key())["kid"]},
        )
        return HttpResponse(signed, content_type="application/jwt")
    return JsonResponse(claims, json_dumps_params={"ensure_ascii": False})


def jwks(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"keys": [public_jwk(signing_key())]})


def logout(request: HttpRequest) -> HttpResponse:
    """End the PSC session (RP-initiated logout), then go back where the portal asked."""
    target = request.GET.get("post_logout_redirect_uri", "")
    parts = urlsplit(target)
    response: HttpResponse
    if target and f"{parts.scheme}://{parts.netloc}" == _origin(request):
        state = request.GET.get("state")
        response = HttpResponseRedirect(
            f"{target}{'&' if '?' in target else '?'}{urlencode({'state': state})}"
            if state
            else target
        )
    else:
        response = render(request, "psc_mock/logged_out.html")
    response.delete_cookie(SSO_COOKIE, path=_sso_path(), samesite="Lax")
    return response


def issuer(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"realm": "esante-wallet", "public_key": None})
