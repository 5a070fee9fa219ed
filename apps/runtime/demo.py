"""The living demo: hosted agents for the three demo workflows, their deterministic models,
and the demo traffic that gives them work.

The agents are ordinary hosted agents: they read the system of record (the sandbox, over
HTTP), ask the router for model answers and propose through the gate. Their deterministic
models are rules, so the demo works with no model provider; with MODEL_PROVIDER=openai the
small and frontier tiers go to the configured endpoint instead and the prompts below are what
the model reads.

The traffic follows a fixed script, cycling: two pieces of work every DEMO_TRAFFIC_INTERVAL
seconds, so that within a minute of `make run` refunds have run on their own against the
sandbox, held refunds and an MFA reset wait in the review queue, model costs are recorded, and
an access grant for someone who has left the company fails and becomes a fallback item. The
script picks orders that still have a refundable balance and invoices still open, and when the
sandbox runs out of them a customer places a new order or a supplier sends a new invoice."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.registry.models import Agent, ModelPrice, Tool
from apps.runtime.models import AgentBudget, DemoTraffic, Run
from apps.runtime.providers import ModelRequest
from apps.runtime.providers.deterministic import RuleAnswer, deterministic_model
from apps.runtime.services import RunRefused, run_start
from apps.runtime.steps import StepContext, StepFailed, hosted_agent

logger = logging.getLogger(__name__)

DETERMINISTIC_MODEL = "rules-v1"
_http = urllib3.PoolManager(num_pools=2, maxsize=4, retries=False)


# --- Reading the system of record --------------------------------------------------------------


def _sandbox_read(ctx: StepContext, tool: str, params: dict[str, Any]) -> dict[str, Any]:
    """Read from the sandbox at the address of a read-only tool (no action: nothing changes)."""
    found = Tool.objects.filter(slug=tool).values_list("endpoint_url", "credential_secret").first()
    if found is None or not found[0]:
        raise StepFailed(f"tool {tool} is not registered, so its system cannot be read")
    url, credential = found
    # The read carries the tool's credential, as its calls through the connector do.
    headers = {"Content-Type": "application/json"}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    timeout = max(min(5.0, ctx.remaining()), 0.1)
    try:
        response = _http.request(
            "POST",
            url,
            body=json.dumps(params).encode(),
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
    except urllib3.exceptions.HTTPError as exc:
        raise ConnectionError(f"reading {tool} failed: {type(exc).__name__}") from None
    body = json.loads(response.data or b"null")
    if response.status >= 400 or not isinstance(body, dict) or not body.get("ok"):
        error = body.get("error") if isinstance(body, dict) else None
        raise StepFailed(f"reading {tool} was refused ({response.status}): {error}")
    result: dict[str, Any] = body["result"]
    return result


# --- Deterministic models ------------------------------------------------------------------------

TIER_BONUS = {"deterministic": 0.0, "small": 0.0, "frontier": 0.15}
CLEAR_REASONS = ("damaged", "broken", "never arrived", "missing", "charged twice", "defective")
WEAK_REASONS = ("changed my mind", "don't like", "not what i expected", "too late")


@deterministic_model("classify_request", model=DETERMINISTIC_MODEL)
def classify_request(request: ModelRequest) -> RuleAnswer:
    text = request.messages[-1]["content"].lower()
    if any(reason in text for reason in CLEAR_REASONS):
        intent, confidence = "refund", 0.92
    elif any(reason in text for reason in WEAK_REASONS):
        intent, confidence = "refund", 0.6
    elif "refund" in text or "money back" in text:
        intent, confidence = "refund", 0.75
    else:
        intent, confidence = "other", 0.5
    confidence = min(0.99, confidence + TIER_BONUS.get(request.tier, 0.0))
    data = {"intent": intent, "confidence": round(confidence, 2)}
    return RuleAnswer(json.dumps(data), confidence=confidence, data=data)


@deterministic_model("draft_reply", model=DETERMINISTIC_MODEL)
def draft_reply(request: ModelRequest) -> RuleAnswer:
    outcome = str(request.context.get("outcome", ""))
    amount = request.context.get("amount", "")
    replies = {
        "succeeded": f"Your refund of {amount} is on its way to your original payment method.",
        "queued": f"Your refund of {amount} has been approved and is being paid.",
        "pending_review": "A colleague is checking your request; you will hear from us today.",
        "rejected": "We looked at your request carefully and cannot refund this order.",
        "denied": "This request needs a specialist; we have passed it on.",
        "failed": "We hit a problem paying your refund; a colleague will follow up.",
    }
    text = replies.get(outcome, "Thank you for your message; we are looking into it.")
    return RuleAnswer(f"Hello,\n\n{text}\n\nKind regards,\nCustomer care", confidence=0.9)


@deterministic_model("classify_access", model=DETERMINISTIC_MODEL)
def classify_access(request: ModelRequest) -> RuleAnswer:
    text = request.messages[-1]["content"].lower()
    if "lost" in text and "phone" in text:
        data: dict[str, Any] = {"request": "reset_mfa", "confidence": 0.9}
    else:
        data = {"request": "grant_access", "confidence": 0.93}
    return RuleAnswer(json.dumps(data), confidence=float(data["confidence"]), data=data)


@deterministic_model("check_invoice", model=DETERMINISTIC_MODEL)
def check_invoice(request: ModelRequest) -> RuleAnswer:
    billed = request.context.get("amount_cents")
    ordered = request.context.get("po_amount_cents")
    matches = billed is not None and billed == ordered
    data = {"matches": matches, "confidence": 0.95 if matches else 0.92}
    return RuleAnswer(json.dumps(data), confidence=float(data["confidence"]), data=data)


# --- Hosted agents -------------------------------------------------------------------------------

refunds = hosted_agent("refunds", agent="refund-bot")
access = hosted_agent("access-requests", agent="access-bot")
invoices = hosted_agent("invoice-matching", agent="invoice-matcher")

CLASSIFY_SYSTEM = (
    "You triage customer refund requests for an online shop. Answer with one JSON object "
    'only: {"intent": "refund" or "other", "confidence": a number from 0 to 1}.'
)
REPLY_SYSTEM = "Write a short, friendly reply to the customer about their refund request."
ACCESS_SYSTEM = (
    "You read employee access requests. Answer with one JSON object only: "
    '{"request": "grant_access" or "reset_mfa", "confidence": a number from 0 to 1}.'
)
INVOICE_SYSTEM = (
    "You check a supplier invoice against its purchase order. Answer with one JSON object "
    'only: {"matches": true or false, "confidence": a number from 0 to 1}.'
)


def _confidence(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@refunds.step("triage", time_budget=20, max_retries=2)
def refunds_triage(ctx: StepContext) -> dict[str, Any]:
    """Read the ticket and the order, classify the request, propose the refund."""
    order_id = str(ctx.input["order_id"])
    wanted = int(ctx.input["amount_cents"])
    order = _sandbox_read(ctx, "lookup_order", {"order_id": order_id})["order"]
    answer = ctx.ask(
        "classify_request", str(ctx.input["ticket"]), system=CLASSIFY_SYSTEM, context=order
    )
    refundable = int(order["refundable_cents"])
    amount = min(wanted, refundable) if refundable > 0 else wanted
    intent = (answer.data or {}).get("intent", "refund")
    if answer.needs_human or intent != "refund":
        confidence = None
    else:
        confidence = _confidence(answer.confidence)
    action = ctx.propose(
        "issue_refund",
        {
            "order_id": order_id,
            "amount_cents": amount,
            "currency": order["currency"],
            "reason": str(ctx.input.get("reason", "customer request"))[:500],
        },
        subject=f"order:{order_id}",
        confidence=confidence,
        reasoning=f"ticket classified as {intent} at the {answer.tier} tier; "
        f"{refundable} of {order['total_cents']} {order['currency']} still refundable",
        evidence=[{"source": "orders", "order": order_id, "refundable_cents": refundable}],
        segment=str(order.get("segment", "")),
    )
    return {
        "intent": intent,
        "tier": answer.tier,
        "confidence": answer.confidence,
        "amount_cents": amount,
        "action": str(action.pk),
        "decision": action.decision,
    }


@refunds.step("reply", time_budget=15, max_retries=2)
def refunds_reply(ctx: StepContext) -> dict[str, Any]:
    """Draft the customer's reply once the refund is decided."""
    earlier = ctx.earlier_actions()
    outcome = earlier[-1].status if earlier else "none"
    amount = ctx.earlier.get("triage", {}).get("amount_cents", 0)
    answer = ctx.ask(
        "draft_reply",
        f"Ticket: {ctx.input['ticket']}\nOutcome of the refund: {outcome}",
        system=REPLY_SYSTEM,
        context={"outcome": outcome, "amount": f"{Decimal(amount) / 100:.2f} EUR"},
    )
    return {"outcome": outcome, "reply": answer.text}


@access.step("decide", time_budget=20, max_retries=2)
def access_decide(ctx: StepContext) -> dict[str, Any]:
    """Read the request and propose the grant (or the MFA reset) it asks for."""
    answer = ctx.ask("classify_access", str(ctx.input["ticket"]), system=ACCESS_SYSTEM)
    wanted = (answer.data or {}).get("request", "grant_access")
    employee = str(ctx.input["employee_id"])
    if wanted == "reset_mfa":
        params: dict[str, Any] = {"employee_id": employee}
        tool = "reset_mfa"
    else:
        tool = "grant_access"
        params = {
            "employee_id": employee,
            "system": str(ctx.input["system"]),
            "role": str(ctx.input["role"]),
            "duration_days": int(ctx.input["duration_days"]),
        }
    action = ctx.propose(
        tool,
        params,
        subject=f"employee:{employee}",
        confidence=None if answer.needs_human else _confidence(answer.confidence),
        reasoning=f"service desk ticket read as {wanted} at the {answer.tier} tier",
    )
    return {"request": wanted, "action": str(action.pk), "decision": action.decision}


@invoices.step("match", time_budget=20, max_retries=2)
def invoices_match(ctx: StepContext) -> dict[str, Any]:
    """Compare the invoice with its purchase order and propose the match."""
    billed = int(ctx.input["amount_cents"])
    ordered = int(ctx.input["po_amount_cents"])
    answer = ctx.ask(
        "check_invoice",
        f"Invoice {ctx.input['invoice_id']} bills {billed} cents against purchase order "
        f"{ctx.input['po_number']} for {ordered} cents.",
        system=INVOICE_SYSTEM,
        context={"amount_cents": billed, "po_amount_cents": ordered},
    )
    action = ctx.propose(
        "match_invoice",
        {
            "invoice_id": str(ctx.input["invoice_id"]),
            "po_number": str(ctx.input["po_number"]),
            "amount_cents": billed,
            "currency": "EUR",
        },
        subject=f"invoice:{ctx.input['invoice_id']}",
        confidence=None if answer.needs_human else _confidence(answer.confidence),
        reasoning=f"invoice checked against the purchase order at the {answer.tier} tier",
        segment=str(ctx.input.get("segment", "")),
    )
    return {"matches": (answer.data or {}).get("matches"), "action": str(action.pk)}


# --- Demo traffic --------------------------------------------------------------------------------

RUNS_PER_TICK = 2


@dataclass(frozen=True)
class Scenario:
    workflow: str
    kind: str
    values: dict[str, Any]


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
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "employee_id": "E-101",
            "system": "jira",
            "role": "viewer",
            "duration_days": 14,
            "ticket": "Please give Maya Fischer viewer access to jira for two weeks.",
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
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "employee_id": "E-103",
            "ticket": "Leila Nasser lost her phone and needs her MFA reset to enrol a new one. "
            "Her desk line is 0151 234 5678.",
        },
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
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "employee_id": "E-106",
            "system": "github",
            "role": "editor",
            "duration_days": 7,
            "ticket": "Victor Hale needs editor access to github for a week.",
        },
    ),
    Scenario("invoice-matching", "invoice", {"mismatch": False}),
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 1500,
            "reason": "never arrived",
            "ticket": "My order never arrived. Please refund 15.00 EUR to my account.",
        },
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "employee_id": "E-104",
            "system": "salesforce",
            "role": "admin",
            "duration_days": 3,
            "ticket": "Tomasz Nowak asks for admin on salesforce for three days.",
        },
    ),
    Scenario("invoice-matching", "invoice", {"mismatch": True}),
    Scenario(
        "refunds",
        "refund",
        {
            "amount_cents": 200000,
            "reason": "whole order returned",
            "ticket": "I am returning the whole order and want my money back: 2,000.00 EUR. "
            "IBAN DE89 3704 0044 0532 0130 00.",
        },
    ),
    Scenario(
        "access-requests",
        "access",
        {
            "employee_id": "E-102",
            "system": "netsuite",
            "role": "editor",
            "duration_days": 14,
            "ticket": "Jonas Berg needs editor on netsuite for the quarter close.",
        },
    ),
)


def _refund_work(values: dict[str, Any], turn: int) -> tuple[str, dict[str, Any]]:
    from apps.sandbox.models import Order, Segment

    amount = int(values["amount_cents"])
    # The script's 2,000 EUR refund is meant to be denied: any order will do.
    need = min(amount, 50000)
    candidates = list(
        Order.objects.filter(total_cents__gte=F("refunded_cents") + need).order_by("id")
    )
    if candidates:
        order = candidates[turn % len(candidates)]
    else:
        number = Order.objects.count() + 1001
        order = Order.objects.create(
            id=str(number),
            customer=f"Demo customer {number}",
            segment=Segment.RETAIL,
            currency="EUR",
            total_cents=max(need * 2, 10000),
        )
    ticket = str(values["ticket"]).format(email=f"customer{order.pk}@example.com")
    return f"order:{order.pk}", {
        "order_id": order.pk,
        "amount_cents": amount,
        "reason": values["reason"],
        "ticket": f"Ticket about order {order.pk}: {ticket}",
    }


def _invoice_work(values: dict[str, Any], turn: int) -> tuple[str, dict[str, Any]]:
    from apps.sandbox.models import Invoice

    invoice = Invoice.objects.filter(status=Invoice.Status.OPEN).order_by("id").first()
    if invoice is None:
        number = Invoice.objects.count() + 2001
        invoice = Invoice.objects.create(
            id=f"INV-{number}",
            supplier="Demo supplier",
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


def demo_work(turn: int) -> tuple[Scenario, str, dict[str, Any]]:
    """The piece of demo work number `turn` of the script: its scenario, subject and input."""
    scenario = SCRIPT[turn % len(SCRIPT)]
    if scenario.kind == "refund":
        subject, values = _refund_work(scenario.values, turn // len(SCRIPT))
    elif scenario.kind == "invoice":
        subject, values = _invoice_work(scenario.values, turn // len(SCRIPT))
    else:
        values = dict(scenario.values)
        subject = f"employee:{values['employee_id']}"
    return scenario, subject, values


def demo_traffic_state() -> DemoTraffic:
    return DemoTraffic.objects.get_or_create(pk=DemoTraffic.SINGLETON)[0]


def demo_traffic_set(*, paused: bool, by: str) -> DemoTraffic:
    state = demo_traffic_state()
    DemoTraffic.objects.filter(pk=state.pk).update(paused=paused, paused_by=by if paused else "")
    state.refresh_from_db()
    return state


def demo_traffic_tick(*, count: int = RUNS_PER_TICK) -> list[Run]:
    """Start the next `count` pieces of demo work, unless the demo traffic is off or paused or
    the demo world is missing."""
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
    started = []
    for turn in range(first, first + count):
        scenario, subject, values = demo_work(turn)
        try:
            run = run_start(
                workflow=scenario.workflow, subject=subject, input=values, source="demo"
            )
        except RunRefused as exc:
            logger.info("demo work %d not started: %s", turn, exc.message)
            continue
        started.append(run)
    return started


# --- Seeding -------------------------------------------------------------------------------------

# The demo prices its rules as a small hosted model would cost, so that its budgets and cost
# records have figures to show (USD per 1,000 tokens).
DEMO_PRICE = ("deterministic", DETERMINISTIC_MODEL, Decimal("0.010000"), Decimal("0.030000"))
AGENT_BUDGETS = {"refund-bot": 20_000, "access-bot": 10_000, "invoice-matcher": 10_000}


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _local_sandbox(url: str) -> bool:
    where = urlsplit(url)
    return where.hostname in LOOPBACK_HOSTS and where.path.startswith("/sandbox/")


def demo_tools_credential_ensure() -> list[str]:
    """Give the demo tools that call the sandbox on this machine its credential (SANDBOX_TOKEN),
    as a system of record's administrator hands one to a connector. The token is never sent
    anywhere but to the sandbox: a tool with any address elsewhere does not get it, and loses it
    if it was pointed elsewhere since."""
    token: str = settings.SANDBOX_TOKEN
    changed: list[str] = []
    for tool in Tool.objects.filter(connector=Tool.Connector.HTTP).order_by("slug"):
        urls = [url for url in (tool.endpoint_url, tool.undo_endpoint_url) if url]
        local = bool(urls) and all(_local_sandbox(url) for url in urls)
        if local and tool.credential_secret != token:
            Tool.objects.filter(pk=tool.pk).update(credential_secret=token)
            changed.append(f"tool {tool.slug} given the sandbox's credential")
        elif not local and token and tool.credential_secret == token:
            Tool.objects.filter(pk=tool.pk).update(credential_secret="")
            changed.append(f"tool {tool.slug} no longer calls the sandbox: credential removed")
    return changed


def demo_runtime_ensure() -> list[str]:
    """The demo's model price, agent budgets and the demo tools' sandbox credential; return
    what was created, for the log."""
    created: list[str] = demo_tools_credential_ensure()
    provider, model, price_in, price_out = DEMO_PRICE
    _, new = ModelPrice.objects.get_or_create(
        provider=provider,
        model=model,
        defaults={"input_per_1k": price_in, "output_per_1k": price_out},
    )
    if new:
        created.append(f"model price {provider}/{model}")
    for slug, limit in AGENT_BUDGETS.items():
        agent = Agent.objects.filter(slug=slug).first()
        if agent is None:
            continue
        _, new = AgentBudget.objects.get_or_create(
            agent=agent, defaults={"monthly_limit_cents": limit}
        )
        if new:
            created.append(f"budget of {slug}")
    demo_traffic_state()
    return created
