"""Sign-in starts, annuaire searches and autocompletion are rate-limited per person and per
client address, with a French message (accounts.ratelimit, counters in Redis)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from tests.factories import make_professional

pytestmark = pytest.mark.django_db

MESSAGE = "Trop de demandes en peu de temps"


def _client(user: User, address: str = "198.51.100.7") -> Client:
    client = Client(REMOTE_ADDR=address)
    client.force_login(user)
    return client


def _limits(settings: Any, **rates: str) -> None:
    settings.PORTAL_RATE_LIMITS = {**settings.PORTAL_RATE_LIMITS, **rates}


def test_annuaire_searches_are_limited_per_person_then_per_address(settings) -> None:
    _limits(settings, annuaire_search="3/m/user,5/m/ip")
    claire, julien = make_professional(), make_professional(first_name="Julien")
    as_claire, as_julien = _client(claire), _client(julien)

    def search(client: Client) -> int:
        return client.get("/annuaire/", {"nom": "martin"}).status_code

    assert [search(as_claire) for _ in range(3)] == [200, 200, 200]
    refused = as_claire.get("/annuaire/", {"nom": "martin"})
    assert refused.status_code == 429
    assert MESSAGE in html.unescape(refused.content.decode())
    # Julien has his own allowance, but shares the address: 5 per minute in all from it
    # (Claire's refused attempt counted too).
    assert [search(as_julien) for _ in range(2)] == [200, 429]
    # Elsewhere, Julien may go on.
    assert search(_client(julien, "203.0.113.9")) == 200


@pytest.mark.parametrize(
    "path",
    ["/annuaire/suggestions/", "/bal/destinataires/suggestions/"],
    ids=["annuaire", "compose"],
)
def test_autocompletion_is_limited_and_htmx_gets_a_toast(settings, path: str) -> None:
    from tests.factories import make_mailbox, make_structure

    _limits(settings, annuaire_suggest="2/m/user,10/m/ip")
    doctor = make_professional()
    make_mailbox(structure=make_structure(), owner=doctor)
    client = _client(doctor)

    def suggest() -> Any:
        return client.get(path, {"q": "mart"}, HTTP_HX_REQUEST="true")

    assert [suggest().status_code for _ in range(2)] == [200, 200]
    refused = suggest()
    assert refused.status_code == 429
    assert refused["HX-Retarget"] == "#toasts"
    assert MESSAGE in html.unescape(refused.content.decode())


def test_sign_in_starts_are_limited_per_address(
    settings, psc_unreachable: Callable[[], None]
) -> None:
    _limits(settings, psc_login="2/m/ip")
    psc_unreachable()  # the limit answers before any provider is contacted
    here, elsewhere = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")

    def start(client: Client) -> int:
        return client.post("/comptes/psc/connexion/", {"process": "login"}).status_code

    first = [start(here) for _ in range(2)]
    refused = here.post("/comptes/psc/connexion/", {"process": "login"})

    assert 429 not in first
    assert refused.status_code == 429 and MESSAGE in html.unescape(refused.content.decode())
    assert start(elsewhere) != 429


def test_the_limit_counts_the_client_behind_a_trusted_proxy(settings) -> None:
    import ipaddress

    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    _limits(settings, annuaire_search="100/m/user,2/m/ip")
    proxy = "10.0.0.2"

    def search(user: User, forwarded: str) -> int:
        client = _client(user, proxy)
        return client.get("/annuaire/", {"nom": "x"}, HTTP_X_FORWARDED_FOR=forwarded).status_code

    people = [make_professional(first_name=f"P{i}") for i in range(4)]
    assert [search(p, "198.51.100.1") for p in people[:3]] == [200, 200, 429]
    assert search(people[3], "198.51.100.2") == 200  # another client behind the same proxy


def test_a_counter_lives_as_long_as_its_window_from_the_first_use(settings) -> None:
    """The counters are stored with their window's expiry, set by the first use and kept by
    the next ones (one Redis round trip per request: INCR and EXPIRE NX together)."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    _limits(settings, annuaire_suggest="50/m/user,100/h/ip")
    doctor = make_professional()
    client = _client(doctor)
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    redis = backend._cache.get_client(write=True)
    user_key = backend.make_and_validate_key(f"ratelimit:annuaire_suggest:50/60:user:{doctor.pk}")
    ip_key = backend.make_and_validate_key("ratelimit:annuaire_suggest:100/3600:ip:198.51.100.7")
    redis.delete(user_key, ip_key)

    def used(key: str) -> int:
        return int(redis.get(key) or 0)

    client.get("/annuaire/suggestions/", {"q": "mart"}, HTTP_HX_REQUEST="true")
    assert used(user_key) == 1 and used(ip_key) == 1
    assert 55 <= redis.ttl(user_key) <= 60
    assert 3590 <= redis.ttl(ip_key) <= 3600
    redis.expire(user_key, 30)  # as if half the window had passed
    client.get("/annuaire/suggestions/", {"q": "mart"}, HTTP_HX_REQUEST="true")
    assert used(user_key) == 2
    assert redis.ttl(user_key) <= 30  # the window did not move
