"""The audit table is append-only: the database refuses UPDATE and DELETE of its rows.

(TRUNCATE, which only the database owner can run, is not a row change and is not refused; the
hash chain still shows it, as every later verification finds the chain's start missing.)"""

from __future__ import annotations

from django.db import migrations

UP = """
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the audit trail is append-only: % of event % refused', TG_OP, OLD.sequence;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_event_append_only
  BEFORE UPDATE OR DELETE ON audit_auditevent
  FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""
DOWN = """
DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_event_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_chain_head")]
    operations = [migrations.RunSQL([UP], [DOWN])]
