"""allauth adapters: professionals sign in only through Pro Santé Connect.

Local sign-up and password sign-in are closed; the break-glass operator account signs in to
the Django admin with its own form. Every outcome of a PSC sign-in is traced.
"""

from __future__ import annotations

from typing import Any

import requests
from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from allauth.socialaccount.providers.base.constants import AuthError
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.audit import Action, audit_record, client_ip
from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.errors import NationalIdMismatch
from accounts.models import User
from accounts.psc import errors
from accounts.psc.claims import parse_userinfo
from accounts.psc.provider import ID_TOKEN_SESSION_KEY, NONCES_SESSION_KEY, PscSession
from accounts.services import user_sync_from_psc


class PortalAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False  # no local accounts; PSC sign-ups go through the social adapter

    def get_client_ip(self, request: HttpRequest) -> str:
        """The address allauth's rate limits count: the trusted proxy hop (client_ip)."""
        return client_ip(request) or "0.0.0.0"  # noqa: S104 (a key, not a bind address)

    def login(self, request: HttpRequest, user: Any) -> None:
        super().login(request, user)
        audit_record(
            action=Action.LOGIN,
            actor=user,
            target=user,
            request=request,
            details={"auth_mode": user.last_auth_mode},
        )

    def post_login(self, request: HttpRequest, user: Any, **kwargs: Any) -> HttpResponse:
        # The sign-in instant is the one PSC vouches for (the id_token's auth_time, checked
        # by the provider), not the instant this callback ran; written after the login,
        # which may have flushed the session of the person signed in before.
        sociallogin = (kwargs.get("signal_kwargs") or {}).get("sociallogin")
        if sociallogin is not None:
            auth_time = sociallogin.account.extra_data["id_token"]["auth_time"]
            request.session[AUTH_AT_SESSION_KEY] = int(auth_time)
        response: HttpResponse = super().post_login(request, user, **kwargs)
        return response


def _classify(error: Any, exception: Any, extra_context: dict[str, Any]) -> errors.PscError:
    if error == AuthError.CANCELLED:
        return errors.PscCancelled()
    if isinstance(exception, errors.PscError):
        return exception
    if isinstance(exception, requests.RequestException):
        return errors.PscUnreachable(str(exception))
    if exception is None and "state_id" in extra_context:
        # allauth found no pending state for this callback (CSRF on the redirect, replay).
        return errors.PscStateMismatch()
    if exception is None:
        return errors.PscIdpError()
    if isinstance(exception, OAuth2Error):
        return errors.PscProtocolError(str(exception))
    return errors.PscError(str(exception))


class PscSocialAccountAdapter(DefaultSocialAccountAdapter):
    def get_requests_session(self) -> requests.Session:
        return PscSession()

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        return True

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider: Any,
        error: Any = None,
        exception: Any = None,
        extra_context: Any = None,
    ) -> None:
        failure = _classify(error, exception, extra_context or {})
        request.session.pop(NONCES_SESSION_KEY, None)
        request.session.pop(ID_TOKEN_SESSION_KEY, None)
        mismatch = failure if isinstance(failure, errors.PscIdentityMismatch) else None
        audit_record(
            action=Action.LOGIN_FAILED,
            success=False,
            error_code=failure.code,
            request=request,
            # The account the identity tried to enter, and the identity itself.
            target=mismatch.account if mismatch else None,
            details={"national_id": mismatch.national_id} if mismatch else None,
        )
        status = (
            200
            if isinstance(failure, errors.PscCancelled)
            else 502
            if isinstance(failure, errors.PscUnreachable)
            else 400
        )
        raise ImmediateHttpResponse(
            render(request, "accounts/login_error.html", {"failure": failure}, status=status)
        )

    def populate_user(
        self, request: HttpRequest, sociallogin: SocialLogin, data: dict[str, Any]
    ) -> Any:
        user = super().populate_user(request, sociallogin, data)
        user.national_id = data["username"]
        return user

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        identity = parse_userinfo(sociallogin.account.extra_data["userinfo"])
        if not sociallogin.is_existing:
            # A person invited by a director (or loaded as demo data) already has an account
            # keyed by their national id: attach this PSC identity to it. The id comes from
            # verified claims (§B4), so this cannot attach a stranger.
            known = User.objects.filter(national_id=identity.national_id).first()
            if known is None:
                return  # a new account: save_user() creates and fills it
            with transaction.atomic():
                sociallogin.connect(request, known)
        try:
            user_sync_from_psc(user=sociallogin.user, identity=identity)
        except NationalIdMismatch as exc:
            # The identity is linked to an account keyed by another national id (a link made
            # before linking was closed, or by hand): refused before any session opens.
            raise errors.PscIdentityMismatch(
                account=sociallogin.user, national_id=identity.national_id
            ) from exc

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin, form: Any = None) -> Any:
        # The new account, its identity and memberships are written together or not at all.
        with transaction.atomic():
            user = super().save_user(request, sociallogin, form)
            identity = parse_userinfo(sociallogin.account.extra_data["userinfo"])
            user_sync_from_psc(user=user, identity=identity)
        return user
