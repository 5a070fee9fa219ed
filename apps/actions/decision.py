"""The decision function: what the active Decision Book says of one use of a tool with exactly
these params. Every path that can lead to a tool call asks it (the gate on a proposal, a person
approving or editing a held action, a person running a fallback again), and the params it
decided are the params that run: a `Ruling` carries their digest, the action keeps it, and the
worker refuses to call a tool with params whose digest differs (apps/actions/execution.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from apps.actions.models import Action, Decision
from apps.actions.params import params_digest
from apps.books.compilation import action_facts, book_decide
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool, Workflow


@dataclass(frozen=True)
class Ruling:
    """The book's verdict on one action's params: `decision` is allow, hold, deny or observe
    (or deny with the reason `no-active-book` when the workflow has no published version)."""

    version: BookVersion | None
    decision: str
    reasons: list[dict[str, str]]
    spot_check: bool
    zone: str
    digest: str

    @property
    def approvals_required(self) -> int:
        """People who must approve these params before they run, when the ruling holds them."""
        if self.zone == "red" and (self.version is None or self.version.red_two_approvers):
            return 2
        return 1

    @property
    def may_run_after_approval(self) -> bool:
        return self.decision in (Decision.ALLOW, Decision.HOLD)

    def refusal(self) -> str:
        """Why a person may not make these params run, in a sentence naming the policy."""
        if self.decision == Decision.OBSERVE:
            return "The workflow is in observe mode: its actions are recorded, never run."
        text = "; ".join(f"{reason['policy']}: {reason['message']}" for reason in self.reasons)
        return f"The Decision Book denies these params ({text})."


def active_version(workflow_slug: str) -> BookVersion | None:
    """The published version of a workflow's book, with its workflow."""
    return (
        BookVersion.objects.filter(
            workflow__slug=workflow_slug, status=BookVersion.Status.PUBLISHED
        )
        .select_related("workflow")
        .first()
    )


def action_rule(
    *,
    version: BookVersion | None,
    workflow: Workflow,
    agent: Agent,
    tool: Tool,
    params: Mapping[str, Any],
    confidence: Decimal | None,
    segment: str = "",
    subject: str = "",
    served: tuple[str, ...] | None = None,
    at: datetime | None = None,
) -> Ruling:
    """The verdict of `version` (the workflow's active version, which the caller read) on
    `params`, already normalized (apps/actions/params.py)."""
    digest = params_digest(dict(params))
    if version is None:
        reason = {
            "policy": "no-active-book",
            "message": f"Workflow {workflow.slug} has no published Decision Book",
        }
        return Ruling(None, Decision.DENY, [reason], False, tool.risk_zone, digest)
    facts = action_facts(
        version=version,
        agent=agent,
        tool=tool,
        params=params,
        confidence=confidence,
        at=at or timezone.localtime(),
        segment=segment,
        subject=subject,
        agent_workflows=served,
    )
    verdict = book_decide(version, facts)
    return Ruling(
        version,
        verdict.decision,
        [reason.as_dict() for reason in verdict.reasons],
        verdict.spot_check,
        facts.tool_zone,
        digest,
    )


def action_rule_now(action: Action, params: Mapping[str, Any], *, at: datetime) -> Ruling:
    """The verdict of the workflow's version active now on `action` with `params` (its own or
    a person's edit): what an approval at `at` would make run."""
    return action_rule(
        version=active_version(action.workflow.slug),
        workflow=action.workflow,
        agent=action.agent,
        tool=action.tool,
        params=params,
        confidence=action.confidence,
        segment=action.segment,
        subject=action.subject,
        at=timezone.localtime(at),
    )
