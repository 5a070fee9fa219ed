"""After a load: wait for the actions to finish, then check each allowed one against the
database: executed exactly once (bench_load.py)."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models import QuerySet, Sum

from apps.actions.models import Action, Decision, Status
from apps.registry.models import Agent
from apps.sandbox.models import IdempotencyRecord, Order, Refund

FAILED_TASK = re.compile(r"raised unexpected: (\w+)\((.{0,60})")


def task_failures(logs: list[Path]) -> Counter[str]:
    """Tasks that ended in an exception, as the workers logged them: by exception and the start
    of its message (an action whose task failed stays where it was, queued or running)."""
    failures: Counter[str] = Counter()
    for log in logs:
        for found in FAILED_TASK.finditer(log.read_text(errors="replace")):
            message = found.group(2).split("\\n")[0].strip("'\"")
            failures[f"{found.group(1)}: {message}"] += 1
    return failures


def deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def drain(actions: QuerySet[Action], *, limit: float, patience: float) -> tuple[float, int]:
    """Wait until none of `actions` is queued or running: (seconds waited, how many still are).
    Gives up after `limit` s, or after `patience` s without any finishing."""
    started = progress_at = time.monotonic()
    left = -1
    while True:
        now_left: int = actions.filter(status__in=[Status.QUEUED, Status.RUNNING]).count()
        now = time.monotonic()
        if now_left == 0 or now - started > limit or now - progress_at > patience:
            return now - started, now_left
        if now_left != left:
            left, progress_at = now_left, now
        time.sleep(0.5)


@dataclass(frozen=True)
class Check:
    recorded: int  # the run's actions in the database
    allowed: int
    held: int
    once: int  # allowed, succeeded, one refund under its key, on its order, of its amount
    one_effect: int  # allowed, with that one refund, whatever their status
    no_effect: int  # allowed, without any refund
    duplicated: int  # allowed, with more than one refund
    statuses: Counter[str]  # of the allowed actions
    held_untouched: int  # held, still pending review, no refund on their order
    stray_effects: int  # refunds on the run's orders not matched to an allowed action
    retried: int  # allowed actions with more than one attempt (transient faults)
    records: int  # the sandbox's idempotency records under the allowed actions' keys
    balances_agree: bool  # the orders' refunded totals are the sum of the allowed amounts
    to_succeeded: list[float]  # seconds, sorted: created_at -> finished_at of the succeeded

    @property
    def exactly_once(self) -> bool:
        return (
            self.once == self.allowed
            and self.held_untouched == self.held
            and self.stray_effects == 0
            and self.records == self.allowed
            and self.balances_agree
        )


def check(*, agent: Agent, key_prefix: str, order_prefix: str) -> Check:
    """The actions `agent` proposed under idempotency keys starting with `key_prefix`, each with
    its own sandbox order (ids starting with `order_prefix`)."""
    actions = list(
        Action.objects.filter(agent=agent, idempotency_key__startswith=key_prefix).values(
            "pk", "decision", "status", "attempts", "params", "created_at", "finished_at"
        )
    )
    refunds: dict[str, list[Any]] = {}
    refunded_orders: set[str] = set()
    for refund in Refund.objects.filter(order__id__startswith=order_prefix).values(
        "idempotency_key", "order_id", "amount_cents", "action_ref"
    ):
        refunds.setdefault(refund["idempotency_key"], []).append(refund)
        refunded_orders.add(refund["order_id"])
    allowed = [a for a in actions if a["decision"] == Decision.ALLOW]
    held = [a for a in actions if a["decision"] == Decision.HOLD]
    keys = [f"esc-{a['pk']}" for a in allowed]
    once = one_effect = no_effect = duplicated = matched = 0
    for action in allowed:
        effects = refunds.get(f"esc-{action['pk']}", [])
        matched += len(effects)
        params = action["params"]
        no_effect += not effects
        duplicated += len(effects) > 1
        if (
            len(effects) == 1
            and effects[0]["order_id"] == params["order_id"]
            and effects[0]["amount_cents"] == params["amount_cents"]
            and effects[0]["action_ref"] == str(action["pk"])
        ):
            one_effect += 1
            once += action["status"] == Status.SUCCEEDED
    refunded = Order.objects.filter(pk__startswith=order_prefix).aggregate(
        total=Sum("refunded_cents")
    )["total"]
    return Check(
        recorded=len(actions),
        allowed=len(allowed),
        held=len(held),
        once=once,
        one_effect=one_effect,
        no_effect=no_effect,
        duplicated=duplicated,
        statuses=Counter(a["status"] for a in allowed),
        held_untouched=sum(
            1
            for a in held
            if a["status"] == Status.PENDING_REVIEW
            and a["params"]["order_id"] not in refunded_orders
        ),
        stray_effects=sum(len(found) for found in refunds.values()) - matched,
        retried=sum(1 for a in allowed if a["attempts"] > 1),
        records=IdempotencyRecord.objects.filter(endpoint="refunds", key__in=keys).count(),
        balances_agree=(refunded or 0) == sum(a["params"]["amount_cents"] for a in allowed),
        to_succeeded=sorted(
            (a["finished_at"] - a["created_at"]).total_seconds()
            for a in allowed
            if a["status"] == Status.SUCCEEDED and a["finished_at"] is not None
        ),
    )
