"""The Django admin of the break-glass operator account, at /operateur/admin/.

Django's own admin sign-in (a password form without limits) is never served: signing in goes
through allauth (``/operateur/connexion/``: failed attempts limited per address and per
account, then the second factor). Every admin page then asks, on each request, that the
person is staff, passed a second factor (TOTP or WebAuthn, allauth.mfa) in this session, and
comes from OPERATOR_ADMIN_NETWORKS when that setting is set (a 404 from anywhere else).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import update_wrapper
from typing import Any
from urllib.parse import urlencode

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from accounts.audit import client_ip

SECOND_FACTORS = (Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN)


def from_operator_network(request: HttpRequest) -> bool:
    """Whether the client (the trusted proxy hop) is in OPERATOR_ADMIN_NETWORKS (any
    address when the setting is empty)."""
    networks = settings.OPERATOR_ADMIN_NETWORKS
    if not networks:
        return True
    address = client_ip(request)
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in networks)


def has_second_factor(user: Any) -> bool:
    return Authenticator.objects.filter(user=user, type__in=SECOND_FACTORS).exists()


def passed_second_factor(request: HttpRequest) -> bool:
    """Whether this session's sign-in (or a re-authentication) included a second factor."""
    records = get_authentication_records(request, request.user)
    return any(r.get("method") == "mfa" for r in records) and has_second_factor(request.user)


class PortalAdminSite(admin.AdminSite):
    site_header = "Portail MSSanté — administration de l'opérateur"
    site_title = "Opérateur MSSanté"

    def has_permission(self, request: HttpRequest) -> bool:
        return (
            super().has_permission(request)
            and from_operator_network(request)
            and passed_second_factor(request)
        )

    def admin_view(self, view: Callable[..., Any], cacheable: bool = False) -> Any:
        inner = super().admin_view(view, cacheable)

        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if not from_operator_network(request):
                raise Http404
            return inner(request, *args, **kwargs)

        return update_wrapper(guarded, view)

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """Where the admin sends whoever may not see it yet: allauth's sign-in, or, for a
        signed-in staff account, the second factor to set up or to pass."""
        if not from_operator_network(request):
            raise Http404
        back = request.GET.get("next") or reverse("admin:index", current_app=self.name)
        if not back.startswith("/operateur/admin/"):
            back = reverse("admin:index", current_app=self.name)
        user = request.user
        if user.is_authenticated and user.is_active and user.is_staff:
            step = "mfa_reauthenticate" if has_second_factor(user) else "mfa_index"
        else:
            step = "account_login"
        return HttpResponseRedirect(f"{reverse(step)}?{urlencode({'next': back})}")
