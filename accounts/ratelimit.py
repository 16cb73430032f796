"""Rate limits of the portal's costly or guessable entry points (sign-in start, annuaire search
and autocompletion), per person and per client address.

Windows counted in Django's cache (Redis in production: shared by every web process), each
starting at its first use (the counter's key expires ``duration`` later; Redis INCR keeps
the expiry),
configured in ``settings.PORTAL_RATE_LIMITS`` (``<count>/<duration>/<ip|user>`` items); the
address is ``accounts.audit.client_ip`` (the trusted proxy hop). An exceeded limit raises
``TooManyRequests``, which the error middleware shows as a French page or an htmx toast.
allauth's own limits (the break-glass password sign-in) only count POSTs, hence this module.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from accounts.audit import client_ip
from mssante_portal.errors import PortalError

View = Callable[..., HttpResponseBase]

PSC_LOGIN = "psc_login"
ANNUAIRE_SEARCH = "annuaire_search"
ANNUAIRE_SUGGEST = "annuaire_suggest"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TooManyRequests(PortalError):
    user_message = (
        "Trop de demandes en peu de temps depuis votre compte ou votre adresse : "
        "patientez une minute, puis réessayez."
    )
    code = "rate_limited"
    http_status = 429
    permanent = False


def _rates(action: str) -> list[tuple[int, int, str]]:
    """(count, seconds, "ip" or "user") of each limit of ``action`` (settings checked the
    syntax at start)."""
    rates = []
    for item in settings.PORTAL_RATE_LIMITS.get(action, "").split(","):
        if not item:
            continue
        count, duration, *per = item.split("/")
        seconds = int(duration[:-1] or 1) * UNITS[duration[-1]]
        rates.append((int(count), seconds, per[0] if per else "ip"))
    return rates


def _count(windows: list[tuple[str, int]]) -> list[int]:
    """Add one use to each (counter key, window seconds) and return the new counts. On Redis,
    one round trip for all of them: INCR, then EXPIRE NX (Redis 7: the expiry is set by the
    first use only, so the window does not move), in one MULTI/EXEC so that no counter is
    left without its expiry. Elsewhere (the embedded file cache) through the cache API."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        keys = [backend.make_and_validate_key(key) for key, _seconds in windows]
        client = backend._cache.get_client(keys[0], write=True)  # Django's own Redis client
        pipe = client.pipeline(transaction=True)
        for key, (_key, seconds) in zip(keys, windows, strict=True):
            pipe.incr(key)
            pipe.expire(key, seconds, nx=True)
        return [int(used) for used in pipe.execute()[0::2]]
    counts = []
    for key, seconds in windows:
        cache.add(key, 0, timeout=seconds)
        try:
            counts.append(cache.incr(key))
        except ValueError:  # expired between add and incr: a new window
            cache.add(key, 1, timeout=seconds)
            counts.append(1)
    return counts


def allowed(request: HttpRequest, action: str) -> bool:
    """Count one use of ``action`` by this request's person and address; False once a limit
    of the current window is exceeded. A limit ``user`` counts only signed-in people."""
    limits, windows = [], []
    for count, seconds, per in _rates(action):
        if per == "user":
            if not request.user.is_authenticated:
                continue
            who = f"user:{request.user.pk}"
        else:
            who = f"ip:{client_ip(request) or 'inconnue'}"
        limits.append(count)
        windows.append((f"ratelimit:{action}:{count}/{seconds}:{who}", seconds))
    if not windows:
        return True
    return all(used <= count for used, count in zip(_count(windows), limits, strict=True))


def rate_limited(action: str) -> Callable[[View], View]:
    """Refuse the view with TooManyRequests once ``action``'s limits are used up (put it
    inside the sign-in check so that limits per user apply)."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not allowed(request, action):
                raise TooManyRequests()
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
