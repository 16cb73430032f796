"""Dovecot's login requests served ahead of the portal's page middleware."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from mailboxes.software.views import DOVECOT_AUTH_PATH, dovecot_auth, from_dovecot


class DovecotAuthMiddleware:
    """Answers Dovecot's login requests (``views.dovecot_auth``, at every IMAP login of a
    software) before the middleware made for people's pages: sessions, locale, CSRF (the view
    is exempt), authentication, messages, CSP, htmx, allauth. They cost about a millisecond of
    CPU per login and give this machine-to-machine POST nothing: it carries no cookie, no
    user, no page. Only a request from LPS_AUTH_NETWORKS showing the shared secret takes this
    path (the view checks it again); any other request to that URL goes through the whole
    stack as before, and gets its 404 there."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info == DOVECOT_AUTH_PATH and from_dovecot(request):
            return dovecot_auth(request)
        return self.get_response(request)
