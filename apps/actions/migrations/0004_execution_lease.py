from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0003_callback_deliveries"),
    ]

    operations = [
        migrations.AddField(
            model_name="action",
            name="lease_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="action",
            name="resent_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
