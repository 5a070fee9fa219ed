"""manage.py seed_demo: the demo's users (one per role, stable logins), its three workflows with
published books, and its tools following the port the web server serves."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def test_seed_demo__twice__one_user_per_role_with_stable_logins(
    settings: object, tmp_path: object
) -> None:
    setattr(settings, "VAR_DIR", tmp_path)  # noqa: B010
    first, second = StringIO(), StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)
    # The second run creates nothing and prints the same logins
    assert "Demo world: created" in first.getvalue()
    assert "Demo world: created" not in second.getvalue()
    logins = first.getvalue()[first.getvalue().index("Demo logins") :]
    assert second.getvalue() == logins
    for name in ("supervisor", "risk", "finance", "oncall", "admin"):
        user = User.objects.get(username=name)
        assert list(user.groups.values_list("name", flat=True)) == [name]
    supervisor_line = next(line for line in logins.splitlines() if "supervisor" in line)
    password = supervisor_line.split()[1]
    assert User.objects.get(username="supervisor").check_password(password)


def test_seed_demo__world__three_workflows_with_published_books(
    settings: object, tmp_path: object
) -> None:
    from apps.books.models import BookVersion
    from apps.registry.models import Agent, Tool

    setattr(settings, "VAR_DIR", tmp_path)  # noqa: B010
    call_command("seed_demo", stdout=StringIO())
    published = BookVersion.objects.filter(status="published")
    assert sorted(v.workflow.slug for v in published) == [
        "access-requests",
        "invoice-matching",
        "refunds",
    ]
    refund_bot = Agent.objects.get(slug="refund-bot")
    assert list(refund_bot.workflows.values_list("slug", flat=True)) == ["refunds"]
    schema = Tool.objects.get(slug="issue_refund").input_schema
    assert sorted(schema["properties"]) == ["amount_cents", "currency", "order_id", "reason"]
    refunds = published.get(workflow__slug="refunds")
    assert refunds.tools[0] == {
        "tool": "issue_refund",
        "risk_zone": "yellow",
        "auto_cap": 5000,
        "hard_cap": 50000,
    }


def test_seed_demo__port__tools_call_that_sandbox_and_follow_a_new_port(
    settings: object, tmp_path: object
) -> None:
    from apps.registry.models import Tool

    setattr(settings, "VAR_DIR", tmp_path)  # noqa: B010
    # Served on 8123: every demo tool calls the sandbox there
    call_command("seed_demo", "--port", "8123", stdout=StringIO())
    refund = Tool.objects.get(slug="issue_refund")
    assert refund.endpoint_url == "http://127.0.0.1:8123/sandbox/refunds"
    assert refund.undo_endpoint_url == "http://127.0.0.1:8123/sandbox/refunds/undo"
    assert (
        not Tool.objects.exclude(endpoint_url="")
        .exclude(endpoint_url__startswith="http://127.0.0.1:8123/sandbox/")
        .exists()
    )
    # A tool pointed elsewhere by hand stays; the rest follow the next port
    Tool.objects.filter(slug="lookup_order").update(endpoint_url="https://orders.example/lookup")
    out = StringIO()
    call_command("seed_demo", stdout=out)  # the default port, 8000
    refund.refresh_from_db()
    assert refund.endpoint_url == "http://127.0.0.1:8000/sandbox/refunds"
    assert "issue_refund pointed at http://127.0.0.1:8000/sandbox" in out.getvalue()
    assert Tool.objects.get(slug="lookup_order").endpoint_url == "https://orders.example/lookup"


@pytest.mark.parametrize("port", ["0", "70000"])
def test_seed_demo__port_out_of_range__one_line_naming_it(port: str) -> None:
    with pytest.raises(CommandError, match=r"^--port: must be between 1 and 65535"):
        call_command("seed_demo", "--port", port, stdout=StringIO())
