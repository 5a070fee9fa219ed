"""The living demo: hosted agents for the three demo workflows and their deterministic models
(RUNTIME_AGENT_MODULES names this module); the demo traffic that gives them work is in
traffic.py.

The agents are ordinary hosted agents: they read the system of record (the sandbox, over
HTTP), ask the router for model answers and propose through the gate. Their deterministic
models are rules, so the demo works with no model provider; with MODEL_PROVIDER=openai the
small and frontier tiers go to the configured endpoint instead and the prompts below are what
the model reads."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.conf import settings

from apps.registry.models import Agent, ModelPrice, Tool
from apps.runtime.models import AgentBudget
from apps.runtime.providers import ModelRequest
from apps.runtime.providers.deterministic import RuleAnswer, deterministic_model
from apps.runtime.steps import StepContext, StepFailed, hosted_agent
from apps.runtime.traffic_switch import demo_traffic_state

logger = logging.getLogger(__name__)

DETERMINISTIC_MODEL = "rules-v1"
# The source of the runs the demo traffic starts.
DEMO_SOURCE = "demo"
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
    """Compare the invoice with its purchase order; propose the match when they agree, and
    put the invoice on hold with a note for accounts payable when they do not."""
    invoice_id = str(ctx.input["invoice_id"])
    billed = int(ctx.input["amount_cents"])
    ordered = int(ctx.input["po_amount_cents"])
    answer = ctx.ask(
        "check_invoice",
        f"Invoice {invoice_id} bills {billed} cents against purchase order "
        f"{ctx.input['po_number']} for {ordered} cents.",
        system=INVOICE_SYSTEM,
        context={"amount_cents": billed, "po_amount_cents": ordered},
    )
    matches = bool((answer.data or {}).get("matches"))
    if matches:
        tool = "match_invoice"
        params: dict[str, Any] = {
            "invoice_id": invoice_id,
            "po_number": str(ctx.input["po_number"]),
            "amount_cents": billed,
            "currency": "EUR",
        }
    else:
        tool = "flag_discrepancy"
        params = {
            "invoice_id": invoice_id,
            "note": f"Billed {Decimal(billed) / 100:.2f} EUR against purchase order "
            f"{ctx.input['po_number']} for {Decimal(ordered) / 100:.2f} EUR: please check "
            "with the supplier before paying.",
        }
    action = ctx.propose(
        tool,
        params,
        subject=f"invoice:{invoice_id}",
        confidence=None if answer.needs_human else _confidence(answer.confidence),
        reasoning=f"invoice checked against the purchase order at the {answer.tier} tier: "
        + ("amounts agree" if matches else "amounts differ"),
        segment=str(ctx.input.get("segment", "")),
    )
    return {"matches": matches, "action": str(action.pk)}


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
