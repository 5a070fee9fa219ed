"""The gate: every action an agent wants to take passes here first.

Checks, in order: the key (done by the API's authentication), the agent's status and scope,
kill switches, the params against the tool's schema, then the active Decision Book. The action,
its decision, the book version and the audit events are written in one transaction; allowed
actions are announced to the workers in it, and reach them once it commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import wraps
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.actions.allow_path import action_insert_unless_stopped
from apps.actions.breaker import circuit_refusing
from apps.actions.decision import Ruling, action_rule
from apps.actions.dispatch import action_dispatch, actions_send_on_commit
from apps.actions.metrics import GATE_DECISIONS, GATE_REFUSALS, GATE_SECONDS
from apps.actions.models import Action, Decision, Status
from apps.actions.params import ParamsInvalid, params_check
from apps.actions.states import transition_insert
from apps.audit.services import audit_batch
from apps.books.models import BookVersion
from apps.killswitches.coverage import covering
from apps.killswitches.firewall import firewall_decided, firewall_proposal, firewall_scope_violation
from apps.killswitches.models import KillSwitch
from apps.registry.models import Agent, AgentKey, Tool, Workflow
from apps.registry.snapshot import RegistryView, registry_view
from apps.reviews.items import review_open
from apps.runtime.budgets import UsageRefused, usage_record


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


def gate_timed[**P](propose: Callable[P, GateResult]) -> Callable[P, GateResult]:
    """Wraps the gate: its latency, and each recorded decision or refusal
    (apps/actions/metrics.py)."""

    @wraps(propose)
    def timed(*args: P.args, **kwargs: P.kwargs) -> GateResult:
        started = time.perf_counter()
        try:
            result = propose(*args, **kwargs)
        except GateRefusal as refusal:
            GATE_REFUSALS.labels(str(refusal.status)).inc()
            raise
        finally:
            GATE_SECONDS.observe(time.perf_counter() - started)
        if result.created:
            action = result.action
            outcome = "blocked" if action.status == Status.BLOCKED else action.decision
            GATE_DECISIONS.labels(action.workflow.slug, outcome).inc()
        return result

    return timed


def _existing(agent: Agent, proposal: Proposal, params: dict[str, Any]) -> Action | None:
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
        or earlier.params != params
        or earlier.subject != proposal.subject
    ):
        raise GateRefusal(
            409,
            "This idempotency key was already used for a different action.",
            "idempotency_key",
            f"already used by action {earlier.pk} ({earlier.workflow.slug}/{earlier.tool.slug})",
        )
    return earlier


def _scoped_tool(
    registry: RegistryView, key: AgentKey, agent: Agent, proposal: Proposal
) -> tuple[tuple[str, ...], Tool]:
    """The agent's workflows and the proposed tool, once the key's scope and the agent's tools
    allow both; refused (403) otherwise. Checked before anything is read or replayed: a key
    scoped to one workflow never learns of an action in another."""
    served = registry.served(agent)
    allowed = registry.key_workflows(key, served=served)
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
    tool = registry.tool(agent, proposal.tool)
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
    return served, tool


def checked_params(tool: Tool, params: dict[str, Any]) -> dict[str, Any]:
    """The canonical params (apps/actions/params.py), or a 422 naming the first field at fault."""
    try:
        return params_check(tool, params)
    except ParamsInvalid as invalid:
        path, message = invalid.errors[0]
        raise GateRefusal(422, f"Invalid params: {path}: {message}", path, message) from None


@gate_timed
def action_propose(
    *, key: AgentKey, proposal: Proposal, registry: RegistryView | None = None
) -> GateResult:
    """Decide one proposal and record it. The same idempotency key from the same agent returns
    the first action (created=False), however many duplicates arrive at once. `registry`: the
    request's view of the registry, when its key was read through one."""
    agent = key.agent
    registry = registry or registry_view()
    served, tool = _scoped_tool(registry, key, agent, proposal)
    params = checked_params(tool, proposal.params)
    earlier = _existing(agent, proposal, params)
    if earlier is not None:
        return GateResult(earlier, created=False)
    if agent.status != Agent.Status.ACTIVE:
        raise GateRefusal(403, f"Agent {agent.slug} is {agent.status} and may not act.")

    firewall_proposal(agent)
    try:
        asked = _Asked(registry, key, agent, served, tool, proposal, params)
        action, ruling = _allow_path(asked)
        if action is None:
            with transaction.atomic(), audit_batch():
                action = _record(asked, ruling)
                if proposal.usage:
                    # The model usage behind the proposal counts against the same budgets as
                    # a hosted agent's calls, in the same transaction as the action it
                    # produced.
                    try:
                        usage_record(action=action, usage=proposal.usage)
                    except UsageRefused as refused:
                        raise GateRefusal(
                            refused.status, refused.message, refused.field, refused.message
                        ) from None
    except IntegrityError:
        # A concurrent duplicate committed first: answer with its action.
        earlier = _existing(agent, proposal, params)
        if earlier is None:
            raise
        return GateResult(earlier, created=False)
    firewall_decided(agent, action)
    return GateResult(action, created=True)


@dataclass(frozen=True)
class _Asked:
    """A proposal past its key's scope and its params' check: what the gate decides on."""

    registry: RegistryView
    key: AgentKey
    agent: Agent
    served: tuple[str, ...]
    tool: Tool
    proposal: Proposal
    params: dict[str, Any]


def _new_action(asked: _Asked, workflow: Workflow, version: BookVersion | None) -> Action:
    proposal = asked.proposal
    return Action(
        agent=asked.agent,
        key=asked.key,
        workflow=workflow,
        tool=asked.tool,
        book_version=version,
        status=Status.PROPOSED,
        decision=Decision.DENY,
        params=asked.params,
        subject=proposal.subject,
        confidence=proposal.confidence,
        reasoning=proposal.reasoning,
        evidence=proposal.evidence,
        usage=proposal.usage,
        idempotency_key=proposal.idempotency_key,
        trace_id=proposal.trace_id,
        segment=proposal.segment,
    )


def _rule(action: Action, asked: _Asked) -> Ruling:
    return action_rule(
        version=action.book_version,
        workflow=action.workflow,
        agent=action.agent,
        tool=action.tool,
        params=action.params,
        confidence=action.confidence,
        segment=action.segment,
        subject=action.subject,
        served=asked.served,
    )


def _allow_path(asked: _Asked) -> tuple[Action | None, Ruling | None]:
    """An allowed proposal written and announced to the workers in one statement
    (apps/actions/allow_path.py), sent through the broker too where workers do not listen.
    (None, the ruling) when the book does not allow it, a switch or the circuit
    stopped it, or it carries model usage: the full path records it then, with that ruling."""
    version, workflow = asked.registry.active(asked.proposal.workflow)
    if version is None or workflow is None or asked.proposal.usage:
        return None, None
    action = _new_action(asked, workflow, version)
    ruling = _rule(action, asked)
    if ruling.decision != Decision.ALLOW:
        return None, ruling
    _allowed(action, ruling)
    stopped = action_insert_unless_stopped(
        action,
        (Status.APPROVED, Status.QUEUED),
        actor=f"agent:{asked.agent.slug}",
        decider="system:gate",
        proposed=_proposed(action),
    )
    if stopped is not None:
        return None, ruling
    actions_send_on_commit([action.pk])
    return action, ruling


def _allowed(action: Action, ruling: Ruling) -> None:
    action.decision = ruling.decision
    action.reasons = ruling.reasons
    action.spot_check = ruling.spot_check
    action.queued_at = action.created_at = timezone.now()
    action.params_digest = ruling.digest


def _record(asked: _Asked, ruling: Ruling | None = None) -> Action:
    """The proposal recorded in the gate's transaction, on every path: blocked by a switch,
    denied, observed, held, held for a broken circuit, or allowed. `ruling`: the book's, when
    the allow path made it already."""
    agent, tool, proposal = asked.agent, asked.tool, asked.proposal
    version, workflow = asked.registry.active(proposal.workflow)
    if workflow is None:
        # (the key's scope named it: it was deleted since)
        raise GateRefusal(403, f"This key may not act in workflow {proposal.workflow!r}.")
    switches = list(
        KillSwitch.objects.filter(
            covering(workflow=workflow.slug, agent=agent.slug, tool=tool.slug)
        )
    )
    action = _new_action(asked, workflow, version)
    if switches:
        action.reasons = [
            {
                "policy": f"kill-switch:{switch.scope}",
                "message": f"Stopped by on-call: {switch.reason}",
            }
            for switch in switches
        ]
        return _enter(action, agent, Status.BLOCKED)

    ruling = ruling or _rule(action, asked)
    action.decision = ruling.decision
    action.reasons = ruling.reasons
    action.spot_check = ruling.spot_check
    if ruling.decision == Decision.OBSERVE:
        return _enter(action, agent, Status.OBSERVED)
    if ruling.decision == Decision.DENY:
        return _enter(action, agent, Status.DENIED)
    assert version is not None  # (only a version allows or holds)
    if ruling.decision == Decision.ALLOW:
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
            action.escalated_to_id = action.escalation_owner_id
            _enter(action, agent, Status.PENDING_REVIEW)
            return _review(action, "fallback", error=action.reasons[0]["message"])
        _allowed(action, ruling)
        _enter(action, agent, Status.APPROVED, Status.QUEUED)
        action_dispatch(action.pk)
        return action
    _enter(action, agent, Status.PENDING_REVIEW)
    return _review(action, "hold")


def _review(action: Action, kind: str, *, error: str = "") -> Action:
    """Open the review item of a held action, in the gate's transaction."""
    review_open(action, kind, error=error, escalate=action.escalated_to_id is not None)
    return action


def _enter(action: Action, agent: Agent, *path: str) -> Action:
    """Write the new action in the status the gate's decision reaches along `path`."""
    return transition_insert(
        action,
        path,
        actor=f"agent:{agent.slug}",
        decider="system:gate",
        proposed=_proposed(action),
        reported=False,
    )


def _proposed(action: Action) -> dict[str, Any]:
    """The data of the `action.proposed` event: what the agent asked for."""
    return {
        "workflow": action.workflow.slug,
        "tool": action.tool.slug,
        "params": action.params,
        "confidence": str(action.confidence) if action.confidence is not None else None,
        "book_version": action.book_version.number if action.book_version else None,
        "idempotency_key": action.idempotency_key,
        "trace_id": action.trace_id,
    }
