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


def _inserted(model: type[models.Model]) -> tuple[list[models.Field], str, str]:
    """The fields a new row of ``model`` is written with (all but the primary key, left to
    the database), their quoted columns, and the quoted table."""
    quote = connection.ops.quote_name
    fields = [f for f in model._meta.local_concrete_fields if not f.primary_key]
    columns = ", ".join(quote(str(f.column)) for f in fields)
    return fields, columns, quote(model._meta.db_table)


def _values(instance: models.Model, fields: list[models.Field]) -> list[Any]:
    """Each value of a new ``instance`` as ``Model.save()`` prepares it (``pre_save`` defaults,
    ``get_db_prep_save`` adaptation: JSON, UUID, addresses, dates)."""
    return [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]


def insert_statement(instance: models.Model) -> tuple[str, list[Any]]:
    """``INSERT INTO <table> (<columns>) VALUES (<placeholders>)`` for a new ``instance``,
    and its parameters, each value prepared as ``Model.save()`` prepares it. The primary key
    is left to the database. Names and placeholders are ours; values go as parameters."""
    fields, columns, table = _inserted(type(instance))
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
    return sql, _values(instance, fields)


def copy_insert(instances: list[Any]) -> None:
    """Write new rows of one model in one ``COPY ... FROM STDIN`` on the current connection
    (in its transaction; PostgreSQL only), each row as ``insert_statement`` would write it.
    The instances get no primary key. Errors come out as Django's (DatabaseError)."""
    fields, columns, table = _inserted(type(instances[0]))
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for instance in instances:
            copy.write_row(_values(instance, fields))
