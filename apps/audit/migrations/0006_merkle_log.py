"""The audit trail becomes a Merkle log.

Events no longer form a hash chain behind one locked head row: each is written with a number
from a database sequence and the id of its transaction, and the sequencer takes committed events
into the log as leaves (`AuditLeaf`), keeps the hashes of perfect subtrees (`AuditNode`) and
signs checkpoints (`AuditCheckpoint`). Events already written are taken into the log, in their
order, the first time the sequencer runs; the chain's links are dropped with the head row.

Every table of the trail refuses UPDATE and DELETE of its rows and TRUNCATE (a statement
trigger): only a role that may disable triggers, which the application's role may not, can
remove anything, and the signed checkpoints kept outside the database show it."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models
from django.db.models.expressions import RawSQL

TRAIL = ("audit_auditevent", "audit_auditleaf", "audit_auditnode", "audit_auditcheckpoint")

SEQUENCE_UP = """
CREATE SEQUENCE audit_event_sequence OWNED BY audit_auditevent.sequence;
SELECT setval('audit_event_sequence', coalesce(max(sequence), 0) + 1, false) FROM audit_auditevent;
ALTER TABLE audit_auditevent ALTER COLUMN sequence SET DEFAULT nextval('audit_event_sequence');
"""
SEQUENCE_DOWN = """
ALTER TABLE audit_auditevent ALTER COLUMN sequence DROP DEFAULT;
DROP SEQUENCE audit_event_sequence;
"""

TRIGGERS_UP = """
CREATE OR REPLACE FUNCTION audit_trail_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
""" + "".join(
    f"""
DROP TRIGGER IF EXISTS audit_event_append_only ON {table};
CREATE TRIGGER {table}_rows_append_only
  BEFORE UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION audit_trail_append_only();
CREATE TRIGGER {table}_no_truncate
  BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_append_only();
"""
    for table in TRAIL
)
TRIGGERS_DOWN = (
    "".join(
        f"""
DROP TRIGGER IF EXISTS {table}_rows_append_only ON {table};
DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};
"""
        for table in TRAIL
    )
    + """
CREATE TRIGGER audit_event_append_only
  BEFORE UPDATE OR DELETE ON audit_auditevent
  FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
DROP FUNCTION IF EXISTS audit_trail_append_only();
"""
)


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_payload_canonical")]
    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(SEQUENCE_UP, SEQUENCE_DOWN)],
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="sequence",
                    field=models.BigIntegerField(
                        db_default=RawSQL("nextval('audit_event_sequence')", ()),
                        editable=False,
                        unique=True,
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="auditevent",
            name="writer_xid",
            field=models.BigIntegerField(
                db_default=RawSQL("pg_current_xact_id()::text::bigint", ()),
                db_index=True,
                editable=False,
            ),
        ),
        migrations.RemoveField(model_name="auditevent", name="previous_hash"),
        migrations.RemoveField(model_name="auditevent", name="hash"),
        migrations.DeleteModel(name="ChainHead"),
        migrations.CreateModel(
            name="AuditLeaf",
            fields=[
                ("index", models.BigIntegerField(primary_key=True, serialize=False)),
                ("hash", models.BinaryField(max_length=32)),
                (
                    "event",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="leaf",
                        to="audit.auditevent",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="AuditNode",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "level",
                        "index",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("level", models.SmallIntegerField()),
                ("index", models.BigIntegerField()),
                ("hash", models.BinaryField(max_length=32)),
            ],
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("size", models.BigIntegerField(unique=True)),
                ("root_hash", models.BinaryField(max_length=32)),
                ("note", models.TextField(help_text="the signed note, exactly as published")),
                ("created_at", models.DateTimeField()),
                ("frontier", models.JSONField(default=list)),
                ("xid_floor", models.BigIntegerField(default=0)),
            ],
            options={"ordering": ["-size"]},
        ),
        migrations.RunSQL(TRIGGERS_UP, TRIGGERS_DOWN),
    ]
