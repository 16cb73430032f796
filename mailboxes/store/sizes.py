"""Size of BALs (the consoles' lists, the quota at delivery), asked of Dovecot.

Dovecot is the one that knows: the Maildirs are on a volume only it (and the store worker)
mounts in production, or on a backend behind the proxy (DOVECOT_BACKENDS). Each BAL's size is
the sum of its folders' STATUS SIZE over the portal's IMAP socket; it is cached for a few
minutes, which is what a director needs to see which BAL grows and what the quota needs (a BAL
may go over its quota by the messages of those minutes, never lose one), not a count to the byte.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.cache import cache

from mailboxes.errors import StoreUnavailable
from mailboxes.store.imap import open_store

CACHE_SECONDS = 600


def _measure(address: str) -> int | None:
    try:
        with open_store(address) as store:
            return store.size()
    except StoreUnavailable:
        return None


def home_sizes(addresses: Iterable[str]) -> dict[str, int | None]:
    """Bytes held by each BAL (None when Dovecot could not tell: unknown to it, or down).
    An unknown size is not cached, so the next request asks again."""
    addresses = list(addresses)
    keys = {a: f"bal-size:{a.lower()}" for a in addresses}
    cached = cache.get_many(list(keys.values()))
    sizes: dict[str, int | None] = {}
    fresh = {}
    for address, key in keys.items():
        if key in cached:
            sizes[address] = cached[key]
            continue
        size = _measure(address)
        sizes[address] = size
        if size is not None:
            fresh[key] = size
    if fresh:
        cache.set_many(fresh, CACHE_SECONDS)
    return sizes
