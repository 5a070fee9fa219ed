"""The registry's generation: a value that moves on every change to what the gate reads of the
registry (apps/registry/snapshot.py), moved by statement triggers on those tables."""

from __future__ import annotations

from django.db import migrations, models

WATCHED = (
    "registry_agent",
    "registry_agent_workflows",
    "registry_agent_tools",
    "registry_agentkey_workflows",
    "registry_tool",
    "registry_workflow",
    "books_bookversion",
)

# (constant text: the names in WATCHED, no input)
_FUNCTION = """
CREATE SEQUENCE registry_generation_sequence;
CREATE OR REPLACE FUNCTION registry_generation_move() RETURNS trigger AS $$
BEGIN
  INSERT INTO registry_registrygeneration (id, value)
  VALUES (1, nextval('registry_generation_sequence'))
  ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""
_TRIGGER = """
CREATE TRIGGER {table}_generation
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION registry_generation_move();
"""
UP = _FUNCTION + "".join(_TRIGGER.format(table=table) for table in WATCHED)
DOWN = "".join(f"DROP TRIGGER IF EXISTS {table}_generation ON {table};\n" for table in WATCHED) + (
    "DROP FUNCTION IF EXISTS registry_generation_move();\n"
    "DROP SEQUENCE IF EXISTS registry_generation_sequence;\n"
)


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0003_tool_credential"),
        ("books", "0002_published_versions_are_immutable"),
    ]
    operations = [
        migrations.CreateModel(
            name="RegistryGeneration",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("value", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunSQL(UP, DOWN),
    ]
