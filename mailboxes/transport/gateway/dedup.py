"""A message the gateway already delivered is not delivered again, and a different message is
never taken for it (a 250 is a promise).

An operator that lost our 250 (its worker killed after we answered, a connection cut after
the reply) sends the same message again. A resend is the same message: the same Message-ID
(its header's, whole), the same envelope sender, the same text (a SHA-256 of it as received)
from the same peer (its certificate's DN); ``resend_key`` makes one digest of the four.
Anything else is delivered, a message without a Message-ID always. Two records tell what an
earlier transaction of the same key did:

- our success trace (``gateway.received``, the key in its details), committed before the 250
  leaves: its recipients have the message, they are answered 250 again without a second copy;
- the attempt marker (``GatewayAttempt``), written before the message goes to Dovecot: a
  recipient of an attempt that no success trace covers may or may not have it (our gateway
  was killed after Dovecot stored the message but before the trace committed; Dovecot died
  after storing but before answering and we said 451). Only those pay a look in their INBOX
  (mailboxes.store.imap.inboxes_holding: the namesakes of the Message-ID, each compared with
  this text and sender) before delivering.

Dovecot's Sieve duplicate test (RFC 7352) is not used: its per-BAL database is rewritten under
a lock at each delivery, which delays deliveries under load, and it does not survive Dovecot's
own kill.

The marker and the check are one statement and one round trip on PostgreSQL, committed
without waiting for the WAL flush (like the trace): a database crash may lose the last
fraction of a second of markers, a gateway crash loses none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from accounts.audit import Action, TargetType
from accounts.models import AuditEvent
from mailboxes.models import GatewayAttempt
from mailboxes.store.imap import inboxes_holding

# The action of the gateway's per-transaction trace (plain text: it goes into SQL below).
TRACE_ACTION = Action.GATEWAY_RECEIVED.value
KEY = "resend_key"  # where the trace's details keep the key
WINDOW = timedelta(days=7)  # an SMTP sender retries for at most 5 days (RFC 5321 §4.5.4.1)
ATTEMPT = "attempt"  # the "result" of a marker row in the check's answer

Row = tuple[str, Any]  # result (success, failure or ATTEMPT), recipients


def resend_key(*, message_id: str, sender: str, peer: str, content: bytes) -> str:
    """What a resend has in common with the first transaction, as one SHA-256 (hex): the
    Message-ID (the header's, whole), the envelope sender, the peer certificate's DN and the
    message text as received (bare LF line ends made CRLF, as it is delivered). "" without a
    Message-ID: such a message is never a resend. SHA-256 is OpenSSL's, with the CPU's SHA
    instructions where there are: ~0.7 ms per MB here, faster than BLAKE2b."""
    if not message_id:
        return ""
    digest = hashlib.sha256(json.dumps([message_id, sender, peer]).encode())  # self-delimiting
    digest.update(content)
    return digest.hexdigest()


def delivery_start(
    *, key: str, message_id: str, recipients: list[str], sender: str, content: bytes
) -> set[str]:
    """Record that the gateway is about to deliver ``content`` (``key`` from ``resend_key``,
    ``message_id`` and ``sender`` its parts) to ``recipients`` and return those of them that
    already have it: named by a successful earlier transaction of the same key, or found in
    their INBOX after an attempt of the same key that ended without one. Empty, and nothing
    recorded, without a key (no Message-ID: nothing to recognise the message by). Raises
    DatabaseError when the check cannot be made (the caller answers 451)."""
    if not key:
        return set()
    wanted = sorted({r.lower() for r in recipients})
    found: set[str] = set()
    maybe: set[str] = set()
    for result, named in _earlier_and_mark(key, message_id[:128], wanted):
        addresses = {str(a).lower() for a in _as_list(named)}.intersection(wanted)
        if result == AuditEvent.Result.SUCCESS:
            found |= addresses
        elif result == ATTEMPT:
            maybe |= addresses
    maybe -= found
    if maybe:
        found |= inboxes_holding(maybe, sender=sender, content=content)
    return found


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):  # jsonb read as text (Django's psycopg loaders)
        value = json.loads(value)
    return value if isinstance(value, list) else []


def _earlier_and_mark(key: str, message_id: str, recipients: list[str]) -> Iterable[Row]:
    conn = connections[DEFAULT_DB_ALIAS]
    if (
        conn.vendor == "postgresql"
        and not conn.settings_dict["OPTIONS"].get("server_side_binding")
        and conn.get_autocommit()
    ):
        return _earlier_and_mark_pg(key, message_id, recipients)
    since = timezone.now() - WINDOW
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        rows: list[Row] = [
            (result, (details or {}).get("to"))
            for result, details in AuditEvent.objects.filter(
                target_type=TargetType.MESSAGE,
                target_id=message_id,
                action=TRACE_ACTION,
                occurred_at__gte=since,
                **{f"details__{KEY}": key},
            ).values_list("result", "details")
        ]
        rows += [
            (ATTEMPT, named)
            for named in GatewayAttempt.objects.filter(
                resend_key=key, started_at__gte=since
            ).values_list("recipients", flat=True)
        ]
        GatewayAttempt.objects.create(
            message_id=message_id, resend_key=key, recipients=recipients, started_at=timezone.now()
        )
    return rows


def _earlier_and_mark_pg(key: str, message_id: str, recipients: list[str]) -> list[Row]:
    """One simple-protocol query: the marker INSERT (a data-modifying CTE runs whether or not
    it is read), the earlier traces and markers of the key (the statement's snapshot does not
    see its own insert), then ``SET LOCAL`` for the implicit transaction the server wraps them
    in. The traces are found by their indexed target (the Message-ID's first 128 characters),
    then their key; the window is computed by the server: a datetime parameter costs
    client-side conversion."""
    return hot_query(_pg_sql(), [message_id, key, json.dumps(recipients), message_id, key, key])


def hot_query(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """One simple-protocol query (several statements allowed) on this thread's connection,
    through psycopg's cursor directly: Django's cursor wrapper and its connection proxy cost
    more than the query's own client side, twice per message on the gateway. Database errors
    come out as Django's (DatabaseError), as from any query; the rows of the first statement,
    if it returns any."""
    conn = connections[DEFAULT_DB_ALIAS]
    conn.ensure_connection()
    with conn.wrap_database_errors, conn.connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


_SQL: str | None = None


def _pg_sql() -> str:
    global _SQL
    if _SQL is None:
        audit, attempts = AuditEvent._meta.db_table, GatewayAttempt._meta.db_table
        days = WINDOW.days  # names and constants of ours only; values go as parameters
        _SQL = (
            f"WITH mark AS (INSERT INTO {attempts} (message_id, resend_key, recipients,"  # noqa: S608
            " started_at) VALUES (%s, %s, %s::jsonb, now()) RETURNING 1)"
            f" SELECT result, details->'to' FROM {audit}"
            f" WHERE target_type = '{TargetType.MESSAGE.value}' AND target_id = %s"
            f" AND action = '{TRACE_ACTION}' AND details->>'{KEY}' = %s"
            f" AND occurred_at >= now() - interval '{days} days'"
            f" UNION ALL SELECT '{ATTEMPT}', recipients FROM {attempts}"
            f" WHERE resend_key = %s AND started_at >= now() - interval '{days} days';"
            " SET LOCAL synchronous_commit TO OFF"
        )
    return _SQL


def attempts_purge(batch: int = 5000) -> int:
    """Delete the markers older than WINDOW, in batches; returns how many went."""
    cutoff = timezone.now() - WINDOW
    removed = 0
    while True:
        ids = list(
            GatewayAttempt.objects.filter(started_at__lt=cutoff).values_list("pk", flat=True)[
                :batch
            ]
        )
        if not ids:
            return removed
        removed += GatewayAttempt.objects.filter(pk__in=ids).delete()[0]
