"""SLOs per workflow, from its active Decision Book: measured over rolling weeks, compared with
their targets, and turned into alerts for on-call.

The four measures, over a window (the current one is the last 7 days):
- step latency p95: hosted steps of the workflow's runs that finished in the window, from start
  to end, in milliseconds;
- approval rate: review items decided in the window that were approved (as proposed or edited);
- override rate: of the same items, those a person overrode: supervisor edits, and rejected
  spot checks (actions the policy had allowed);
- human-in-loop rate: actions proposed in the window that the gate held for a person, out of
  those it allowed or held.

A breach opens one alert per workflow and SLO; checking again while it lasts raises nothing new
(a partial unique index guarantees it, even for two checks at once); when the value is back
within target the alert is resolved. The approval and override rates also raise a regression
alert when they move by SLO_REGRESSION_POINTS or more from the previous week. Opening and
resolving are audited."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.books.models import BookVersion
from apps.ledger.models import SloAlert
from apps.registry.models import Workflow

WEEK = timedelta(days=7)
WEEKS = 8


@dataclass(frozen=True)
class SloSpec:
    key: str  # the Decision Book's slos field
    measure: str
    label: str
    upper: bool  # True: the target is a maximum
    unit: str


SPECS: tuple[SloSpec, ...] = (
    SloSpec("step_latency_p95_ms", "latency_p95_ms", "Step latency p95", True, "ms"),
    SloSpec("min_approval_rate", "approval_rate", "Approval rate", False, "rate"),
    SloSpec("max_override_rate", "override_rate", "Override rate", True, "rate"),
    SloSpec("max_human_in_loop_rate", "human_in_loop_rate", "Human-in-loop rate", True, "rate"),
)
REGRESSION_MEASURES = ("approval_rate", "override_rate")


def regression_points() -> float:
    return float(getattr(settings, "SLO_REGRESSION_POINTS", 0.10))


# Measures per (workflow id, week): week 0 is the last 7 days before `now`, week 1 the 7 before.
Measures = dict[tuple[int, int], dict[str, float]]

_LATENCY = """
SELECT r.workflow_id, floor(extract(epoch FROM (%(now)s - s.finished_at)) / 604800)::int AS week,
       percentile_cont(0.95) WITHIN GROUP (
           ORDER BY extract(epoch FROM (s.finished_at - s.started_at)) * 1000)
  FROM runtime_step s JOIN runtime_run r ON r.id = s.run_id
 WHERE s.finished_at > %(since)s AND s.finished_at <= %(now)s AND s.started_at IS NOT NULL
 GROUP BY 1, 2
"""
_REVIEWS = """
SELECT workflow_id, floor(extract(epoch FROM (%(now)s - closed_at)) / 604800)::int AS week,
       count(*),
       count(*) FILTER (WHERE outcome IN ('approve', 'edit_approve')),
       count(*) FILTER (WHERE outcome = 'edit_approve'
                           OR (kind = 'spot_check' AND outcome = 'reject'))
  FROM reviews_reviewitem
 WHERE state = 'decided' AND closed_at > %(since)s AND closed_at <= %(now)s
 GROUP BY 1, 2
"""
_GATE = """
SELECT workflow_id, floor(extract(epoch FROM (%(now)s - created_at)) / 604800)::int AS week,
       count(*) FILTER (WHERE decision IN ('allow', 'hold')),
       count(*) FILTER (WHERE decision = 'hold')
  FROM actions_action
 WHERE created_at > %(since)s AND created_at <= %(now)s
 GROUP BY 1, 2
"""


def slo_measures(now: datetime, weeks: int = WEEKS) -> Measures:
    """Every workflow's four measures for each of the last `weeks` weeks (a measure without
    data in a week is absent)."""
    params = {"now": now, "since": now - WEEK * weeks}
    found: Measures = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(_LATENCY, params)
        for workflow_id, week, p95 in cursor.fetchall():
            found[(workflow_id, week)]["latency_p95_ms"] = float(p95)
        cursor.execute(_REVIEWS, params)
        for workflow_id, week, decided, approved, overridden in cursor.fetchall():
            found[(workflow_id, week)]["approval_rate"] = approved / decided
            found[(workflow_id, week)]["override_rate"] = overridden / decided
        cursor.execute(_GATE, params)
        for workflow_id, week, decided, held in cursor.fetchall():
            if decided:
                found[(workflow_id, week)]["human_in_loop_rate"] = held / decided
    return found


@dataclass
class SloRow:
    spec: SloSpec
    value: float | None
    target: float | None
    trend: list[float | None]  # oldest week first, the current week last

    @property
    def breached(self) -> bool:
        return breached(self.spec, self.value, self.target)


@dataclass
class WorkflowSlos:
    workflow: Workflow
    version: BookVersion
    rows: list[SloRow] = field(default_factory=list)


def breached(spec: SloSpec, value: float | None, target: float | None) -> bool:
    if value is None or target is None:
        return False
    return value > target if spec.upper else value < target


def _books() -> list[BookVersion]:
    return list(
        BookVersion.objects.filter(status=BookVersion.Status.PUBLISHED)
        .select_related("workflow")
        .order_by("workflow__slug")
    )


def slo_dashboard(now: datetime | None = None) -> list[WorkflowSlos]:
    moment = now or timezone.now()
    measures = slo_measures(moment)
    dashboard = []
    for version in _books():
        slos = version.slos or {}
        entry = WorkflowSlos(workflow=version.workflow, version=version)
        for spec in SPECS:
            trend = [
                measures.get((version.workflow_id, week), {}).get(spec.measure)
                for week in reversed(range(WEEKS))
            ]
            target = slos.get(spec.key)
            entry.rows.append(
                SloRow(spec, trend[-1], float(target) if target is not None else None, trend)
            )
        dashboard.append(entry)
    return dashboard


def open_alerts() -> list[SloAlert]:
    return list(SloAlert.objects.filter(state=SloAlert.State.OPEN).select_related("workflow"))


def _format(value: float, unit: str) -> str:
    return f"{value:.0f} ms" if unit == "ms" else f"{value:.1%}"


def _raise(
    *,
    workflow: Workflow,
    slo: str,
    kind: str,
    value: float,
    target: float,
    message: str,
    now: datetime,
) -> SloAlert | None:
    """Open an alert unless one is open already for the same workflow, SLO and kind."""
    if SloAlert.objects.filter(
        workflow=workflow, slo=slo, kind=kind, state=SloAlert.State.OPEN
    ).exists():
        return None
    try:
        with transaction.atomic():
            alert = SloAlert.objects.create(
                workflow=workflow,
                slo=slo,
                kind=kind,
                value=value,
                target=target,
                window_start=now - WEEK,
                window_end=now,
                message=message[:300],
                created_at=now,
            )
            audit_record(
                actor="system:slo",
                verb=f"slo.{'breached' if kind == SloAlert.Kind.BREACH else 'regressed'}",
                target=alert,
                data={"workflow": workflow.slug, "slo": slo, "value": value, "target": target},
            )
    except IntegrityError:
        return None  # another check opened it first
    return alert


def _resolve(
    *, workflow: Workflow, slo: str, kind: str, value: float | None, now: datetime
) -> None:
    with transaction.atomic():
        for alert in SloAlert.objects.select_for_update().filter(
            workflow=workflow, slo=slo, kind=kind, state=SloAlert.State.OPEN
        ):
            alert.state = SloAlert.State.RESOLVED
            alert.resolved_at = now
            alert.save(update_fields=["state", "resolved_at"])
            audit_record(
                actor="system:slo",
                verb="slo.resolved",
                target=alert,
                data={"workflow": workflow.slug, "slo": slo, "value": value},
            )


def slo_check(now: datetime | None = None) -> list[SloAlert]:
    """Compare every workflow's measures with its book's targets and last week; open the
    alerts that are due, resolve those that are over. Returns the alerts opened."""
    moment = now or timezone.now()
    measures = slo_measures(moment, weeks=2)
    opened: list[SloAlert] = []
    points = regression_points()
    for version in _books():
        flow = version.workflow
        current = measures.get((flow.pk, 0), {})
        previous = measures.get((flow.pk, 1), {})
        for spec in SPECS:
            raw = (version.slos or {}).get(spec.key)
            target = float(raw) if raw is not None else None
            value = current.get(spec.measure)
            if breached(spec, value, target):
                assert value is not None
                assert target is not None
                bound = "above its maximum" if spec.upper else "below its minimum"
                alert = _raise(
                    workflow=flow,
                    slo=spec.measure,
                    kind=SloAlert.Kind.BREACH,
                    value=value,
                    target=target,
                    message=f"{flow.slug}: {spec.label} {_format(value, spec.unit)} is {bound} "
                    f"{_format(target, spec.unit)} (last 7 days)",
                    now=moment,
                )
                if alert:
                    opened.append(alert)
            elif value is not None or target is None:
                _resolve(
                    workflow=flow,
                    slo=spec.measure,
                    kind=SloAlert.Kind.BREACH,
                    value=value,
                    now=moment,
                )
        for measure in REGRESSION_MEASURES:
            value, before = current.get(measure), previous.get(measure)
            if value is None or before is None:
                continue
            spec = next(spec for spec in SPECS if spec.measure == measure)
            if abs(value - before) >= points:
                alert = _raise(
                    workflow=flow,
                    slo=measure,
                    kind=SloAlert.Kind.REGRESSION,
                    value=value,
                    target=before,
                    message=f"{flow.slug}: {spec.label} moved from {_format(before, 'rate')} to "
                    f"{_format(value, 'rate')} week on week",
                    now=moment,
                )
                if alert:
                    opened.append(alert)
            else:
                _resolve(
                    workflow=flow,
                    slo=measure,
                    kind=SloAlert.Kind.REGRESSION,
                    value=value,
                    now=moment,
                )
    return opened
