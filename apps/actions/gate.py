"""The gate: every action an agent wants to take passes here first.

Checks, in order: the key (done by the API's authentication), the agent's status and scope,
kill switches, the params against the tool's schema, then the active Decision Book. The action,
its decision, the book version and the audit events are written in one transaction; allowed
actions are queued for a worker once that transaction commits.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from apps.actions.breaker import circuit_refusing
from apps.actions.models import Action, Decision, Status
from apps.actions.states import IllegalTransition, can_transition, transition
from apps.audit.services import audit_batch, audit_record
from apps.books.compilation import action_facts, book_decide
from apps.books.models import BookVersion
from apps.core.metrics import gate_timed
from apps.killswitches.firewall import firewall_decided, firewall_proposal, firewall_scope_violation
from apps.killswitches.models import KillSwitch, covering
from apps.registry.models import Agent, AgentKey, Tool, Workflow
from apps.registry.services import key_workflow_slugs

logger = logging.getLogger(__name__)


class GateRefusal(Exception):
    """The proposal is refused before anything is recorded (bad key scope, bad params)."""

    def __init__(self, status: int, detail: str, field: str = "", message: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.message = message or detail


@dataclass(frozen=True)
class Proposal:
    workflow: str
    tool: str
    params: dict[str, Any]
    subject: str = ""
    confidence: Decimal | None = None
    reasoning: str = ""
    evidence: list[Any] = field(default_factory=list)
    idempotency_key: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    trace_id: str = ""
    segment: str = ""


@dataclass(frozen=True)
class GateResult:
    action: Action
    created: bool


@lru_cache(maxsize=512)
def _validator(tool_id: int, updated_at: str, schema_json: str) -> Draft202012Validator:
    import json

    return Draft202012Validator(json.loads(schema_json))


def params_errors(tool: Tool, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each way `params` breaks the tool's input schema."""
    import json

    validator = _validator(
        tool.pk, tool.updated_at.isoformat(), json.dumps(tool.input_schema, sort_keys=True)
    )
    problems = []
    for error in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path)):
        problems.append((_param_path(error), error.message))
    return problems


def _param_path(error: SchemaError) -> str:
    path = "params"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    # A missing required property is reported on its parent; name the property itself.
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = [name for name in required if name not in error.instance]
        if missing:
            path += f".{missing[0]}"
    # So is a property the schema does not allow (additionalProperties: false).
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, dict)
    ):
        known = error.schema.get("properties", {})
        patterns = error.schema.get("patternProperties", {})
        unexpected = [
            name
            for name in error.instance
            if name not in known and not any(re.search(pattern, name) for pattern in patterns)
        ]
        if unexpected:
            path += f".{unexpected[0]}"
    return path


def _existing(agent: Agent, proposal: Proposal) -> Action | None:
    """The action this agent already proposed under the same idempotency key, if any. A key
    reused for a different action is a bug in the agent: refused (409), never merged."""
    if proposal.idempotency_key is None:
        return None
    earlier = (
        Action.objects.select_related("workflow", "tool", "book_version")
        .filter(agent=agent, idempotency_key=proposal.idempotency_key)
        .first()
    )
    if earlier is not None and (
        earlier.workflow.slug != proposal.workflow
        or earlier.tool.slug != proposal.tool
        or earlier.params != proposal.params
        or earlier.subject != proposal.subject
    ):
        raise GateRefusal(
            409,
            "This idempotency key was already used for a different action.",
            "idempotency_key",
            f"already used by action {earlier.pk} ({earlier.workflow.slug}/{earlier.tool.slug})",
        )
    return earlier


@gate_timed
def action_propose(*, key: AgentKey, proposal: Proposal) -> GateResult:
    """Decide one proposal and record it. The same idempotency key from the same agent returns
    the first action (created=False), however many duplicates arrive at once."""
    agent = key.agent
    earlier = _existing(agent, proposal)
    if earlier is not None:
        return GateResult(earlier, created=False)

    if agent.status != Agent.Status.ACTIVE:
        raise GateRefusal(403, f"Agent {agent.slug} is {agent.status} and may not act.")
    served = tuple(sorted(agent.workflows.values_list("slug", flat=True)))
    allowed = key_workflow_slugs(key, served=served)
    if proposal.workflow not in allowed:
        firewall_scope_violation(
            agent, field="workflow", value=proposal.workflow, message="not among its workflows"
        )
        raise GateRefusal(
            403,
            f"This key may not act in workflow {proposal.workflow!r}.",
            "workflow",
            "not among the key's workflows: " + (", ".join(sorted(allowed)) or "none"),
        )
    tool = agent.tools.filter(slug=proposal.tool).first()
    if tool is None:
        firewall_scope_violation(
            agent, field="tool", value=proposal.tool, message="not among the agent's tools"
        )
        raise GateRefusal(
            403,
            f"Agent {agent.slug} may not use tool {proposal.tool!r}.",
            "tool",
            "not among the agent's tools",
        )
    problems = params_errors(tool, proposal.params)
    if problems:
        path, message = problems[0]
        raise GateRefusal(422, f"Invalid params: {path}: {message}", path, message)

    firewall_proposal(agent)
    try:
        with transaction.atomic(), audit_batch():
            action = _record(key, agent, served, proposal.workflow, tool, proposal)
            if proposal.usage:
                # The model usage behind the proposal counts against the same budgets as a
                # hosted agent's calls, in the same transaction as the action it produced.
                from apps.runtime.budgets import usage_record

                usage_record(action=action, usage=proposal.usage)
    except IntegrityError:
        # A concurrent duplicate committed first: answer with its action.
        earlier = _existing(agent, proposal)
        if earlier is None:
            raise
        return GateResult(earlier, created=False)
    firewall_decided(agent, action)
    return GateResult(action, created=True)


def _record(
    key: AgentKey,
    agent: Agent,
    served: tuple[str, ...],
    workflow_slug: str,
    tool: Tool,
    proposal: Proposal,
) -> Action:
    # The active version brings its workflow along: one query where there were two (the gate's
    # time goes mostly to its statements; see docs/benchmarks.md).
    version = (
        BookVersion.objects.filter(
            workflow__slug=workflow_slug, status=BookVersion.Status.PUBLISHED
        )
        .select_related("workflow")
        .first()
    )
    workflow = version.workflow if version is not None else Workflow.objects.get(slug=workflow_slug)
    switches = list(
        KillSwitch.objects.filter(
            covering(workflow=workflow.slug, agent=agent.slug, tool=tool.slug)
        )
    )
    action = Action(
        agent=agent,
        key=key,
        workflow=workflow,
        tool=tool,
        book_version=version,
        status=Status.PROPOSED,
        decision=Decision.DENY,
        params=proposal.params,
        subject=proposal.subject,
        confidence=proposal.confidence,
        reasoning=proposal.reasoning,
        evidence=proposal.evidence,
        usage=proposal.usage,
        idempotency_key=proposal.idempotency_key,
        trace_id=proposal.trace_id,
    )
    if switches:
        action.reasons = [
            {
                "policy": f"kill-switch:{switch.scope}",
                "message": f"Stopped by on-call: {switch.reason}",
            }
            for switch in switches
        ]
        return _enter(action, agent, Status.BLOCKED)
    if version is None:
        action.reasons = [
            {
                "policy": "no-active-book",
                "message": f"Workflow {workflow.slug} has no published Decision Book",
            }
        ]
        return _enter(action, agent, Status.DENIED)

    facts = action_facts(
        version=version,
        agent=agent,
        tool=tool,
        params=proposal.params,
        confidence=proposal.confidence,
        at=timezone.localtime(),
        segment=proposal.segment,
        subject=proposal.subject,
        agent_workflows=served,
    )
    verdict = book_decide(version, facts)
    action.decision = verdict.decision
    action.reasons = [reason.as_dict() for reason in verdict.reasons]
    action.spot_check = verdict.spot_check
    if verdict.decision == Decision.OBSERVE:
        return _enter(action, agent, Status.OBSERVED)
    if verdict.decision == Decision.DENY:
        return _enter(action, agent, Status.DENIED)
    if verdict.decision == Decision.ALLOW:
        circuit = circuit_refusing(tool)
        if circuit is not None:
            # The downstream is known broken: a person decides, and nothing is lost.
            action.decision = Decision.HOLD
            action.reasons = [
                {
                    "policy": "circuit-open",
                    "message": f"{tool.slug} is failing: {circuit.last_error}",
                }
            ]
            action.escalated_to_id = version.escalation_owner_id
            _enter(action, agent, Status.PENDING_REVIEW)
            return _review(action, "fallback", error=action.reasons[0]["message"])
        action.queued_at = action.created_at = timezone.now()
        _enter(action, agent, Status.APPROVED, Status.QUEUED)
        _dispatch_on_commit(action)
        return action
    _enter(action, agent, Status.PENDING_REVIEW)
    return _review(action, "hold")


def _review(action: Action, kind: str, *, error: str = "") -> Action:
    """Open the review item of a held action, in the gate's transaction."""
    from apps.reviews.services import review_open

    review_open(action, kind, error=error, escalate_to_id=action.escalated_to_id)
    return action


def _enter(action: Action, agent: Agent, *path: str) -> Action:
    """Write a new action once, in the state it reaches along `path` from proposed.

    Each step must be a transition of the state machine and is audited as one, exactly as
    `transition` would record it; only the row is written once instead of once per step (the
    gate's time is mostly its statements: see docs/benchmarks.md)."""
    current: str = Status.PROPOSED
    for step in path:
        if not can_transition(current, step):
            raise IllegalTransition(action.pk, current, step)
        current = step
    action.status = current
    action.save(force_insert=True)
    audit_record(
        actor=f"agent:{agent.slug}",
        verb="action.proposed",
        target=action,
        subject=action.subject,
        data={
            "workflow": action.workflow.slug,
            "tool": action.tool.slug,
            "params": action.params,
            "confidence": str(action.confidence) if action.confidence is not None else None,
            "book_version": action.book_version.number if action.book_version else None,
            "idempotency_key": action.idempotency_key,
            "trace_id": action.trace_id,
        },
    )
    previous: str = Status.PROPOSED
    for step in path:
        decided = previous == Status.PROPOSED
        audit_record(
            actor="system:gate" if decided else f"agent:{agent.slug}",
            verb=f"action.{step}",
            target=action,
            subject=action.subject,
            data={"from": previous, "to": step}
            | ({"decision": action.decision, "reasons": action.reasons} if decided else {}),
        )
        previous = step
    return action


def _dispatch_on_commit(action: Action) -> None:
    """Hand the action to a worker once the transaction commits. The action is recorded
    `queued` either way: if the broker cannot take the message (Redis down), the proposal is
    still answered and the requeue sweep (apps/actions/requeue.py) sends it again later."""
    action_id = str(action.pk)
    transaction.on_commit(lambda: _dispatch(action_id), robust=True)


def _dispatch(action_id: str) -> None:
    from apps.actions.tasks import execute_action

    try:
        execute_action.delay(action_id)
    except Exception as exc:  # noqa: BLE001 (whatever the broker's failure, the action is kept)
        logger.warning(
            "broker refused action %s (%s); it stays queued for the requeue sweep",
            action_id,
            type(exc).__name__,
        )


def action_enqueue(action: Action, *, actor: str | Any) -> Action:
    """approved -> queued, and hand the id to a worker once the transaction commits."""
    transition(action, Status.QUEUED, actor=actor, queued_at=timezone.now())
    _dispatch_on_commit(action)
    return action


def action_retry(
    original: Action, *, params: dict[str, Any], actor: Any, note: dict[str, Any]
) -> Action:
    """Run a failed or drained action again, as a new action a person approved.

    The new action has its own id and so its own downstream idempotency key: the person has
    judged that the first one had no effect (or should be repeated)."""
    now = timezone.now()
    retry = Action(
        agent=original.agent,
        key=None,
        workflow=original.workflow,
        tool=original.tool,
        book_version=original.book_version,
        status=Status.QUEUED,
        decision=Decision.ALLOW,
        reasons=[
            {
                "policy": "human-retry",
                "message": f"Run again by a person after action {original.pk} "
                f"ended {original.status}",
            }
        ],
        params=params,
        subject=original.subject,
        confidence=original.confidence,
        reasoning=original.reasoning,
        evidence=original.evidence,
        trace_id=original.trace_id,
        created_at=now,
        queued_at=now,
    )
    retry.save(force_insert=True)
    audit_record(
        actor=actor,
        verb="action.proposed",
        target=retry,
        subject=retry.subject,
        data={"retry_of": str(original.pk), "params": params, **note},
    )
    previous: str = Status.PROPOSED
    for step in (Status.APPROVED, Status.QUEUED):
        audit_record(
            actor=actor,
            verb=f"action.{step}",
            target=retry,
            subject=retry.subject,
            data={"from": previous, "to": step},
        )
        previous = step
    _dispatch_on_commit(retry)
    return retry
