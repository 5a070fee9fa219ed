"""Each audit event keeps its payload exactly as digested (canonical JSON), so that the chain can
be verified inside PostgreSQL.

The column is nullable and has no default: PostgreSQL adds it in place, writing no row, so the
append-only trigger is neither tripped nor dropped. Events written before it have none; their
digests are recomputed from the payload in Python."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_trace_id")]
    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="payload_canonical",
            field=models.TextField(blank=True, editable=False, null=True),
        ),
    ]
