"""The distinct last names of the directory (DirectoryName), filled from the directory in force;
on PostgreSQL an index on `name COLLATE "C"` so that a prefix reads them in index order, like
the directory's own prefix indexes (migration 0003). Each import rewrites the table."""

from django.db import migrations, models


def forwards(apps, schema_editor):
    names = schema_editor.quote_name(apps.get_model("annuaire", "DirectoryName")._meta.db_table)
    entries = schema_editor.quote_name(apps.get_model("annuaire", "DirectoryEntry")._meta.db_table)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f'CREATE INDEX annuaire_name_prefix ON {names} ((name COLLATE "C"))'
        )
    schema_editor.execute(
        f"INSERT INTO {names} (name) SELECT DISTINCT name_norm FROM {entries} "
        "WHERE name_norm <> ''"
    )


class Migration(migrations.Migration):
    dependencies = [("annuaire", "0003_directory_search_indexes")]
    operations = [
        migrations.CreateModel(
            name="DirectoryName",
            fields=[
                ("name", models.CharField(max_length=500, primary_key=True, serialize=False)),
            ],
            options={
                "verbose_name": "nom de l'annuaire",
                "verbose_name_plural": "noms de l'annuaire",
            },
        ),
        # Dropping the table (backwards) drops its index too.
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
