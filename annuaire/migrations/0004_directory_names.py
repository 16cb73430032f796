"""The distinct last names of the directory (DirectoryName), filled from the directory in force.
Each import rewrites the table. On PostgreSQL the primary key's own `varchar_pattern_ops` index
(Django's `_like` index) serves the prefix reads of the typo search."""

from django.db import migrations, models


def forwards(apps, schema_editor):
    names = schema_editor.quote_name(apps.get_model("annuaire", "DirectoryName")._meta.db_table)
    entries = schema_editor.quote_name(apps.get_model("annuaire", "DirectoryEntry")._meta.db_table)
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
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
