"""Reading Decision Books: the active version, the history, a readable rendering and diffs."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet

from apps.books.compilation import tool_rules
from apps.books.models import BookVersion
from apps.books.policy.compiler import money
from apps.registry.models import Workflow


def active_version(workflow: Workflow) -> BookVersion | None:
    return (
        BookVersion.objects.filter(workflow=workflow, status=BookVersion.Status.PUBLISHED)
        .select_related("published_by")
        .first()
    )


def draft_of(workflow: Workflow) -> BookVersion | None:
    return BookVersion.objects.filter(workflow=workflow, status=BookVersion.Status.DRAFT).first()


def history(workflow: Workflow) -> QuerySet[BookVersion]:
    return (
        BookVersion.objects.filter(workflow=workflow)
        .exclude(status=BookVersion.Status.DRAFT)
        .select_related("published_by", "based_on")
        .order_by("-number")
    )


@dataclass(frozen=True)
class WorkflowRow:
    workflow: Workflow
    active: BookVersion | None
    draft: BookVersion | None
    agents: int


def workflow_rows() -> list[WorkflowRow]:
    versions = BookVersion.objects.filter(
        status__in=[BookVersion.Status.PUBLISHED, BookVersion.Status.DRAFT]
    ).select_related("published_by")
    active = {v.workflow_id: v for v in versions if v.status == BookVersion.Status.PUBLISHED}
    drafts = {v.workflow_id: v for v in versions if v.status == BookVersion.Status.DRAFT}
    rows = []
    for workflow in Workflow.objects.prefetch_related("agents").order_by("slug"):
        rows.append(
            WorkflowRow(
                workflow, active.get(workflow.pk), drafts.get(workflow.pk), workflow.agents.count()
            )
        )
    return rows


def _rate(value: Decimal | float | None) -> str:
    return "-" if value is None else f"{Decimal(str(value)) * 100:.1f}%"


def version_text(version: BookVersion) -> str:
    """The whole content of a version as plain text, one fact per line: what the diff compares
    and what a reviewer reads."""
    currency = version.currency
    lines = [
        f"Objective: {version.objective.strip() or '-'}",
        f"Autonomy mode: {version.autonomy_mode}",
        "Escalation owner: "
        + (version.escalation_owner.get_username() if version.escalation_owner else "-"),
        f"Human baseline: {version.baseline_minutes} minutes per task",
        "Tools:",
    ]
    for rule in tool_rules(version):
        auto = money(rule.auto_cap, currency) if rule.auto_cap is not None else "no limit"
        hard = money(rule.hard_cap, currency) if rule.hard_cap is not None else "no limit"
        lines.append(
            f"  {rule.tool}: {rule.risk_zone} zone; without review up to {auto}; never above {hard}"
        )
    segments = ", ".join(version.allowed_segments or []) or "any"
    hours = (
        f"{version.business_hours_start:02d}:00-{version.business_hours_end:02d}:00"
        if version.business_hours_start is not None and version.business_hours_end is not None
        else "any time"
    )
    lines += [
        f"Confidence threshold: {version.confidence_threshold}",
        f"Segments running without review: {segments}",
        f"Business hours: {hours}{', weekdays only' if version.weekdays_only else ''}",
        f"Spot-check rate: {_rate(version.spot_check_rate)}",
        f"Red zone needs two approvers: {'yes' if version.red_two_approvers else 'no'}",
        f"Review SLA: {version.sla_minutes} minutes",
        "Cost per outcome cap: "
        + (
            money(version.per_outcome_cap_cents, currency)
            if version.per_outcome_cap_cents is not None
            else "-"
        ),
        "Monthly budget: "
        + (
            money(version.monthly_budget_cents, currency)
            if version.monthly_budget_cents is not None
            else "-"
        ),
        "Data sources:",
    ]
    for source in version.data_sources or []:
        fresh = source.get("freshness_minutes")
        lines.append(
            f"  {source.get('name')}"
            + (f" (fresh within {fresh} min)" if fresh is not None else "")
        )
    lines.append("SLOs:")
    for key, value in sorted((version.slos or {}).items()):
        lines.append(f"  {key}: {value}")
    lines.append("Model policy:")
    for task, route in sorted((version.model_policy or {}).items()):
        lines.append(f"  {task}: {route}")
    lines.append("Policies (Cedar):")
    lines += [f"  {line}" for line in version.policy_text.splitlines()]
    return "\n".join(lines)


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "remove", "same", "hunk"
    text: str


def version_diff(old: BookVersion, new: BookVersion) -> list[DiffLine]:
    lines = []
    for line in difflib.unified_diff(
        version_text(old).splitlines(), version_text(new).splitlines(), lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            lines.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            lines.append(DiffLine("add", line[1:]))
        elif line.startswith("-"):
            lines.append(DiffLine("remove", line[1:]))
        else:
            lines.append(DiffLine("same", line[1:]))
    return lines
