"""Prometheus metrics, served at /metrics (see apps/core/metrics_access.py for who may read them).

Two kinds:
- counted where they happen, in the process they happen in: the gate's decisions and latency,
  and the workers' executions (apps/actions/metrics.py). With several processes on a host
  (gunicorn workers, Celery workers), point PROMETHEUS_MULTIPROC_DIR at one empty folder for
  all of them and each scrape adds them up (prometheus_client's multiprocess mode); without
  it, each process reports its own counts.
- read from the database at scrape time (DatabaseCollector): review queues, queued work, tool
  circuits, kill switches and budgets, so that every web process reports the same figures,
  whichever process did the work. A scrape that cannot reach the database still answers, with
  `escapement_database_up 0`.

The collectors read every app's rows, so they live here, above the apps, with the URL that
serves them. Labels are slugs from the registry and fixed words only: never anything a caller
typed, never a secret, so that neither their number nor their content can be chosen from
outside.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count, Min, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from apps.actions.metrics import COUNTERS
from apps.actions.models import Action, Status, ToolCircuit
from apps.core.metrics_access import metrics_allowed
from apps.killswitches.models import KillSwitch
from apps.registry.models import Tool
from apps.reviews.models import ReviewItem
from apps.runtime.budgets import month_of
from apps.runtime.models import BudgetPeriod

logger = logging.getLogger(__name__)


# --- Read from the database at scrape time ----------------------------------------------------


def _age(oldest: Any, now: float) -> float:
    return max(now - oldest.timestamp(), 0.0) if oldest is not None else 0.0


class DatabaseCollector(Collector):
    """Gauges computed from the database on each scrape, with indexed, grouped queries."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "escapement_database_up", "1 when the scrape could read the database, else 0."
        )
        try:
            families = list(self._families())
        except Exception:  # a scrape must answer even when the database cannot
            logger.warning("metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()

        items = GaugeMetricFamily(
            "escapement_review_items_open", "Open review items, by workflow and kind.",
            labels=["workflow", "kind"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "escapement_review_oldest_open_seconds",
            "Age of the oldest open review item, by workflow.",
            labels=["workflow"],
        )
        overdue = GaugeMetricFamily(
            "escapement_review_items_overdue",
            "Open review items past their SLA deadline, by workflow.",
            labels=["workflow"],
        )
        moment = timezone.now()
        ages: dict[str, float] = {}
        late: dict[str, int] = {}
        for review_row in (
            ReviewItem.objects.filter(state="open")
            .values("workflow__slug", "kind")
            .annotate(
                n=Count("id"),
                first=Min("created_at"),
                late=Count("id", filter=Q(deadline__lt=moment)),
            )
        ):
            slug = review_row["workflow__slug"]
            items.add_metric([slug, review_row["kind"]], review_row["n"])
            ages[slug] = max(ages.get(slug, 0.0), _age(review_row["first"], now))
            late[slug] = late.get(slug, 0) + review_row["late"]
        for slug, age in ages.items():
            oldest.add_metric([slug], age)
            overdue.add_metric([slug], late[slug])
        yield items
        yield oldest
        yield overdue

        waiting = GaugeMetricFamily(
            "escapement_actions_waiting",
            "Actions handed to the workers and not finished: queued (not started) or running, "
            "by workflow.",
            labels=["workflow", "status"],
        )
        waiting_age = GaugeMetricFamily(
            "escapement_actions_oldest_queued_seconds",
            "How long the oldest queued action has waited for a worker, by workflow.",
            labels=["workflow"],
        )
        for action_row in (
            Action.objects.filter(status__in=[Status.QUEUED, Status.RUNNING])
            .values("workflow__slug", "status")
            .annotate(n=Count("id"), first=Min("queued_at"))
        ):
            slug, status = action_row["workflow__slug"], action_row["status"]
            waiting.add_metric([slug, status], action_row["n"])
            if status == Status.QUEUED:
                waiting_age.add_metric([slug], _age(action_row["first"], now))
        yield waiting
        yield waiting_age

        circuits = GaugeMetricFamily(
            "escapement_tool_circuit_open",
            "1 when the tool's circuit breaker is open or half-open (probing), else 0.",
            labels=["tool", "state"],
        )
        states = dict(ToolCircuit.objects.values_list("tool__slug", "state"))
        for slug in Tool.objects.values_list("slug", flat=True):
            state = states.get(slug, ToolCircuit.State.CLOSED)
            circuits.add_metric([slug, state], 0 if state == ToolCircuit.State.CLOSED else 1)
        yield circuits

        switches = GaugeMetricFamily(
            "escapement_kill_switches_engaged",
            "Engaged kill switches, by scope and kind (manual, or quarantine by the firewall).",
            labels=["scope", "kind"],
        )
        for switch_row in (
            KillSwitch.objects.filter(released_at__isnull=True)
            .values("scope", "kind")
            .annotate(n=Count("id"))
        ):
            switches.add_metric([switch_row["scope"], switch_row["kind"]], switch_row["n"])
        yield switches

        spent = GaugeMetricFamily(
            "escapement_budget_used_ratio",
            "This month's model spend plus reservations over the budget's limit (1 = exhausted), "
            "by scope (workflow or agent) and the slug of its owner.",
            labels=["scope", "owner"],
        )
        spent_cents = GaugeMetricFamily(
            "escapement_budget_spent_cents",
            "This month's model spend, in cents of the price table's currency.",
            labels=["scope", "owner"],
        )
        refused = GaugeMetricFamily(
            "escapement_budget_refused_calls",
            "Model calls refused this month because they would have passed the limit.",
            labels=["scope", "owner"],
        )
        for period in BudgetPeriod.objects.filter(month=month_of()).select_related(
            "workflow", "agent"
        ):
            owner = period.workflow if period.scope == "workflow" else period.agent
            labels = [period.scope, owner.slug if owner is not None else ""]
            spent_cents.add_metric(labels, float(period.spent_cents))
            refused.add_metric(labels, period.refused_calls)
            if period.limit_cents:
                used = (period.spent_cents + period.reserved_cents) / period.limit_cents
                spent.add_metric(labels, float(used))
        yield spent
        yield spent_cents
        yield refused


class BrokerCollector(Collector):
    """The number of task messages waiting in the Celery queue (one LLEN)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "escapement_celery_queue_length",
            "Task messages waiting in the broker's queue for a worker.",
            labels=["queue"],
        )
        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        try:
            client = redis.Redis.from_url(
                settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=1
            )
            try:
                family.add_metric([queue], float(client.llen(queue)))
            finally:
                client.close()
        except redis.RedisError:
            logger.warning("metrics: the broker could not be read", exc_info=True)
            return
        yield family


def exposition() -> tuple[bytes, str]:
    """The body and content type of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in COUNTERS:
            registry.register(metric)
    registry.register(DatabaseCollector())
    registry.register(BrokerCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for the addresses and the token the settings allow; 404 when
    neither is configured, so that an unconfigured install exposes nothing."""
    networks = settings.METRICS_ALLOWED_IPS
    token = settings.METRICS_TOKEN
    if not networks and not token:
        raise Http404("metrics are not enabled")
    allowed = metrics_allowed(
        remote_addr=request.META.get("REMOTE_ADDR", ""),
        authorization=request.headers.get("Authorization", ""),
        networks=networks,
        token=token,
    )
    if not allowed:
        return HttpResponse(
            "metrics: this address is not in METRICS_ALLOWED_IPS and no valid METRICS_TOKEN "
            "was sent\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)
