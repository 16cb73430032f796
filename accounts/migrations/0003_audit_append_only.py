"""The audit trail is append-only in the database, not only in the application (issue 16).

On PostgreSQL a trigger refuses every UPDATE and DELETE of a trace, whoever sends it (the ORM,
the admin, a shell on the application's role), with two exceptions:

- the purge: ``accounts_audit_purge(cutoff, batch_size)`` (SECURITY DEFINER) deletes traces
  older than ``cutoff``; the trigger lets a DELETE through only when it comes from inside that
  function (its call stack, PG_CONTEXT) and only for traces older than one day, and the
  function refuses a cutoff younger than one day;
- ``ON DELETE SET NULL`` of the actor or the structure (a person or a structure deleted): only
  those two columns may change, and only to NULL; the actor's label stays in the trace.

SQLite (the embedded ``make run`` mode) has no such guard: the application's rules only.
"""

from django.db import migrations, models
import django.utils.timezone

TABLE = "accounts_auditevent"

GUARD = f"""
CREATE FUNCTION accounts_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stack text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (to_jsonb(NEW) - 'actor_id' - 'structure_id') = (to_jsonb(OLD) - 'actor_id' - 'structure_id')
           AND (NEW.actor_id IS NULL OR NEW.actor_id = OLD.actor_id)
           AND (NEW.structure_id IS NULL OR NEW.structure_id = OLD.structure_id) THEN
            RETURN NEW;  -- ON DELETE SET NULL of a person or a structure
        END IF;
    ELSE
        GET DIAGNOSTICS stack = PG_CONTEXT;
        IF stack LIKE '%PL/pgSQL function accounts_audit_purge(timestamp with time zone,integer) line %'
           AND OLD.occurred_at < now() - interval '1 day' THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit traces are append-only: % refused on {TABLE}', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Old traces go through accounts_audit_purge(cutoff, batch_size).';
END $$;

CREATE TRIGGER accounts_auditevent_append_only
    BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION accounts_audit_append_only();

CREATE FUNCTION accounts_audit_purge(cutoff timestamptz, batch_size integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    deleted integer;
BEGIN
    IF cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit traces younger than one day are never purged (cutoff %)', cutoff
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM {TABLE} WHERE id IN (
        SELECT id FROM {TABLE} WHERE occurred_at < cutoff ORDER BY occurred_at LIMIT batch_size
    );
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
"""

UNGUARD = f"""
DROP FUNCTION IF EXISTS accounts_audit_purge(timestamptz, integer);
DROP TRIGGER IF EXISTS accounts_auditevent_append_only ON {TABLE};
DROP FUNCTION IF EXISTS accounts_audit_append_only();
"""


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD, params=None)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_structure_recovery_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="occurred_at",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now),
        ),
        migrations.RunPython(guard, unguard),
    ]
