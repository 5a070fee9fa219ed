"""The database itself refuses to change or delete a published (or superseded) book version;
only its retirement (status -> superseded, superseded_at) may still be written."""

from __future__ import annotations

from django.db import migrations

UP = """
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
DOWN = """
DROP TRIGGER IF EXISTS books_version_immutable ON books_bookversion;
DROP FUNCTION IF EXISTS books_version_immutable();
"""


class Migration(migrations.Migration):
    dependencies = [("books", "0001_initial")]
    operations = [migrations.RunSQL([UP], [DOWN])]
