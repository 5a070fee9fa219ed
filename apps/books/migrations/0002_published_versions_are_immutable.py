"""The database itself refuses to change or delete a published (or superseded) book version;
only its retirement (status -> superseded, superseded_at) may still be written."""

from __future__ import annotations

from typing import Any

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION books_version_immutable() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.status <> 'draft' THEN
      RAISE EXCEPTION 'book version % is % and cannot be deleted', OLD.id, OLD.status;
    END IF;
    RETURN OLD;
  END IF;
  IF OLD.status <> 'draft' AND (
       (to_jsonb(NEW) - 'status' - 'superseded_at') IS DISTINCT FROM
       (to_jsonb(OLD) - 'status' - 'superseded_at')
       OR NOT (NEW.status = OLD.status OR (OLD.status = 'published' AND NEW.status = 'superseded'))
  ) THEN
    RAISE EXCEPTION 'book version % is % and cannot be changed', OLD.id, OLD.status;
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER books_version_immutable
  BEFORE UPDATE OR DELETE ON books_bookversion
  FOR EACH ROW EXECUTE FUNCTION books_version_immutable();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS books_version_immutable ON books_bookversion;
DROP FUNCTION IF EXISTS books_version_immutable();
"""

# SQLite has no row-to-JSON: list the content columns, which is every column but these.
SQLITE_MUTABLE = {"status", "superseded_at"}


def _sqlite_statements(columns: list[str]) -> list[str]:
    changed = " OR ".join(
        f"NEW.{name} IS NOT OLD.{name}" for name in columns if name not in SQLITE_MUTABLE
    )
    return [
        f"""CREATE TRIGGER books_version_immutable_update BEFORE UPDATE ON books_bookversion
        WHEN OLD.status <> 'draft' AND (({changed})
          OR NOT (NEW.status = OLD.status OR (OLD.status = 'published' AND NEW.status = 'superseded')))
        BEGIN SELECT RAISE(ABORT, 'a published book version cannot be changed'); END;""",
        """CREATE TRIGGER books_version_immutable_delete BEFORE DELETE ON books_bookversion
        WHEN OLD.status <> 'draft'
        BEGIN SELECT RAISE(ABORT, 'a published book version cannot be deleted'); END;""",
    ]


def install(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, params=None)
    elif connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            columns = [
                column.name
                for column in connection.introspection.get_table_description(
                    cursor, "books_bookversion"
                )
            ]
        for statement in _sqlite_statements(columns):
            schema_editor.execute(statement)


def remove(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN, params=None)
    elif connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS books_version_immutable_update")
        schema_editor.execute("DROP TRIGGER IF EXISTS books_version_immutable_delete")


class Migration(migrations.Migration):
    dependencies = [("books", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
