"""Health endpoints for the orchestrator (compose healthchecks, a load balancer): liveness says
the process answers; readiness says it can serve, each dependency checked for real with a
short timeout. Open without sign-in: they name components and states, nothing else."""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from mailboxes.store import dovecot
from mssante_portal.celery import app

TIMEOUT = 2.0  # seconds per dependency: a healthcheck must answer before its own deadline


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    with app.connection_for_write(connect_timeout=TIMEOUT) as conn:
        conn.ensure_connection(max_retries=1)


def _store() -> None:
    dovecot.wait_ready(dovecot.instance_from_settings(), timeout=TIMEOUT)


CHECKS: dict[str, Callable[[], None]] = {
    "base_de_donnees": _database,
    "courtier": _broker,
    "dovecot": _store,
}


@never_cache
@require_GET
def alive(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers requests."""
    return JsonResponse({"etat": "ok"})


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database, the broker and Dovecot answer, else 503 naming the
    ones that do not (never their error text: it may name hosts or credentials)."""
    states = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception:  # any failure of a dependency is "not ready", whatever its kind
            states[name] = "indisponible"
        else:
            states[name] = "ok"
    ok = all(state == "ok" for state in states.values())
    return JsonResponse(
        {"etat": "ok" if ok else "indisponible", **states}, status=200 if ok else 503
    )


ROUTES: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/sante/": alive, "/sante/pret/": ready}


class HealthMiddleware:
    """Answers the two health paths before any other middleware. An orchestrator probes from
    where it stands: compose's healthcheck runs inside the container and sends Host 127.0.0.1,
    a load balancer its own address, both over plain HTTP. Behind ALLOWED_HOSTS (checked by
    CommonMiddleware) and SECURE_SSL_REDIRECT (SecurityMiddleware) they would get 400 or 301,
    so these two GETs, which name states and nothing else, are served first; every other page
    keeps the strict host check and the HTTPS redirect."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = ROUTES.get(request.path_info)
        return view(request) if view is not None else self.get_response(request)
