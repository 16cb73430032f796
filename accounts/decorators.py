"""Access to the portal's pages: professionals only (PSC identity). The break-glass operator
account (no national id) reaches the Django admin and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

View = Callable[..., HttpResponseBase]


def professional_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not getattr(request.user, "national_id", None):
            return render(request, "accounts/operator_only.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


# When the person last proved who they are with Pro Santé Connect (epoch seconds), written at
# every PSC sign-in by the account adapter. Never a password, only the instant.
AUTH_AT_SESSION_KEY = "psc_auth_at"


def auth_is_recent(request: HttpRequest) -> bool:
    at = request.session.get(AUTH_AT_SESSION_KEY)
    return isinstance(at, int | float) and time.time() - at <= settings.CONSOLE_REAUTH_MAX_AGE


def reauthenticate(request: HttpRequest) -> HttpResponse:
    """The page asking for a new Pro Santé Connect sign-in, coming back to where the person
    was: this page for a GET, the page the form was on for a POST (nothing was done)."""
    back = request.get_full_path() if request.method == "GET" else request.path
    referer = request.headers.get("Referer", "")
    if request.method != "GET" and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        split = urlsplit(referer)
        back = split.path + (f"?{split.query}" if split.query else "")
    return render(request, "accounts/reauthenticate.html", {"next": back}, status=401)


def recent_auth_required(view: View) -> View:
    """Sensitive actions (close, export, delegation, role change): the Pro Santé Connect
    sign-in must be younger than CONSOLE_REAUTH_MAX_AGE, else the person is asked to sign in
    again and comes back to the page (a POST is not carried out, nothing changes)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not auth_is_recent(request):
            return reauthenticate(request)
        return view(request, *args, **kwargs)

    return wrapper
