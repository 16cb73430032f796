"""Entry points of the PSC sign-in, mounted under /comptes/psc/ (allauth's OAuth2 views)."""

from __future__ import annotations

from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView, OAuth2LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.psc.provider import ProSanteConnectAdapter
from accounts.ratelimit import PSC_LOGIN, rate_limited

# Each start costs a PKCE pair, a nonce and a state in the session: limited per address.
login = rate_limited(PSC_LOGIN)(OAuth2LoginView.adapter_view(ProSanteConnectAdapter))
callback = OAuth2CallbackView.adapter_view(ProSanteConnectAdapter)


def signup_refused(request: HttpRequest) -> HttpResponse:
    """allauth sends here when an automatic sign-up cannot complete; we never show a form."""
    return render(request, "accounts/signup_refused.html", status=400)


def inactive(request: HttpRequest) -> HttpResponse:
    """allauth sends here when the account was deactivated by the operator."""
    return render(request, "accounts/inactive.html", status=403)
