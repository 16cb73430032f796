"""Raw SQL for the few hot paths that send several writes in one statement (a data-modifying
CTE on PostgreSQL): the ORM's row, built here as the ORM would send it."""

from __future__ import annotations

from typing import Any

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
