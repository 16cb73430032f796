"""Two indexes fewer on the traces (written at every message by the gateway and the relay):
the actor's own index (audit_actor_time serves the foreign key) and the pair Django's
db_index made for ``action`` on PostgreSQL (a plain one and a ``_like`` one), replaced by one
varchar_pattern_ops index that serves both = and LIKE 'prefix%'.

The journal of a running operator is large: on PostgreSQL the indexes are built and dropped
CONCURRENTLY (no lock on the writers, hence atomic = False), and the foreign key is left as
it is (Django's AlterField would drop it and validate it again over the whole table)."""

from django.conf import settings
from django.db import migrations, models

TABLE = "accounts_auditevent"
OLD = ("accounts_auditevent_action_6dc29885", "accounts_auditevent_action_6dc29885_like",
       "accounts_auditevent_actor_id_179eee89")  # fmt: skip


def _drop_if_invalid(schema_editor, name):
    """A CREATE INDEX CONCURRENTLY that failed or was cancelled leaves an INVALID index, which
    IF NOT EXISTS would then take for done: drop it first (PostgreSQL)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = %s AND NOT i.indisvalid",
            [name],
        )
        if cursor.fetchone():
            schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


def forwards(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    concurrently = "CONCURRENTLY " if postgresql else ""
    opclass = " varchar_pattern_ops" if postgresql else ""
    if postgresql:
        _drop_if_invalid(schema_editor, "audit_action")
    schema_editor.execute(
        f'CREATE INDEX {concurrently}IF NOT EXISTS "audit_action" ON "{TABLE}" ("action"{opclass})'
    )
    for name in OLD:
        schema_editor.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')


def backwards(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    concurrently = "CONCURRENTLY " if postgresql else ""
    columns = [("action", ""), ("action", " varchar_pattern_ops"), ("actor_id", "")]
    for name, (column, opclass) in zip(OLD, columns, strict=True):
        if opclass and not postgresql:
            continue
        if postgresql:
            _drop_if_invalid(schema_editor, name)
        schema_editor.execute(
            f'CREATE INDEX {concurrently}IF NOT EXISTS "{name}" ON "{TABLE}" ("{column}"{opclass})'
        )
    schema_editor.execute(f'DROP INDEX {concurrently}IF EXISTS "audit_action"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0005_structure_facility_type"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="action",
                    field=models.CharField(max_length=64),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="actor",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AddIndex(
                    model_name="auditevent",
                    index=models.Index(
                        fields=["action"], name="audit_action", opclasses=["varchar_pattern_ops"]
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
