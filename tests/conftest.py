"""Test-session infrastructure shared by every test package."""

from __future__ import annotations

import os
from typing import Any

import pytest

# The Playwright sync API runs an event loop in the test thread (platform-notes §7).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, never a downloaded browser (`playwright install` is not used)."""
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(autouse=True)
def _fresh_recipient_verdicts() -> Any:
    """Recipient verdicts are cached per process (the annuaire's for 30 s, the gateway's for
    RECIPIENT_TTL): each test starts without them."""
    from annuaire.selectors import recipient_cache_clear
    from mailboxes.transport.gateway.policy import recipient_verdicts_forget

    recipient_cache_clear()
    recipient_verdicts_forget()
    yield
    recipient_cache_clear()
    recipient_verdicts_forget()


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Any:
    """Rate-limit counters live in the cache (per user and per address, and every test client
    is 127.0.0.1): each test starts with none, so that one test never spends another's."""
    from django.core.cache import cache

    cache.clear()
    yield
