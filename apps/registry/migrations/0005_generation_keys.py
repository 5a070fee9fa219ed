"""The registry's generation moves with agent keys too (made, removed, revoked, re-scoped to
another agent), so that the gate may keep them between requests; not with `last_used_at`, which
is written once a minute per key in use."""

from __future__ import annotations

from django.db import migrations

UP = """
CREATE TRIGGER registry_agentkey_generation
  AFTER INSERT OR DELETE OR TRUNCATE ON registry_agentkey
  FOR EACH STATEMENT EXECUTE FUNCTION registry_generation_move();
CREATE TRIGGER registry_agentkey_changed_generation
  AFTER UPDATE OF agent_id, prefix, digest, expires_at, revoked_at ON registry_agentkey
  FOR EACH STATEMENT EXECUTE FUNCTION registry_generation_move();
"""
DOWN = """
DROP TRIGGER IF EXISTS registry_agentkey_generation ON registry_agentkey;
DROP TRIGGER IF EXISTS registry_agentkey_changed_generation ON registry_agentkey;
"""


class Migration(migrations.Migration):
    dependencies = [("registry", "0004_generation")]
    operations = [migrations.RunSQL(UP, DOWN)]
