"""Search indexes of the directory. PostgreSQL: prefix indexes on `COLLATE "C"` expressions
(a prefix query reads its first rows in index order and stops; last name + first name in one
index, so "dupont jean" is answered from the index), trigram indexes (pg_trgm, a
trusted extension) on last names (typos) and on the structures' text (ORG/APP rows only); the
scratch table is UNLOGGED (rebuilt at every import). SQLite (embedded default): plain indexes."""

from django.db import migrations

PG = [
    ("CREATE EXTENSION IF NOT EXISTS pg_trgm", ""),
    (
        "CREATE INDEX annuaire_entry_name_prefix ON annuaire_directoryentry "
        "((name_norm COLLATE \"C\"), (given_norm COLLATE \"C\"))",
        "DROP INDEX IF EXISTS annuaire_entry_name_prefix",
    ),
    (
        "CREATE INDEX annuaire_entry_given_prefix ON annuaire_directoryentry "
        "((given_norm COLLATE \"C\"))",
        "DROP INDEX IF EXISTS annuaire_entry_given_prefix",
    ),
    (
        "CREATE INDEX annuaire_entry_address_prefix ON annuaire_directoryentry "
        "((address COLLATE \"C\"))",
        "DROP INDEX IF EXISTS annuaire_entry_address_prefix",
    ),
    (
        "CREATE INDEX annuaire_entry_search_trgm ON annuaire_directoryentry "
        "USING gin (search_norm gin_trgm_ops) WHERE bal_type <> 'PER'",
        "DROP INDEX IF EXISTS annuaire_entry_search_trgm",
    ),
    (
        "CREATE INDEX annuaire_entry_name_trgm ON annuaire_directoryentry "
        "USING gin (name_norm gin_trgm_ops)",
        "DROP INDEX IF EXISTS annuaire_entry_name_trgm",
    ),
    ("ALTER TABLE annuaire_directorystaging SET UNLOGGED", "ALTER TABLE annuaire_directorystaging SET LOGGED"),
]
SQLITE = [
    (
        "CREATE INDEX annuaire_entry_name_prefix ON annuaire_directoryentry (name_norm)",
        "DROP INDEX IF EXISTS annuaire_entry_name_prefix",
    ),
    (
        "CREATE INDEX annuaire_entry_given_prefix ON annuaire_directoryentry (given_norm)",
        "DROP INDEX IF EXISTS annuaire_entry_given_prefix",
    ),
    (
        "CREATE INDEX annuaire_staging_address ON annuaire_directorystaging (address)",
        "DROP INDEX IF EXISTS annuaire_staging_address",
    ),
]


def forwards(apps, schema_editor):
    statements = PG if schema_editor.connection.vendor == "postgresql" else SQLITE
    for sql, _reverse in statements:
        schema_editor.execute(sql)


def backwards(apps, schema_editor):
    statements = PG if schema_editor.connection.vendor == "postgresql" else SQLITE
    for _sql, reverse in reversed(statements):
        if reverse:
            schema_editor.execute(reverse)


class Migration(migrations.Migration):
    dependencies = [("annuaire", "0002_directory")]
    operations = [migrations.RunPython(forwards, backwards)]
