"""The demo world of `make run`: three workflows a real company hands partly to agents, their
tools, agents and published Decision Books. Running it again changes nothing that exists."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from apps.books.models import BookVersion
from apps.books.services import book_publish, draft_create, draft_update
from apps.registry.models import Agent, ModelPrice, Tool, Workflow

DEMO_PORT = 8000
SANDBOX = f"http://127.0.0.1:{DEMO_PORT}/sandbox"
# A demo tool still pointing at the sandbox of `make run` on some port (not repointed by hand).
_LOCAL_SANDBOX = re.compile(r"^http://127\.0\.0\.1:\d+/sandbox(/|$)")


def sandbox_url(port: int) -> str:
    """The demo sandbox's address when `make run` serves on `port`."""
    return f"http://127.0.0.1:{port}/sandbox"


def _pointed_at(url: str, sandbox: str) -> str:
    return _LOCAL_SANDBOX.sub(lambda found: sandbox + found.group(1), url)


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


MONEY = {"type": "integer", "minimum": 1, "description": "amount in minor units (cents)"}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}

TOOLS: list[dict[str, Any]] = [
    {
        "slug": "issue_refund",
        "name": "Issue a refund",
        "description": "Refunds part or all of an order to the customer's original payment method.",
        "input_schema": _schema(
            {
                "order_id": {"type": "string"},
                "amount_cents": MONEY,
                "currency": CURRENCY,
                "reason": {"type": "string", "maxLength": 500},
            },
            ["order_id", "amount_cents", "currency", "reason"],
        ),
        "amount_param": "amount_cents",
        "endpoint_url": f"{SANDBOX}/refunds",
        "undo_endpoint_url": f"{SANDBOX}/refunds/undo",
        "reversible": True,
        "risk_zone": "yellow",
    },
    {
        "slug": "lookup_order",
        "name": "Look up an order",
        "description": "Reads an order and its payments; changes nothing.",
        "input_schema": _schema({"order_id": {"type": "string"}}, ["order_id"]),
        "endpoint_url": f"{SANDBOX}/orders/lookup",
        "reversible": True,
        "undo_endpoint_url": f"{SANDBOX}/noop",
        "risk_zone": "green",
    },
    {
        "slug": "match_invoice",
        "name": "Match an invoice to a purchase order",
        "description": (
            "Marks a supplier invoice as matched to its purchase order; releases it for payment."
        ),
        "input_schema": _schema(
            {
                "invoice_id": {"type": "string"},
                "po_number": {"type": "string"},
                "amount_cents": MONEY,
                "currency": CURRENCY,
            },
            ["invoice_id", "po_number", "amount_cents", "currency"],
        ),
        "amount_param": "amount_cents",
        "endpoint_url": f"{SANDBOX}/invoices/match",
        "undo_endpoint_url": f"{SANDBOX}/invoices/unmatch",
        "reversible": True,
        "risk_zone": "yellow",
    },
    {
        "slug": "flag_discrepancy",
        "name": "Flag an invoice discrepancy",
        "description": "Puts an invoice on hold with a note for the accounts-payable team.",
        "input_schema": _schema(
            {"invoice_id": {"type": "string"}, "note": {"type": "string", "maxLength": 1000}},
            ["invoice_id", "note"],
        ),
        "endpoint_url": f"{SANDBOX}/invoices/flag",
        "undo_endpoint_url": f"{SANDBOX}/invoices/unflag",
        "reversible": True,
        "risk_zone": "green",
    },
    {
        "slug": "grant_access",
        "name": "Grant system access",
        "description": "Gives an employee a role in an internal system for a limited time.",
        "input_schema": _schema(
            {
                "employee_id": {"type": "string"},
                "system": {"type": "string"},
                "role": {"type": "string", "enum": ["viewer", "editor", "admin"]},
                "duration_days": {"type": "integer", "minimum": 1, "maximum": 90},
            },
            ["employee_id", "system", "role", "duration_days"],
        ),
        "endpoint_url": f"{SANDBOX}/access/grant",
        "undo_endpoint_url": f"{SANDBOX}/access/revoke",
        "reversible": True,
        "risk_zone": "yellow",
    },
    {
        "slug": "reset_mfa",
        "name": "Reset multi-factor authentication",
        "description": "Removes an employee's second factor so they can enrol a new device.",
        "input_schema": _schema({"employee_id": {"type": "string"}}, ["employee_id"]),
        "endpoint_url": f"{SANDBOX}/access/reset-mfa",
        "reversible": False,
        "risk_zone": "red",
    },
]

WORKFLOWS: list[dict[str, Any]] = [
    {
        "slug": "refunds",
        "name": "Refund requests",
        "description": "Customer refund requests from the support inbox.",
        "agent": ("refund-bot", "Refund assistant", "low", ["issue_refund", "lookup_order"]),
        "book": {
            "objective": "Refund customers quickly where the order and delivery evidence is clear.",
            "autonomy_mode": "autonomous",
            "tools": [
                {
                    "tool": "issue_refund",
                    "risk_zone": "yellow",
                    "auto_cap": 5000,
                    "hard_cap": 50000,
                },
                {"tool": "lookup_order", "risk_zone": "green"},
            ],
            "confidence_threshold": Decimal("0.8"),
            "spot_check_rate": Decimal("0.1"),
            "sla_minutes": 30,
            "currency": "EUR",
            "per_outcome_cap_cents": 40,
            "monthly_budget_cents": 150000,
            "baseline_minutes": Decimal("6"),
            "data_sources": [
                {"name": "orders database", "freshness_minutes": 5},
                {"name": "carrier tracking", "freshness_minutes": 60},
            ],
            "slos": {
                "step_latency_p95_ms": 2000,
                "min_approval_rate": 0.85,
                "max_override_rate": 0.05,
            },
            "model_policy": {
                "classify_request": {"tier": "small", "escalate_below_confidence": 0.7},
                "draft_reply": {"tier": "frontier"},
            },
        },
    },
    {
        "slug": "invoice-matching",
        "name": "Invoice matching",
        "description": "Three-way matching of supplier invoices to purchase orders and receipts.",
        "agent": (
            "invoice-matcher",
            "Invoice matcher",
            "medium",
            ["match_invoice", "flag_discrepancy"],
        ),
        "book": {
            "objective": "Release correctly matched invoices without a clerk touching them.",
            "autonomy_mode": "constrained",
            "tools": [
                {
                    "tool": "match_invoice",
                    "risk_zone": "green",
                    "auto_cap": 1000000,
                    "hard_cap": 10000000,
                },
                {"tool": "flag_discrepancy", "risk_zone": "green"},
            ],
            "confidence_threshold": Decimal("0.9"),
            "business_hours_start": 7,
            "business_hours_end": 19,
            "weekdays_only": True,
            "sla_minutes": 240,
            "currency": "EUR",
            "monthly_budget_cents": 80000,
            "baseline_minutes": Decimal("9"),
            "data_sources": [{"name": "ERP purchase orders", "freshness_minutes": 15}],
            "slos": {"step_latency_p95_ms": 3000, "min_approval_rate": 0.9},
            "raw_policies": (
                '@id("new-supplier-review")\n'
                '@message("Invoices from suppliers onboarded this month are checked by a person")\n'
                'forbid (principal, action == Action::"execute",\n'
                '        resource == Tool::"match_invoice")\n'
                'when { context.segment == "new-supplier" };\n'
            ),
        },
    },
    {
        "slug": "access-requests",
        "name": "Access requests",
        "description": "Employee requests for access to internal systems, from the service desk.",
        "agent": ("access-bot", "Access request agent", "high", ["grant_access", "reset_mfa"]),
        "book": {
            "objective": "Grant routine, time-limited access fast; people keep anything powerful.",
            "autonomy_mode": "constrained",
            "tools": [
                {"tool": "grant_access", "risk_zone": "green"},
                {"tool": "reset_mfa", "risk_zone": "red"},
            ],
            "confidence_threshold": Decimal("0.85"),
            "red_two_approvers": True,
            "sla_minutes": 60,
            "currency": "EUR",
            "baseline_minutes": Decimal("12"),
            "slos": {"step_latency_p95_ms": 2000, "max_human_in_loop_rate": 0.25},
            "raw_policies": (
                '@id("no-admin-by-agent")\n'
                '@message("Admin roles are never granted by an agent")\n'
                'forbid (principal, action, resource == Tool::"grant_access")\n'
                'when { context.params has role && context.params.role == "admin" };\n\n'
                '@id("short-grants-only")\n'
                '@message("Access longer than 30 days needs a person")\n'
                'forbid (principal, action == Action::"execute",\n'
                '        resource == Tool::"grant_access")\n'
                "when { context.params has duration_days && context.params.duration_days > 30 };\n"
            ),
        },
    },
]

PRICES = [
    ("openai", "gpt-4o-mini", "0.000150", "0.000600"),
    ("openai", "gpt-4o", "0.002500", "0.010000"),
    ("local", "llama-3.1-8b-instruct", "0.000020", "0.000020"),
]


@transaction.atomic
def demo_world_ensure(
    *, author: User, owner: User, escalation_owner: User, sandbox: str = SANDBOX
) -> list[str]:
    """Create what is missing of the demo world; return what was created, for the log.

    The demo tools call the sandbox at `sandbox` (the web server of `make run`, on the port it
    serves); run again with another address, the demo tools that still point at a local
    sandbox are repointed."""
    created: list[str] = []
    for spec in TOOLS:
        urls: dict[str, str] = {
            name: _pointed_at(spec[name], sandbox)
            for name in ("endpoint_url", "undo_endpoint_url")
            if name in spec
        }
        tool, new = Tool.objects.get_or_create(slug=spec["slug"], defaults={**spec, **urls})
        if new:
            created.append(f"tool {spec['slug']}")
            continue
        moved = {
            name: _pointed_at(getattr(tool, name), sandbox)
            for name in urls
            if _pointed_at(getattr(tool, name), sandbox) != getattr(tool, name)
        }
        if moved:
            Tool.objects.filter(pk=tool.pk).update(**moved)
            created.append(f"tool {spec['slug']} pointed at {sandbox}")
    for provider, model, price_in, price_out in PRICES:
        ModelPrice.objects.get_or_create(
            provider=provider,
            model=model,
            defaults={"input_per_1k": Decimal(price_in), "output_per_1k": Decimal(price_out)},
        )
    for spec in WORKFLOWS:
        workflow, new = Workflow.objects.get_or_create(
            slug=spec["slug"], defaults={"name": spec["name"], "description": spec["description"]}
        )
        if new:
            created.append(f"workflow {workflow.slug}")
        slug, name, tier, tools = spec["agent"]
        agent, new = Agent.objects.get_or_create(
            slug=slug, defaults={"name": name, "owner": owner, "risk_tier": tier}
        )
        if new:
            agent.workflows.set([workflow])
            agent.tools.set(Tool.objects.filter(slug__in=tools))
            created.append(f"agent {slug}")
        if not BookVersion.objects.filter(workflow=workflow).exclude(status="draft").exists():
            draft = draft_create(workflow=workflow, user=author)
            values = {**spec["book"], "escalation_owner_id": escalation_owner.pk}
            draft_update(version_id=draft.pk, user=author, values=values)
            book_publish(version_id=draft.pk, user=author, change_note="First version of the book.")
            created.append(f"book {workflow.slug} v1")
    return created
