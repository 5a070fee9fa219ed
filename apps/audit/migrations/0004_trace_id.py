"""Each audit event keeps the trace id of the request or task that wrote it.

Adding the column writes no row, so the append-only trigger is never tripped: PostgreSQL adds a
column with a constant default without touching the rows (and keeps the trigger). SQLite cannot
add a NOT NULL column in place, so Django rebuilds the table (copy the rows into a new table,
drop the old one, rename): the triggers go with the old table, and are installed again on the
new one here, in both directions."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

SQLITE_TRIGGERS = [
    "DROP TRIGGER IF EXISTS audit_event_no_update",
    "DROP TRIGGER IF EXISTS audit_event_no_delete",
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_auditevent
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_auditevent
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE refused'); END;""",
]


def sqlite_triggers_install(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_append_only")]
    operations = [
        # (Reversed last: where SQLite is too old to drop a column in place, the table is rebuilt
        # again without it, and needs its triggers back.)
        migrations.RunPython(migrations.RunPython.noop, sqlite_triggers_install),
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
        migrations.RunPython(sqlite_triggers_install, migrations.RunPython.noop),
    ]
