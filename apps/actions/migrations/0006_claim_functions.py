"""The claim as two database functions on PostgreSQL: the look before the claim, and the claim.

A worker's claim (apps/actions/execution.py) used to send its statements as text each time, and
PostgreSQL planned them each time: of a refused claim's 1.9 ms, about 1 ms was planning. Inside
a PL/pgSQL function a statement is planned once per connection and its plan kept. Both functions
are VOLATILE, so each statement in them reads with a snapshot of its own, taken when it starts:
the statement after the fence sees every switch committed before the fence was granted
(apps/killswitches/coverage.py). The fence's key is FENCE_KEY there.

- `actions_claim_look(id)`: the action's status and whether an engaged switch covers it, behind
  the fence, nothing written. Called outside a transaction, it is one statement and one
  implicit transaction, which holds the fence to its end.
- `actions_claim(id, now, margin)`: behind the fence, queued -> running when the action is
  queued and no engaged switch covers it, with the start time and the lease; says what it found
  (the status, whether a switch covers it) and whether it moved it. The UPDATE re-checks the
  status on the row's newest version if another claim or a drain changed it meanwhile, so of two
  claims only one moves it."""

from __future__ import annotations

from django.db import migrations

# The rows the look and the claim read: the action, the slugs its switches are engaged on, its
# tool's timeout, and whether an engaged switch covers it.
TARGET = """
SELECT a.id, a.status, t.timeout_seconds,
       EXISTS (
           SELECT 1 FROM killswitches_killswitch k
           WHERE k.released_at IS NULL
             AND (k.scope = 'global'
                  OR (k.scope = 'workflow' AND k.target = w.slug)
                  OR (k.scope = 'agent' AND k.target = g.slug)
                  OR (k.scope = 'tool' AND k.target = t.slug))
       ) AS switched
FROM actions_action a
JOIN registry_workflow w ON w.id = a.workflow_id
JOIN registry_agent g ON g.id = a.agent_id
JOIN registry_tool t ON t.id = a.tool_id
WHERE a.id = p_id
"""

UP = f"""
CREATE OR REPLACE FUNCTION actions_claim_look(p_id uuid)
RETURNS TABLE (found_status text, covered boolean) AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(5424951116843927892);
  RETURN QUERY
    WITH target AS ({TARGET})
    SELECT target.status::text, target.switched FROM target;
END;
$$ LANGUAGE plpgsql VOLATILE;

CREATE OR REPLACE FUNCTION actions_claim(p_id uuid, p_now timestamptz, p_margin double precision)
RETURNS TABLE (found_status text, covered boolean, claimed boolean) AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(5424951116843927892);
  RETURN QUERY
    WITH target AS ({TARGET}), moved AS (
        UPDATE actions_action a
        SET status = 'running', updated_at = p_now, started_at = now(),
            lease_expires_at = now() + make_interval(secs => target.timeout_seconds + p_margin)
        FROM target
        WHERE a.id = p_id AND a.status = 'queued' AND NOT target.switched
        RETURNING a.id
    )
    SELECT target.status::text, target.switched, EXISTS (SELECT 1 FROM moved) FROM target;
END;
$$ LANGUAGE plpgsql VOLATILE;
"""  # noqa: S608 (constant text: TARGET above, no input)
DOWN = """
DROP FUNCTION IF EXISTS actions_claim(uuid, timestamptz, double precision);
DROP FUNCTION IF EXISTS actions_claim_look(uuid);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0005_workflow_time_index"),
        ("killswitches", "0002_drains_rollbacks_quarantine"),
        ("registry", "0002_agent_callbacks"),
    ]
    operations = [migrations.RunSQL([UP], [DOWN])]
