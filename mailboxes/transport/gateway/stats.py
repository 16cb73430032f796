"""What the gateway's sessions did, for the operator's metrics (/sante/metriques): sessions
admitted and refused, TLS handshakes that failed, and every SMTP reply by code — refusals at
connection, MAIL and RCPT included, which leave no trace in the journal.

Counted in memory by each gateway process (a dict increment per reply, nothing on the wire),
added to shared counters in the cache (Redis in production: INCRBY is atomic across processes
and hosts) every ``FLUSH_SECONDS`` and when the process drains. A process killed between two
flushes loses at most those seconds of counts; the mail itself is never concerned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from django.core.cache import cache

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0
PREFIX = "mssante:gateway:"
SESSION_OUTCOMES = ("admises", "refusees", "tls_echec")
# The replies the gateway and aiosmtpd send (RFC 5321 §4.2.3); anything else counts as "autre".
CODES = (
    "211", "214", "220", "221", "250", "252", "354", "421", "450", "451", "452", "454",
    "500", "501", "502", "503", "504", "521", "530", "550", "552", "553", "554", "555",
)  # fmt: skip
KEYS = [f"{PREFIX}sessions:{o}" for o in SESSION_OUTCOMES] + [
    f"{PREFIX}replies:{c}" for c in (*CODES, "autre")
]

_pending: Counter[str] = Counter()


def session(outcome: str) -> None:
    _pending[f"{PREFIX}sessions:{outcome}"] += 1


def reply(status: str | bytes) -> None:
    code = status[:3].decode("ascii", "replace") if isinstance(status, bytes) else status[:3]
    _pending[f"{PREFIX}replies:{code if code in CODES else 'autre'}"] += 1


def flush() -> None:
    """Add the counts of this process to the shared counters (blocking: call it off the
    event loop). Counts that could not be written are kept for the next flush."""
    taken = dict(_pending)
    _pending.clear()
    try:
        for key, count in taken.items():
            cache.add(key, 0, timeout=None)
            cache.incr(key, count)
    except Exception:  # the cache is down: keep the counts, try again at the next flush
        _pending.update(taken)
        logger.warning("gateway counters not flushed; kept for the next flush", exc_info=True)


async def flush_every(stop: asyncio.Event, seconds: float = FLUSH_SECONDS) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        await loop.run_in_executor(None, flush)


def totals() -> dict[str, int]:
    """The shared counters, by key (0 for what was never counted)."""
    found = cache.get_many(KEYS)
    return {key: int(found.get(key) or 0) for key in KEYS}
