"""The action tally: a trigger on the actions table appends +1/-1 rows to ledger_actiontally
whenever an action is created, changes state (or any other counted column) or is deleted; the
existing actions are counted in the same transaction, after the trigger is in place and while
its creation keeps writers out, so that no action is counted twice or missed (see
apps/ledger/tallies.py)."""

from __future__ import annotations

from django.db import migrations, models

UP = """
CREATE FUNCTION ledger_action_tally() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'UPDATE' OR TG_OP = 'DELETE' THEN
    INSERT INTO ledger_actiontally
           (workflow_id, bucket, book_version_id, decision, status, n, compacted)
    VALUES (OLD.workflow_id,
            date_bin('15 minutes', OLD.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
            OLD.book_version_id, OLD.decision, OLD.status, -1, false);
  END IF;
  IF TG_OP = 'UPDATE' OR TG_OP = 'INSERT' THEN
    INSERT INTO ledger_actiontally
           (workflow_id, bucket, book_version_id, decision, status, n, compacted)
    VALUES (NEW.workflow_id,
            date_bin('15 minutes', NEW.created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
            NEW.book_version_id, NEW.decision, NEW.status, 1, false);
  END IF;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_action_tally_insert_delete
  AFTER INSERT OR DELETE ON actions_action
  FOR EACH ROW EXECUTE FUNCTION ledger_action_tally();
CREATE TRIGGER ledger_action_tally_update
  AFTER UPDATE ON actions_action
  FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status
        OR OLD.decision IS DISTINCT FROM NEW.decision
        OR OLD.workflow_id IS DISTINCT FROM NEW.workflow_id
        OR OLD.book_version_id IS DISTINCT FROM NEW.book_version_id
        OR OLD.created_at IS DISTINCT FROM NEW.created_at)
  EXECUTE FUNCTION ledger_action_tally();
INSERT INTO ledger_actiontally
       (workflow_id, bucket, book_version_id, decision, status, n, compacted)
SELECT workflow_id,
       date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       book_version_id, decision, status, count(*), true
  FROM actions_action
 GROUP BY 1, 2, 3, 4, 5;
"""
DOWN = """
DROP TRIGGER IF EXISTS ledger_action_tally_update ON actions_action;
DROP TRIGGER IF EXISTS ledger_action_tally_insert_delete ON actions_action;
DROP FUNCTION IF EXISTS ledger_action_tally();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0001_initial"),
        ("actions", "0003_callback_deliveries"),
    ]

    operations = [
        migrations.CreateModel(
            name="ActionTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("workflow_id", models.BigIntegerField()),
                (
                    "bucket",
                    models.DateTimeField(
                        help_text="the action's creation time, floored to 15 minutes"
                    ),
                ),
                ("book_version_id", models.BigIntegerField(null=True)),
                ("decision", models.CharField(max_length=8)),
                ("status", models.CharField(max_length=16)),
                ("n", models.IntegerField()),
                ("compacted", models.BooleanField(default=False)),
            ],
            options={
                "indexes": [
                    models.Index(fields=["workflow_id", "bucket"], name="ledger_tally_by_bucket"),
                    models.Index(
                        condition=models.Q(("compacted", False)),
                        fields=["workflow_id", "bucket"],
                        name="ledger_tally_fresh",
                    ),
                ]
            },
        ),
        migrations.RunSQL([UP], [DOWN]),
    ]
