"""The balance sheet on the embedded default (SQLite, `make run`): no tally trigger and no
rollup there, so actions and cost events are counted from the records themselves. Runs in a
fresh process with no DATABASE_URL, on a database of its own."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.embedded import run_embedded

SCRIPT = """
import json
from decimal import Decimal
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from apps.accounts.roles import Role
from apps.accounts.services import user_create
from apps.actions.models import Action
from apps.ledger.tasks import cost_rollup_task, tally_compact_task
from apps.registry.models import Agent, Tool, Workflow
from apps.runtime.models import ModelCall

assert connection.vendor == "sqlite", connection.vendor
call_command("migrate", verbosity=0)
flow = Workflow.objects.create(slug="refunds", name="Refunds")
tool = Tool.objects.create(slug="issue_refund", name="Issue refund")
owner = user_create(username="owner", password="a-long-password-1", roles=[Role.ADMIN])
agent = Agent.objects.create(slug="refund-bot", name="Refund bot", owner=owner)
now = timezone.now()
for status, decision in [("succeeded", "allow"), ("succeeded", "allow"), ("rejected", "hold"),
                         ("succeeded", "hold"), ("rolled_back", "allow")]:
    Action.objects.create(agent=agent, workflow=flow, tool=tool, status=status,
                          decision=decision, params={}, created_at=now)
for cents in ("12.345678", "0.000001", "7.654321"):
    ModelCall.objects.create(created_at=now, workflow=flow, agent=agent, provider="deterministic",
                             model="rules", cost_cents=Decimal(cents), currency="EUR")
cost_rollup_task()  # what the scheduler runs: nothing to fold on SQLite, and no error
tally_compact_task()
finance = user_create(username="finance", password="a-long-password-1", roles=[Role.FINANCE])
client = Client(SERVER_NAME="localhost")
client.force_login(finance)
page = client.get("/ledger/")
csv_response = client.get("/ledger/balance-sheet.csv")
print(json.dumps({"page": page.status_code, "plotly": b"spend-chart" in page.content,
                  "csv_status": csv_response.status_code, "csv": csv_response.content.decode()}))
"""


def test_balance_sheet__embedded_sqlite__counts_from_the_records(tmp_path: Path) -> None:
    result = run_embedded(SCRIPT, tmp_path)

    assert result["page"] == 200
    assert result["plotly"]
    assert result["csv_status"] == 200
    rows = list(csv.DictReader(io.StringIO(result["csv"])))
    assert [row["Workflow"] for row in rows] == ["refunds"]
    refunds = rows[0]
    assert refunds["Autonomous"] == "3"  # two succeeded and one rolled back, on allow
    assert refunds["After review"] == "1"
    assert refunds["Rejected"] == "1"
    assert refunds["Rolled back"] == "1"
    assert refunds["Successful outcomes"] == "3"
    assert refunds["Model calls"] == "3"
    assert refunds["Model spend"] == "0.20"  # 20.000000 cents
