"""Raw SQL for the few hot paths that send several writes in one statement (a data-modifying
CTE on PostgreSQL): the ORM's row, built here as the ORM would send it."""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
from django.db import connection, models


def column(model: type[models.Model], name: str) -> str:
    """The quoted column of the field ``name`` of ``model`` (a foreign key's ``<name>_id``)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return connection.ops.quote_name(str(field.column))


def insert_statement(instance: models.Model) -> tuple[str, list[Any]]:
    """``INSERT INTO <table> (<columns>) VALUES (<placeholders>)`` for a new ``instance``,
    and its parameters, each value prepared as ``Model.save()`` prepares it (``pre_save``
    defaults, ``get_db_prep_save`` adaptation: JSON, UUID, addresses, dates). The primary key
    is left to the database. Names and placeholders are ours; values go as parameters."""
    quote = connection.ops.quote_name
    fields = [f for f in instance._meta.local_concrete_fields if not f.primary_key]
    columns = ", ".join(quote(str(f.column)) for f in fields)
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    placeholders = ", ".join(["%s"] * len(fields))
    table = quote(instance._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", params  # noqa: S608


# Django's connections (the psycopg ones) that unsynced_query turned to asynchronous commit.
_unsynced: weakref.WeakSet[Any] = weakref.WeakSet()


def unsynced_query(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """One statement, in autocommit, on this thread's connection, prepared by the server at
    its first use (parsing and planning were half of PostgreSQL's work for the gateway's
    trace and marker), committed without waiting for the WAL flush: the session is set to
    ``synchronous_commit = off`` at its first call. For journal rows of which a database
    crash may lose the last fraction of a second, never for anything a reply promises: the
    spool restores the wait in its own transactions (``durable``). PostgreSQL only; its
    rows, if it returns any; database errors come out as Django's."""
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = connection.connection
        assert raw is not None
        if raw not in _unsynced:
            raw.execute("SET synchronous_commit TO OFF")
            _unsynced.add(raw)
        # Django's cursors bind on the client side (no prepared statements): psycopg's own
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchall() if cursor.description else []


def durable() -> None:
    """Make the current transaction wait for the WAL flush at commit, also on a connection
    ``unsynced_query`` turned to asynchronous commit (call it inside the atomic block of
    anything a 250 promises: mailboxes.transport.relay.message_spool)."""
    raw = connection.connection
    if connection.vendor == "postgresql" and raw is not None and raw in _unsynced:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO ON")
