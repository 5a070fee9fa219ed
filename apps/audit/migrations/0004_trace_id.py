"""Each audit event keeps the trace id of the request or task that wrote it.

Adding the column writes no row, so the append-only trigger is never tripped: PostgreSQL adds a
column with a constant default without touching the rows (and keeps the trigger)."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_append_only")]
    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="trace_id",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=~models.Q(trace_id=""),
                fields=["trace_id", "sequence"],
                name="audit_event_trace",
            ),
        ),
    ]
