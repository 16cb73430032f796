"""A delivery row has no public_id: it never appears in a URL (its message does), and the
unique index took an entry at each of the two row versions per recipient (claim, outcome).

Reversible on a filled table: going back adds the column nullable, gives each row its own
UUID, then makes it unique and required again (AddField alone would give every row the same
default, computed once, and the unique index would fail)."""

import uuid

from django.db import migrations, models


def fill_public_ids(apps, schema_editor):
    Delivery = apps.get_model("mailboxes", "OutboundDelivery")
    batch = []
    for pk in Delivery.objects.filter(public_id__isnull=True).values_list("pk", flat=True).iterator():
        batch.append(Delivery(pk=pk, public_id=uuid.uuid4()))
        if len(batch) == 1000:
            Delivery.objects.bulk_update(batch, ["public_id"])
            batch = []
    Delivery.objects.bulk_update(batch, ["public_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("mailboxes", "0016_app_certificates"),
    ]

    operations = [
        migrations.AlterField(
            model_name="outbounddelivery",
            name="public_id",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(migrations.RunPython.noop, fill_public_ids),
        migrations.RemoveField(
            model_name="outbounddelivery",
            name="public_id",
        ),
    ]
