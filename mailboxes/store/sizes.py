"""Size on disk of BALs (the console's list), read from the Maildirs Dovecot writes.

Walking a Maildir costs a stat per message: the result is cached for a few minutes, which is
what a director needs to see which BAL grows, not a quota to the byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.core.cache import cache

CACHE_SECONDS = 600


def _home(address: str) -> Path | None:
    local, _, domain = address.lower().rpartition("@")
    root = Path(settings.DOVECOT_MAIL_ROOT)
    home = root / domain / local
    # Same layout as Dovecot's userdb (home=<mail_root>/%Ld/%Ln); never leave mail_root.
    if (
        not local
        or "/" in local
        or "/" in domain
        or local.startswith(".")
        or domain.startswith(".")
    ):
        return None
    return home


def _walk(path: Path) -> int:
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def home_sizes(addresses: Iterable[str]) -> dict[str, int | None]:
    """Bytes used by each BAL's mail (None when its directory cannot be read)."""
    addresses = list(addresses)
    keys = {a: f"bal-size:{a.lower()}" for a in addresses}
    cached = cache.get_many(list(keys.values()))
    sizes: dict[str, int | None] = {}
    fresh = {}
    for address, key in keys.items():
        if key in cached:
            sizes[address] = cached[key]
            continue
        home = _home(address)
        size = _walk(home) if home is not None and home.is_dir() else 0 if home else None
        sizes[address] = size
        fresh[key] = size
    if fresh:
        cache.set_many(fresh, CACHE_SECONDS)
    return sizes
