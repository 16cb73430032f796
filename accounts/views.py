from __future__ import annotations

from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth import logout as django_logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.audit import Action, audit_record
from accounts.decorators import professional_required
from accounts.models import User
from accounts.psc.provider import ID_TOKEN_SESSION_KEY, ProSanteConnectAdapter
from accounts.selectors import home_profile


def login_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("accounts:home")
    return render(request, "accounts/login.html")


@professional_required
def home(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)  # login_required
    return render(request, "accounts/home.html", {"profile": home_profile(request.user)})


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """End the portal session, then the PSC session (RP-initiated logout, PSC brief §B4).

    The portal session ends first: if PSC cannot be reached, the person is still signed out
    here and is told so.
    """
    id_token = request.session.get(ID_TOKEN_SESSION_KEY)
    if isinstance(request.user, User):
        audit_record(action=Action.LOGOUT, actor=request.user, target=request.user, request=request)
    django_logout(request)
    back = request.build_absolute_uri(reverse("accounts:logged_out"))
    if not id_token:
        return HttpResponseRedirect(back)
    try:
        end_session = ProSanteConnectAdapter(request).openid_config.get("end_session_endpoint")
    except (requests.RequestException, ValueError):
        end_session = None
    if not end_session:
        return HttpResponseRedirect(f"{back}?psc=injoignable")
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": back,
            "client_id": settings.PSC_CLIENT_ID,
        }
    )
    return HttpResponseRedirect(f"{end_session}?{query}")


def logged_out(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "accounts/logged_out.html",
        {"psc_unreachable": request.GET.get("psc") == "injoignable"},
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "errors/404.html", status=404)
