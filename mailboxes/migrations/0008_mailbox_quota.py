from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mailboxes", "0007_signature"),
    ]

    operations = [
        migrations.AddField(
            model_name="mailbox",
            name="quota_bytes",
            field=models.PositiveBigIntegerField(
                blank=True, null=True, verbose_name="quota (octets)"
            ),
        ),
    ]
