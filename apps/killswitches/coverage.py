"""Which actions a kill switch covers, and the fence between engaging a switch and claiming an
action: one predicate for every place that asks (the gate, the worker's claim, the requeue
sweep, drains, rollbacks, the proof), and its one copy in SQL, the claim's database functions
(apps/actions/migrations/0006_claim_functions.py), which a test holds equal to it.

A switch covers an action when it is engaged (`released_at` empty) and its scope is global, or
names the action's workflow, agent or tool by slug.

The fence.

The guarantee (PRODUCT.md 3E.2): no action starts running after a switch covering it is
engaged. A worker claims an action with one conditional UPDATE (queued -> running, WHERE no
engaged switch covers it). On its own, under READ COMMITTED, that statement is not enough:

- its snapshot is taken when the statement starts, so a switch committed a moment later, while
  the UPDATE waits on the action's row lock (another worker's claim, a drain), is not seen when
  PostgreSQL re-checks the row after the lock is released (it re-reads the row, not the
  sub-select on the switches);
- and `started_at` and `engaged_at` are stamped before the two transactions commit, so a claim
  that never saw the switch could still carry a start time after the engage time.

So every claim and every engage pass through one PostgreSQL advisory lock, held until the end
of their transactions: claims take it shared (they never wait for each other), an engage takes
it exclusive. Then:

1. An engage waits until every claim already holding the lock has committed, and only then
   reads the clock for `engaged_at`: every action claimed before it has `started_at` earlier.
2. A claim that takes the lock after an engage got it waits until the engage has committed;
   its UPDATE is a separate, later statement, so its snapshot contains the switch and the
   claim is refused. (PostgreSQL also queues a shared request behind an exclusive one already
   waiting, so a stream of claims cannot keep an engage waiting.)

The claim is a database function that takes the fence and then runs its UPDATE as a later
statement (apps/actions/migrations/0006_claim_functions.py). Before it claims, a worker looks
(apps/actions/execution.py): the same reading of the status and the switches, behind the fence
too, writing nothing. A look only ever refuses (refusing is always safe); whatever it lets
through is checked again by the claim. It takes the fence so that a look arriving during an
engage waits there and refuses as soon as the switch commits.

`started_at` (the claim transaction's start, `now()`) and `engaged_at` (the statement time of
the INSERT, after the fence was granted) both come from the database's clock, so no host's
clock enters the comparison."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q

from apps.killswitches.models import KillSwitch, Scope

# The action's field that each scope names, by slug.
SCOPE_FIELDS = {Scope.WORKFLOW: "workflow", Scope.AGENT: "agent", Scope.TOOL: "tool"}

# An arbitrary 64-bit key, the same in every process: "kill switches" for the advisory lock.
# The claim's database functions take it with this number written out in decimal
# (apps/actions/migrations/0006_claim_functions.py); tests/killswitches/test_coverage.py holds
# the two equal.
FENCE_KEY = 0x4B494C4C_53574954


def covering(*, workflow: Any, agent: Any, tool: Any) -> Q:
    """Engaged switches (a filter on KillSwitch) that cover an action of this workflow, agent
    and tool: slugs, or OuterRef expressions naming them in an outer query on actions."""
    return Q(released_at__isnull=True) & (
        Q(scope=Scope.GLOBAL)
        | Q(scope=Scope.WORKFLOW, target=workflow)
        | Q(scope=Scope.AGENT, target=agent)
        | Q(scope=Scope.TOOL, target=tool)
    )


# The same predicate written out, for a statement composed by hand (the gate's allow path,
# apps/actions/allow_path.py): a row for each engaged switch covering an action of the
# workflow, agent and tool given as its three parameters, in that order, by slug.
COVERING_SQL = (
    "SELECT 1 FROM killswitches_killswitch k WHERE k.released_at IS NULL"
    " AND (k.scope = 'global' OR (k.scope = 'workflow' AND k.target = %s)"
    " OR (k.scope = 'agent' AND k.target = %s) OR (k.scope = 'tool' AND k.target = %s))"
)


def switch_engaged_over(prefix: str = "") -> Exists:
    """An engaged switch covers the action of the outer query (a WHERE on actions, or on rows
    that point at an action through `prefix`, e.g. "action__")."""
    return Exists(
        KillSwitch.objects.filter(
            covering(
                workflow=OuterRef(f"{prefix}workflow__slug"),
                agent=OuterRef(f"{prefix}agent__slug"),
                tool=OuterRef(f"{prefix}tool__slug"),
            )
        )
    )


def in_scope(scope: str, target: str, prefix: str = "") -> Q:
    """Actions (or rows pointing at an action through `prefix`, e.g. "action__") that a
    switch of this scope and target covers, engaged or not."""
    if scope == Scope.GLOBAL:
        return Q()
    return Q(**{f"{prefix}{SCOPE_FIELDS[Scope(scope)]}__slug": target})


def fence_for_engage() -> None:
    """Take the fence exclusive, to the end of the current transaction: waits for the claims
    in flight to commit, and holds new ones back until this transaction ends."""
    assert transaction.get_connection().in_atomic_block, "the fence lasts a transaction"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FENCE_KEY])
