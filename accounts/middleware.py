"""Sessions end after SESSION_IDLE_TIMEOUT without a request, and SESSION_COOKIE_AGE after the
sign-in whatever the activity: a workstation left open in a care unit does not stay signed in.

Django alone gives neither: its expiry moves forward whenever the session is saved.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

# Epoch seconds of the sign-in (the first request of the authenticated session) and of the
# last request seen; never anything else about the person.
SESSION_STARTED_KEY = "session_started_at"
SESSION_SEEN_KEY = "session_seen_at"
# The last-request instant is written at most this often: one session write a minute per
# person, not one per request (the idle limit is then exact to this much).
TOUCH_INTERVAL = 60


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return ngettext("%(n)d heure", "%(n)d heures", hours) % {"n": hours}
    minutes = max(1, seconds // 60)
    return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}


def _expiry_message(session: SessionBase, now: float) -> str | None:
    """Why this session is over, or None while it may go on."""
    started = session.get(SESSION_STARTED_KEY)
    seen = session.get(SESSION_SEEN_KEY)
    if isinstance(started, int | float) and now - started > settings.SESSION_COOKIE_AGE:
        return _(
            "Votre session a atteint sa durée maximale de %(duration)s. Reconnectez-vous avec "
            "Pro Santé Connect."
        ) % {"duration": _duration(settings.SESSION_COOKIE_AGE)}
    if isinstance(seen, int | float) and now - seen > settings.SESSION_IDLE_TIMEOUT:
        return _(
            "Votre session a expiré après %(duration)s d'inactivité. Reconnectez-vous avec "
            "Pro Santé Connect."
        ) % {"duration": _duration(settings.SESSION_IDLE_TIMEOUT)}
    return None


def _touch(session: SessionBase, now: float) -> None:
    """Record activity, and let the store itself forget the session once idle (the row and
    the cookie expire with it, so an abandoned session does not wait for the absolute age)."""
    started = session.setdefault(SESSION_STARTED_KEY, int(now))
    seen = session.get(SESSION_SEEN_KEY)
    if isinstance(seen, int | float) and now - seen < TOUCH_INTERVAL:
        return
    session[SESSION_SEEN_KEY] = int(now)
    remaining = int(started + settings.SESSION_COOKIE_AGE - now)
    session.set_expiry(max(1, min(settings.SESSION_IDLE_TIMEOUT, remaining)))


class SessionTimeoutMiddleware:
    """After the authentication and messages middlewares: an expired session is signed out
    before the view runs (which then asks to sign in, with the reason shown)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        now = time.time()
        if request.user.is_authenticated:
            reason = _expiry_message(request.session, now)
            if reason:
                logout(request)
                messages.info(request, reason)
        response = self.get_response(request)
        # After the view: a sign-in in this very request starts its session here.
        if request.user.is_authenticated:
            _touch(request.session, now)
        return response
