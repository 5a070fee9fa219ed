"""What the application's role may insert into the trail is what the trail would write itself:
an event's number and writing transaction are always the database's own (whatever the insert
says), its time must be finite and within ten minutes of the database's clock, and no leaf or
subtree may take a place outside the tree."""

from __future__ import annotations

from typing import Any

from django.db import migrations

UP = """
CREATE OR REPLACE FUNCTION audit_event_written() RETURNS trigger AS $$
BEGIN
  -- The column's default has just drawn the next number; any other number is refused one.
  IF NEW.sequence IS DISTINCT FROM pg_catalog.currval('{sequence}') THEN
    NEW.sequence := pg_catalog.nextval('{sequence}');
  END IF;
  NEW.writer_xid := pg_catalog.pg_current_xact_id()::text::bigint;
  IF NOT pg_catalog.isfinite(NEW.created_at)
     OR NEW.created_at < pg_catalog.clock_timestamp() - interval '10 minutes'
     OR NEW.created_at > pg_catalog.clock_timestamp() + interval '10 minutes' THEN
    RAISE EXCEPTION 'audit event time % is not now', NEW.created_at;
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql SET search_path = pg_catalog;
CREATE TRIGGER audit_auditevent_written
  BEFORE INSERT ON audit_auditevent
  FOR EACH ROW EXECUTE FUNCTION audit_event_written();
ALTER TABLE audit_auditleaf ADD CONSTRAINT audit_leaf_index_in_tree CHECK (index >= 0);
ALTER TABLE audit_auditnode ADD CONSTRAINT audit_node_in_tree CHECK (level >= 1 AND index >= 0);
ALTER TABLE audit_auditcheckpoint ADD CONSTRAINT audit_checkpoint_size CHECK (size >= 1);
"""
DOWN = """
DROP TRIGGER IF EXISTS audit_auditevent_written ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_event_written();
ALTER TABLE audit_auditleaf DROP CONSTRAINT IF EXISTS audit_leaf_index_in_tree;
ALTER TABLE audit_auditnode DROP CONSTRAINT IF EXISTS audit_node_in_tree;
ALTER TABLE audit_auditcheckpoint DROP CONSTRAINT IF EXISTS audit_checkpoint_size;
"""


def guards_install(apps: Any, schema_editor: Any) -> None:
    # The function resolves nothing through the search path (pg_catalog alone): the sequence
    # is named in its schema.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT pg_catalog.current_schema()")
        schema = cursor.fetchone()[0]
        sequence = schema_editor.quote_name(schema) + ".audit_event_sequence"
        cursor.execute(UP.replace("{sequence}", sequence))


def guards_remove(apps: Any, schema_editor: Any) -> None:
    schema_editor.execute(DOWN)


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_merkle_log")]
    operations = [migrations.RunPython(guards_install, guards_remove)]
