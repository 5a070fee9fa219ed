"""manage.py create_agent_key: prints the key once, refuses bad input in one line."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.registry.models import Agent, AgentKey
from apps.registry.services import agent_key_authenticate, key_workflow_slugs
from tests.factories import make_workflow

pytestmark = pytest.mark.django_db


def run(*args: str) -> dict[str, str]:
    """Run the command; its output as {label: value} for the `label: value` lines."""
    out = StringIO()
    call_command("create_agent_key", *args, stdout=out)
    lines = out.getvalue().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line) | {"_all": out.getvalue()}


def test_create_agent_key__all_options__prints_a_working_key_once(agent: Agent) -> None:
    # When a key is made with a label, an expiry and a scope
    before = timezone.now()
    shown = run(
        "refund-bot", "--expires-in", "30", "--label", "prod runner", "--workflow", "refunds"
    )
    # Then the printed key works, and the other lines describe it
    record = agent_key_authenticate(shown["key"])
    assert record.agent == agent
    assert record.label == "prod runner"
    assert shown["prefix"] == record.prefix
    assert record.expires_at is not None
    assert before + timedelta(days=30) <= record.expires_at <= timezone.now() + timedelta(days=30)
    assert shown["expires"] == f"{record.expires_at:%Y-%m-%d %H:%M} UTC"
    assert shown["scope"] == "refunds"
    assert key_workflow_slugs(record) == {"refunds"}
    assert shown["_all"].startswith("created a key for refund-bot\n")
    assert shown["_all"].count(shown["key"]) == 1
    # And it is audited as the command line, without the key
    event = AuditEvent.objects.get(verb="agent_key.created")
    assert (event.actor_type, event.actor) == ("system", "system:cli")
    assert event.payload["workflows"] == ["refunds"]
    assert shown["key"] not in str(event.payload)


def test_create_agent_key__no_options__never_expires_and_all_workflows(agent: Agent) -> None:
    shown = run("refund-bot")
    record = AgentKey.objects.get(prefix=shown["prefix"])
    assert record.expires_at is None
    assert record.label == ""
    assert shown["expires"] == "never"
    assert shown["scope"] == "all of refund-bot's workflows (payments, refunds)"
    assert key_workflow_slugs(record) == {"payments", "refunds"}


def test_create_agent_key__workflow_repeated_or_listed__same_scope(agent: Agent) -> None:
    listed = run("refund-bot", "--workflow", "refunds", "payments")
    repeated = run(
        "refund-bot", "--workflow", "payments", "--workflow", "refunds", "--workflow", "refunds"
    )
    for shown in (listed, repeated):
        record = AgentKey.objects.get(prefix=shown["prefix"])
        assert set(record.workflows.values_list("slug", flat=True)) == {"payments", "refunds"}
        assert shown["scope"] == "payments, refunds"


def assert_refused(args: list[str], message: str) -> None:
    """The command fails with exactly this one line, and makes no key."""
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert not AgentKey.objects.exists()
    assert not AuditEvent.objects.filter(verb="agent_key.created").exists()


def test_create_agent_key__unknown_agent__refused_naming_it(agent: Agent) -> None:
    assert_refused(["ghost-bot"], "AGENT_SLUG: no agent 'ghost-bot' is registered")


@pytest.mark.parametrize("days", ["0", "-3"])
def test_create_agent_key__non_positive_days__refused(agent: Agent, days: str) -> None:
    assert_refused(
        ["refund-bot", "--expires-in", days],
        f"--expires-in: must be a positive number of days, got {int(days)}",
    )


@pytest.mark.parametrize("days", ["soon", "1.5", ""])
def test_create_agent_key__days_not_a_whole_number__refused(agent: Agent, days: str) -> None:
    assert_refused(
        ["refund-bot", "--expires-in", days],
        f"--expires-in: {days!r} is not a whole number of days",
    )


def test_create_agent_key__workflow_not_served__refused_naming_it(agent: Agent) -> None:
    make_workflow("invoices", "Invoice matching")
    assert_refused(
        ["refund-bot", "--workflow", "refunds", "invoices"],
        "--workflow: refund-bot does not serve invoices (it serves payments, refunds)",
    )


def test_create_agent_key__unknown_workflow__refused_naming_it(agent: Agent) -> None:
    assert_refused(["refund-bot", "--workflow", "nope"], "--workflow: no workflow 'nope'")


def test_create_agent_key__label_too_long__refused(agent: Agent) -> None:
    assert_refused(["refund-bot", "--label", "x" * 121], "--label: at most 120 characters, got 121")
