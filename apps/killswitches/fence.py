"""The fence between engaging a switch and claiming an action for execution.

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

from django.db import connection, transaction

# An arbitrary 64-bit key, the same in every process: "kill switches" for the advisory lock.
# The claim's database functions take it with this number written out
# (apps/actions/migrations/0006_claim_functions.py).
FENCE_KEY = 0x4B494C4C_53574954


def fence_for_engage() -> None:
    """Take the fence exclusive, to the end of the current transaction: waits for the claims
    in flight to commit, and holds new ones back until this transaction ends."""
    assert transaction.get_connection().in_atomic_block, "the fence lasts a transaction"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FENCE_KEY])
