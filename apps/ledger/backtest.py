"""Backtests: a draft Decision Book decided against the last N recorded actions of its
workflow, beside the version active when it was asked for.

Both versions decide the same facts, rebuilt from each recorded action (agent, tool, params,
confidence, subject, the local time it was proposed), through the same policy engine and the
same autonomy-mode and risk-zone rules as the gate (`book_decide_compiled`, the function behind
`book_decide`). A proposal's segment is not recorded with its action, so a backtest decides with
an empty segment on both sides; kill switches, circuits and budgets are left out: they stop
actions whatever the book says.

Speed: the actions are cut into parts of PART_SIZE (by their keys, read in one index scan), and
each part is a task of its own: every worker decides a share, reading its actions in one query,
parsing each version's policies once and each agent's and tool's facts once; the rest is two
in-process decisions per action. Progress moves as parts are recorded; the part that completes
the set merges the result."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone

from apps.actions.models import Action
from apps.audit.services import audit_record
from apps.books.compilation import (
    book_decide_compiled,
    book_problems,
    compiled_for,
    tool_rules,
)
from apps.books.models import BookVersion
from apps.books.policy.engine import (
    ActionFacts,
    CompiledPolicies,
    NativeInputs,
    Reason,
    native_inputs,
)
from apps.books.selectors import active_version
from apps.core.workers import task_send_on_commit
from apps.ledger.models import Backtest, BacktestPart
from apps.registry.models import Agent, Tool, Workflow
from apps.reviews.models import ReviewItem
from apps.reviews.models import State as ReviewState
from apps.runtime.models import ModelCall

logger = logging.getLogger(__name__)

MAX_LIMIT = 200_000
FLIPS_KEPT = 500
PART_SIZE = 5_000
REVIEW_HISTORY_DAYS = 90
DECISIONS = ("allow", "hold", "deny", "observe")
NO_BOOK = Reason("no-active-book", "The workflow has no published Decision Book")


class BacktestError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Decider:
    """One book version, parsed once, deciding many actions as the gate would."""

    def __init__(self, version: BookVersion | None) -> None:
        self.version = version
        self.compiled: CompiledPolicies | None = compiled_for(version) if version else None
        self.zones = {rule.tool: rule.risk_zone for rule in tool_rules(version)} if version else {}

    def zone(self, tool: Tool) -> str:
        return self.zones.get(tool.slug, tool.risk_zone)

    def reads_like(self, other: Decider) -> bool:
        """Whether the policies of both see an action's facts the same way (the same parameter
        types), so that the evaluator's inputs built for one serve the other."""
        return (
            self.compiled is not None
            and other.compiled is not None
            and self.compiled.param_types == other.compiled.param_types
        )

    def decide(self, facts: ActionFacts, native: NativeInputs | None = None) -> str:
        """The decision alone (no reasons: `reason` gives them for the few that flip)."""
        if self.version is None or self.compiled is None:
            return "deny"
        return book_decide_compiled(
            self.version, self.compiled, facts, explain=False, native=native
        ).decision

    def reason(self, facts: ActionFacts) -> str:
        """The policy behind the decision on `facts` (its id)."""
        if self.version is None or self.compiled is None:
            return NO_BOOK.policy_id
        verdict = book_decide_compiled(self.version, self.compiled, facts)
        return verdict.reasons[0].policy_id if verdict.reasons else ""


def facts_of(
    *,
    workflow: str,
    agent: tuple[str, str, tuple[str, ...]],
    tool: Tool,
    zone: str,
    currency: str,
    params: Mapping[str, Any],
    confidence: Decimal | None,
    subject: str,
    at: Any,
) -> ActionFacts:
    """What the policy sees of a recorded action (as `compilation.action_facts`)."""
    amount = params.get(tool.amount_param) if tool.amount_param else None
    params_currency = params.get("currency")
    slug, risk_tier, workflows = agent
    return ActionFacts(
        agent=slug,
        agent_risk_tier=risk_tier,
        agent_workflows=workflows,
        tool=tool.slug,
        tool_zone=zone,
        tool_reversible=tool.reversible,
        workflow=workflow,
        at=at,
        params=params,
        amount=amount if type(amount) is int else None,
        currency=params_currency if isinstance(params_currency, str) else currency,
        confidence=confidence,
        segment="",
        subject=subject,
    )


@transaction.atomic
def backtest_request(
    *, workflow: Workflow, draft: BookVersion | None, user: User, limit: int
) -> Backtest:
    """Queue a backtest of the workflow's saved draft against its last `limit` actions."""
    if draft is None or not draft.is_draft:
        raise BacktestError(None, f"{workflow.slug} has no draft to backtest; start one first.")
    if not 1 <= limit <= MAX_LIMIT:
        raise BacktestError("limit", f"between 1 and {MAX_LIMIT:,} actions, got {limit}")
    problems = book_problems(draft)
    if problems:
        first = problems[0]
        raise BacktestError(
            None,
            f"The saved draft has {len(problems)} problem(s) ({first.section} line {first.line}: "
            f"{first.message}); fix, save and validate it first.",
        )
    backtest = Backtest.objects.create(
        workflow=workflow,
        draft=draft,
        active=active_version(workflow),
        requested_by=user,
        limit=limit,
    )
    audit_record(
        actor=user,
        verb="book.backtest_requested",
        target=backtest,
        data={"workflow": workflow.slug, "draft": draft.pk, "limit": limit},
    )
    task_send_on_commit("ledger.backtest", str(backtest.pk))
    return backtest


def backtests_of(workflow: Workflow, *, count: int = 5) -> list[Backtest]:
    return list(
        Backtest.objects.filter(workflow=workflow).select_related("draft", "active")[:count]
    )


def _review_minutes(workflow: Workflow, fallback: Decimal) -> tuple[Decimal, str]:
    """The average time a person spends on one review item of this workflow (claim to
    decision, over the last 90 days), or the book's baseline minutes when none was decided."""
    since = timezone.now() - timedelta(days=REVIEW_HISTORY_DAYS)
    decided = ReviewItem.objects.filter(
        workflow=workflow, state=ReviewState.DECIDED, claimed_at__isnull=False, closed_at__gte=since
    )
    summary = decided.aggregate(
        spent=Sum(ExpressionWrapper(F("closed_at") - F("claimed_at"), output_field=DurationField()))
    )
    count = decided.count()
    if not count or summary["spent"] is None:
        return fallback, "no review decided in the last 90 days: the book's baseline minutes"
    minutes = Decimal(summary["spent"].total_seconds()) / 60 / count
    return minutes.quantize(Decimal("0.01")), f"average of {count} decided review(s), 90 days"


def _hours(minutes: Decimal) -> str:
    return f"{(minutes / 60).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}"


def _parts(backtest: Backtest) -> list[BacktestPart]:
    """The newest `limit` actions of the workflow cut into parts of PART_SIZE, each bounded by
    its newest action's (created_at, id) and the next part's (keys only: one index scan)."""
    keys = list(
        Action.objects.filter(workflow=backtest.workflow)
        .order_by("-created_at", "-pk")
        .values_list("created_at", "pk")[: backtest.limit]
    )
    starts = keys[::PART_SIZE]
    parts = []
    for index, (first_at, first_id) in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else (None, None)
        parts.append(
            BacktestPart(
                backtest=backtest,
                index=index,
                size=min(PART_SIZE, len(keys) - index * PART_SIZE),
                first_at=first_at,
                first_id=first_id,
                stop_at=stop[0],
                stop_id=stop[1],
            )
        )
    return parts


def backtest_perform(*, backtest_id: UUID, on_workers: bool = False) -> Backtest:
    """Run one backtest, recording its progress as it goes and its result at the end.

    The actions are decided in parts of PART_SIZE. `on_workers`: each part is a task of its
    own, so that every worker takes a share (the Celery task does this); otherwise the parts
    are decided here, one after the other. Either way the part that completes the set merges
    the result. Running a backtest again (its task delivered twice) starts it over: the parts
    of the earlier run are deleted, and their messages find nothing to do."""
    backtest = Backtest.objects.select_related("workflow", "draft", "active").get(pk=backtest_id)
    if backtest.finished:
        return backtest
    try:
        parts = _parts(backtest)
    except Exception as exc:  # noqa: BLE001 (a backtest must end, even on a defect: says why)
        return _fail(backtest, exc)
    with transaction.atomic():
        BacktestPart.objects.filter(backtest=backtest).delete()
        BacktestPart.objects.bulk_create(parts)
        Backtest.objects.filter(pk=backtest.pk).update(
            state=Backtest.State.RUNNING,
            started_at=timezone.now(),
            done=0,
            total=sum(part.size for part in parts),
            parts=len(parts),
            parts_done=0,
        )
        if on_workers:
            for part in parts:
                task_send_on_commit("ledger.backtest_part", part.pk)
    if not parts:
        _finish(backtest.pk)
    elif not on_workers:
        for part in parts:
            backtest_part_perform(part_id=part.pk)
    backtest.refresh_from_db()
    return backtest


def _fail(backtest: Backtest, exc: BaseException) -> Backtest:
    logger.error("backtest %s failed", backtest.pk, exc_info=exc)
    Backtest.objects.filter(pk=backtest.pk).exclude(state=Backtest.State.DONE).update(
        state=Backtest.State.FAILED, error=str(exc)[:1000], finished_at=timezone.now()
    )
    backtest.refresh_from_db()
    return backtest


def backtest_part_perform(*, part_id: int) -> None:
    """Decide one part and record it; a part delivered twice is recorded once, and a part of a
    run started over no longer exists."""
    part = (
        BacktestPart.objects.select_related(
            "backtest", "backtest__workflow", "backtest__draft", "backtest__active"
        )
        .filter(pk=part_id)
        .first()
    )
    if part is None or part.backtest.finished:
        return
    backtest = part.backtest
    if part.outcome is None:
        try:
            outcome = _evaluate_part(backtest, part)
        except Exception as exc:  # noqa: BLE001 (the backtest says why it failed)
            _fail(backtest, exc)
            return
        with transaction.atomic():
            recorded = BacktestPart.objects.filter(pk=part.pk, outcome__isnull=True).update(
                outcome=outcome
            )
            if recorded:
                Backtest.objects.filter(pk=backtest.pk).update(
                    done=F("done") + outcome["total"], parts_done=F("parts_done") + 1
                )
    _finish(backtest.pk)


def _evaluate_part(backtest: Backtest, part: BacktestPart) -> dict[str, Any]:
    actions = Action.objects.filter(workflow=backtest.workflow).filter(
        Q(created_at__lt=part.first_at) | Q(created_at=part.first_at, pk__lte=part.first_id)
    )
    if part.stop_at is not None:
        actions = actions.filter(
            Q(created_at__gt=part.stop_at) | Q(created_at=part.stop_at, pk__gt=part.stop_id)
        )
    rows = list(
        actions.order_by("-created_at", "-pk").values_list(
            "pk", "agent_id", "tool_id", "params", "confidence", "subject", "created_at"
        )[: part.size]
    )
    workflow = backtest.workflow
    draft = Decider(backtest.draft)
    active = Decider(backtest.active)
    agents = {
        agent.pk: (
            agent.slug,
            agent.risk_tier,
            tuple(sorted(flow.slug for flow in agent.workflows.all())),
        )
        for agent in Agent.objects.filter(pk__in={row[1] for row in rows}).prefetch_related(
            "workflows"
        )
    }
    tools = {tool.pk: tool for tool in Tool.objects.filter(pk__in={row[2] for row in rows})}
    draft_currency = backtest.draft.currency
    active_currency = backtest.active.currency if backtest.active else draft_currency
    counts: dict[str, Counter[str]] = {"draft": Counter(), "active": Counter()}
    moves: Counter[str] = Counter()
    flipped: list[dict[str, Any]] = []
    flipped_ids: list[UUID] = []
    tz = timezone.get_current_timezone()
    shared_types = draft.reads_like(active)
    draft_types = draft.compiled.param_types if draft.compiled is not None else {}
    for pk, agent_id, tool_id, params, confidence, subject, created_at in rows:
        tool = tools[tool_id]
        common: dict[str, Any] = {
            "workflow": workflow.slug,
            "agent": agents[agent_id],
            "tool": tool,
            "params": params if isinstance(params, dict) else {},
            "confidence": confidence,
            "subject": subject,
            "at": created_at.astimezone(tz),
        }
        facts = facts_of(zone=draft.zone(tool), currency=draft_currency, **common)
        if active.zone(tool) == facts.tool_zone and active_currency == draft_currency:
            # Both versions see the same facts: the evaluator's inputs are built once.
            native = native_inputs(facts, draft_types) if shared_types else None
            new = draft.decide(facts, native)
            old = active.decide(facts, native)
        else:
            new = draft.decide(facts)
            old = active.decide(
                facts_of(zone=active.zone(tool), currency=active_currency, **common)
            )
        counts["draft"][new] += 1
        counts["active"][old] += 1
        if new != old:
            moves[f"{old}->{new}"] += 1
            flipped_ids.append(pk)
            if len(flipped) < FLIPS_KEPT:
                flipped.append(
                    {
                        "id": str(pk),
                        "subject": subject,
                        "tool": tool.slug,
                        "created_at": created_at.isoformat(),
                        "active": old,
                        "draft": new,
                        "reason": draft.reason(facts),
                    }
                )
    spend = Decimal(0)
    for start in range(0, len(flipped_ids), 5_000):
        chunk = flipped_ids[start : start + 5_000]
        spend += ModelCall.objects.filter(action_id__in=chunk).aggregate(s=Sum("cost_cents"))[
            "s"
        ] or Decimal(0)
    return {
        "total": len(rows),
        "counts": {side: dict(counts[side]) for side in ("active", "draft")},
        "moves": dict(moves),
        "flip_total": len(flipped_ids),
        "flipped": flipped,
        "flipped_spend_cents": f"{spend:f}",
    }


def _finish(backtest_id: UUID) -> None:
    """Merge the parts into the result, once all of them are recorded (whoever gets here first
    with the set complete; the row lock keeps a second merge out)."""
    with transaction.atomic():
        backtest = (
            Backtest.objects.select_for_update(of=("self",))
            .select_related("workflow", "draft", "active")
            .get(pk=backtest_id)
        )
        if backtest.finished or backtest.parts_done < backtest.parts:
            return
        outcomes: list[dict[str, Any]] = [
            outcome
            for outcome in BacktestPart.objects.filter(backtest=backtest)
            .order_by("index")
            .values_list("outcome", flat=True)
            if outcome is not None
        ]
        result = _merge(backtest, outcomes)
        started = backtest.started_at or timezone.now()
        result["seconds"] = round((timezone.now() - started).total_seconds(), 3)
        Backtest.objects.filter(pk=backtest.pk).update(
            state=Backtest.State.DONE,
            result=result,
            done=result["total"],
            total=result["total"],
            finished_at=timezone.now(),
        )
        BacktestPart.objects.filter(backtest=backtest).delete()


def _merge(backtest: Backtest, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Counter[str]] = {"draft": Counter(), "active": Counter()}
    moves: Counter[str] = Counter()
    flipped: list[dict[str, Any]] = []
    spend = Decimal(0)
    for outcome in outcomes:  # newest part first
        for side in ("active", "draft"):
            counts[side].update(outcome["counts"][side])
        moves.update(outcome["moves"])
        flipped += outcome["flipped"][: FLIPS_KEPT - len(flipped)]
        spend += Decimal(outcome["flipped_spend_cents"])
    baseline = backtest.draft.baseline_minutes
    per_review, basis = _review_minutes(backtest.workflow, baseline)
    active_baseline = backtest.active.baseline_minutes if backtest.active else baseline
    return {
        "total": sum(outcome["total"] for outcome in outcomes),
        "counts": {
            side: {decision: counts[side][decision] for decision in DECISIONS}
            for side in ("active", "draft")
        },
        "moves": dict(sorted(moves.items())),
        "flip_total": sum(outcome["flip_total"] for outcome in outcomes),
        "flipped": flipped,
        "review_minutes_each": f"{per_review:f}",
        "review_basis": basis,
        "reviewer_hours": {
            "active": _hours(per_review * counts["active"]["hold"]),
            "draft": _hours(per_review * counts["draft"]["hold"]),
            "change": _hours(per_review * (counts["draft"]["hold"] - counts["active"]["hold"])),
        },
        "time_saved_hours": {
            "active": _hours(active_baseline * counts["active"]["allow"]),
            "draft": _hours(baseline * counts["draft"]["allow"]),
        },
        "flipped_spend_cents": f"{spend:f}",
        "currency": backtest.draft.currency,
    }
