"""The demo traffic of `make run`: what the demo agents are asked to do.

Every DEMO_TRAFFIC_INTERVAL seconds the scheduler (tasks.py) starts the next two pieces of a
fixed script (agents.py holds the agents that carry them out). The first pass through the script
runs every scenario, so that within a minute of `make run` refunds have run on their own against
the sandbox, held refunds and an MFA reset wait in the review queue, model costs are recorded,
policies have denied an admin grant and a 2,000 EUR refund, and a grant for someone who has left
the company has failed into a fallback item. Later passes keep a rhythm a real team would see:
routine work every pass or two, held work every few, denials and failures rarely.

The traffic is meant to stay believable for hours, so it keeps to four rules:

- one piece of work per business event: an order, invoice or employee with demo work still in
  flight (a run not finished, or an item open in the queue) is not picked again; a new order or
  invoice arrives when every suitable one is busy;
- at most OPEN_ITEMS_CAP open demo items per workflow: past that the workflow gets no new demo
  work until its queue goes down;
- the behavioural firewall never has reason to quarantine a demo agent: the work a book is
  expected to deny is asked for at most once per firewall denial window per agent
  (FIREWALL_DENIALS denials in FIREWALL_DENIAL_WINDOW_SECONDS quarantine an agent), the agents
  propose only their own tools, and the traffic's rate is far below FIREWALL_RATE_FLOOR;
- two supervisors on duty decide the demo items nobody has claimed for a few minutes
  (colleagues.py), so that the queue goes down again by itself."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from apps.actions.models import Action, Status
from apps.demo.agents import DEMO_SOURCE
from apps.demo.colleagues import demo_colleagues_work
from apps.reviews.models import ReviewItem
from apps.reviews.models import State as ReviewState
from apps.runtime.models import DemoTraffic, Run
from apps.runtime.services import RunRefused, run_start
from apps.runtime.steps import hosted_agent_of
from apps.runtime.traffic_switch import demo_traffic_state
from apps.sandbox.models import Employee, Invoice, Order, Segment

logger = logging.getLogger(__name__)

RUNS_PER_TICK = 2
# Open demo items a workflow's queue may hold before the demo stops giving it work: a queue a
# person can work through, whatever the hour.
OPEN_ITEMS_CAP = 10
# A run waiting for a person has its item open in the queue, which makes its subject busy.
BUSY_RUNS = (Run.State.QUEUED, Run.State.RUNNING)


@dataclass(frozen=True)
class Scenario:
    """One line of the script. `every`: after the first pass, the line runs on every n-th
    pass only. `denied`: the workflow's book forbids it (the firewall counts such denials)."""

    workflow: str
    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    every: int = 1
    denied: bool = False


SCRIPT: tuple[Scenario, ...] = (
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 3000,
            "reason": "parcel arrived damaged",
            "ticket": "Hi, my parcel arrived damaged (photo attached). Please refund 30.00 EUR. "
            "You can reach me at {email}.",
        },
        every=2,
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "systems": ("jira", "zendesk", "looker"),
            "role": "viewer",
            "duration_days": 14,
            "ticket": "Please give {name} viewer access to {system} for two weeks.",
        },
    ),
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 24000,
            "reason": "items missing from the delivery",
            "ticket": "Two items were missing from my delivery, I would like 240.00 EUR back. "
            "Call me on +44 20 7946 0958 if you need details.",
        },
        every=4,
    ),
    Scenario(
        "access-requests",
        "mfa",
        {
            "ticket": "{name} lost their phone and needs their MFA reset to enrol a new one. "
            "Their desk line is 0151 234 5678.",
        },
        every=10,
    ),
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 4500,
            "reason": "changed their mind",
            "ticket": "I changed my mind about the jacket, can I get 45.00 EUR back? I paid with "
            "card 4111 1111 1111 1111.",
        },
        every=3,
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "left": True,
            "systems": ("github",),
            "role": "editor",
            "duration_days": 7,
            "ticket": "{name} needs editor access to {system} for a week.",
        },
        every=10,
    ),
    Scenario("invoice-matching", "invoice", {"mismatch": False}, every=3),
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 1500,
            "reason": "never arrived",
            "ticket": "My order never arrived. Please refund 15.00 EUR to my account.",
        },
        every=4,
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "systems": ("salesforce", "aws"),
            "role": "admin",
            "duration_days": 3,
            "ticket": "{name} asks for admin on {system} for three days.",
        },
        every=5,
        denied=True,
    ),
    Scenario("invoice-matching", "invoice", {"mismatch": True}, every=6),
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 200000,
            "reason": "whole order returned",
            "ticket": "I am returning the whole order and want my money back: 2,000.00 EUR. "
            "IBAN DE89 3704 0044 0532 0130 00.",
        },
        every=5,
        denied=True,
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "systems": ("netsuite", "github", "jira"),
            "role": "editor",
            "duration_days": 14,
            "ticket": "{name} needs editor on {system} for the quarter close.",
        },
        every=2,
    ),
)

# Who places new orders and sends new invoices once the seeded ones are used up.
CUSTOMERS = (
    "Uma Bergstrom", "Vikram Shah", "Wen Li", "Xavier Dubois", "Yara Haddad", "Zofia Kowalska",
    "Aiden Murphy", "Bea Lindqvist", "Carlos Mendes", "Dana Cohen", "Emeka Obi", "Freya Holm",
)  # fmt: skip
SUPPLIERS = (
    "Kiln Ceramics", "Lumen Lighting", "Meridian Couriers", "Nimbus Hosting", "Oakridge Timber",
    "Pillar Security", "Quarry Stone Works", "Riverside Linen",
)  # fmt: skip


@dataclass(frozen=True)
class Work:
    scenario: Scenario
    subject: str
    values: dict[str, Any]


class Skip(Exception):
    """This piece of work is not started now; the message says why (for the log)."""


# --- Subjects ------------------------------------------------------------------------------------


def busy_subjects(workflow: str) -> set[str]:
    """The subjects of `workflow` with demo work in flight: a run not finished, or an item open
    in the queue. A business event is handled once; its subject is not picked again meanwhile."""
    runs = Run.objects.filter(workflow__slug=workflow, source=DEMO_SOURCE, state__in=BUSY_RUNS)
    items = ReviewItem.objects.filter(workflow__slug=workflow, state=ReviewState.OPEN)
    return set(runs.values_list("subject", flat=True)) | set(
        items.values_list("action__subject", flat=True)
    )


def _rotate(candidates: list[Any], turn: int) -> Any:
    return candidates[turn % len(candidates)]


def _refund_work(values: dict[str, Any], turn: int, busy: set[str]) -> tuple[str, dict[str, Any]]:
    amount = int(values["amount_cents"])
    # The script's 2,000 EUR refund is meant to be denied: any order will do.
    need = min(amount, 50000)
    candidates = [
        order
        for order in Order.objects.filter(total_cents__gte=F("refunded_cents") + need).order_by(
            "id"
        )
        if f"order:{order.pk}" not in busy
    ]
    if candidates:
        order = _rotate(candidates, turn)
    else:
        # A customer places a new order (the count of orders names it: ids are never reused).
        number = Order.objects.count() + 1001
        while Order.objects.filter(pk=str(number)).exists():
            number += 1
        order = Order.objects.create(
            id=str(number),
            customer=CUSTOMERS[number % len(CUSTOMERS)],
            segment=Segment.RETAIL,
            currency="EUR",
            total_cents=max(need * 2, 10000) + (number % 9) * 1250,
        )
    ticket = str(values["ticket"]).format(email=f"customer{order.pk}@example.com")
    return f"order:{order.pk}", {
        "order_id": order.pk,
        "amount_cents": amount,
        "reason": values["reason"],
        "ticket": f"Ticket about order {order.pk}: {ticket}",
    }


def _access_work(
    kind: str, values: dict[str, Any], turn: int, busy: set[str]
) -> tuple[str, dict[str, Any]]:
    left = bool(values.get("left"))
    employees = [
        employee
        for employee in Employee.objects.filter(active=not left).order_by("id")
        if f"employee:{employee.pk}" not in busy
    ]
    if not employees:
        raise Skip("every employee it could be about has a request in flight")
    employee = _rotate(employees, turn)
    if kind == "mfa":
        work: dict[str, Any] = {"employee_id": employee.pk}
        ticket = str(values["ticket"]).format(name=employee.name)
    else:
        system = _rotate(list(values["systems"]), turn)
        work = {
            "employee_id": employee.pk,
            "system": system,
            "role": values["role"],
            "duration_days": values["duration_days"],
        }
        ticket = str(values["ticket"]).format(name=employee.name, system=system)
    return f"employee:{employee.pk}", {**work, "ticket": ticket}


def _invoice_work(values: dict[str, Any], busy: set[str]) -> tuple[str, dict[str, Any]]:
    invoice = next(
        (
            invoice
            for invoice in Invoice.objects.filter(status=Invoice.Status.OPEN).order_by("id")
            if f"invoice:{invoice.pk}" not in busy
        ),
        None,
    )
    if invoice is None:
        # A supplier sends a new invoice.
        number = Invoice.objects.count() + 2001
        while Invoice.objects.filter(pk=f"INV-{number}").exists():
            number += 1
        invoice = Invoice.objects.create(
            id=f"INV-{number}",
            supplier=SUPPLIERS[number % len(SUPPLIERS)],
            po_number=f"PO-{number + 5000}",
            amount_cents=10000 + (number % 7) * 1000,
            currency="EUR",
        )
    billed = invoice.amount_cents + (1500 if values["mismatch"] else 0)
    return f"invoice:{invoice.pk}", {
        "invoice_id": invoice.pk,
        "po_number": invoice.po_number,
        "amount_cents": billed,
        "po_amount_cents": invoice.amount_cents,
    }


# --- What may be started -------------------------------------------------------------------------


def open_demo_items(workflow: str) -> QuerySet[ReviewItem]:
    """The open items of `workflow`'s queue that demo work put there."""
    return ReviewItem.objects.filter(
        workflow__slug=workflow,
        state=ReviewState.OPEN,
        action__runtime_step__step__run__source=DEMO_SOURCE,
    )


def demo_queue_load(workflow: str) -> int:
    """The open demo items of `workflow`'s queue, and the demo work that may still open one:
    runs not yet at the gate, actions not yet executed (a spot check or a fallback to come)."""
    runs = Run.objects.filter(workflow__slug=workflow, source=DEMO_SOURCE, state__in=BUSY_RUNS)
    actions = Action.objects.filter(
        workflow__slug=workflow,
        status__in=(Status.QUEUED, Status.RUNNING),
        runtime_step__step__run__source=DEMO_SOURCE,
    )
    return open_demo_items(workflow).count() + runs.count() + actions.count()


def _denial_allowed(workflow: str, now: datetime) -> bool:
    """Whether the agent of `workflow` may be denied once more without coming near the
    firewall's limit: no denial of it within the firewall's denial window."""
    if settings.FIREWALL_DENIALS < 2:
        return False  # a single denial would quarantine the agent
    hosted = hosted_agent_of(workflow)
    if hosted is None:
        return False
    window = timedelta(seconds=settings.FIREWALL_DENIAL_WINDOW_SECONDS)
    return not Action.objects.filter(
        agent__slug=hosted.agent, status=Status.DENIED, created_at__gt=now - window
    ).exists()


def demo_work(turn: int, *, now: datetime | None = None) -> Work:
    """The piece of demo work number `turn`: its scenario, subject and input. Raises Skip when
    it is not to be started now (not on this pass, its queue full, a denial too soon, nobody
    free to be its subject)."""
    scenario = SCRIPT[turn % len(SCRIPT)]
    rounds = turn // len(SCRIPT)
    if rounds % scenario.every:
        raise Skip(f"runs every {scenario.every} passes of the script")
    if demo_queue_load(scenario.workflow) >= OPEN_ITEMS_CAP:
        raise Skip(f"the {scenario.workflow} queue is full ({OPEN_ITEMS_CAP} open demo items)")
    if scenario.denied and not _denial_allowed(scenario.workflow, now or timezone.now()):
        raise Skip("its agent was denied within the firewall's window")
    busy = busy_subjects(scenario.workflow)
    if scenario.kind == "refund":
        subject, values = _refund_work(scenario.values, rounds, busy)
    elif scenario.kind == "invoice":
        subject, values = _invoice_work(scenario.values, busy)
    else:
        subject, values = _access_work(scenario.kind, scenario.values, rounds, busy)
    return Work(scenario, subject, values)


# --- The tick ------------------------------------------------------------------------------------


def _start(turns: Iterable[int]) -> list[Run]:
    started = []
    for turn in turns:
        try:
            work = demo_work(turn)
        except Skip as skipped:
            logger.debug("demo work %d skipped: %s", turn, skipped)
            continue
        try:
            run = run_start(
                workflow=work.scenario.workflow,
                subject=work.subject,
                input=work.values,
                source=DEMO_SOURCE,
            )
        except RunRefused as exc:
            logger.info("demo work %d not started: %s", turn, exc.message)
            continue
        started.append(run)
    return started


def demo_traffic_tick(*, count: int = RUNS_PER_TICK) -> list[Run]:
    """The colleagues decide what has waited long enough, then the next `count` pieces of
    demo work start (those the rules above let through), unless the demo traffic is off or
    paused. Returns the runs started."""
    if not settings.DEMO_TRAFFIC:
        return []
    demo_traffic_state()
    with transaction.atomic():
        state = DemoTraffic.objects.select_for_update().get(pk=DemoTraffic.SINGLETON)
        if state.paused:
            return []
        first = state.counter
        state.counter = first + count
        state.last_tick_at = timezone.now()
        state.save(update_fields=["counter", "last_tick_at"])
    demo_colleagues_work()
    return _start(range(first, first + count))
