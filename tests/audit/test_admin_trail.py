"""Edits made in the Django admin reach the hash-chained audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.registry.models import Agent, Workflow
from tests.factories import make_agent, make_tool, make_workflow

pytestmark = pytest.mark.django_db


def test_admin__agent_quarantined__change_audited_with_fields(
    user_for: Any, client_for: Any
) -> None:
    # Given refund-bot, active
    erin = user_for(Role.ADMIN)
    agent = make_agent(owner=erin)
    client = client_for(Role.ADMIN)
    url = reverse("admin:registry_agent_change", args=[agent.pk])
    form = {
        "slug": agent.slug,
        "name": agent.name,
        "owner": erin.pk,
        "workflows": [make_workflow().pk],
        "tools": [make_tool().pk],
        "risk_tier": "low",
        "status": "quarantined",
        "keys-TOTAL_FORMS": "0",
        "keys-INITIAL_FORMS": "0",
    }
    # When an admin quarantines it in the admin
    response = client.post(url, form)
    # Then the change is saved and recorded in the chain, by whom and what changed
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Agent.objects.get(pk=agent.pk).status == "quarantined"
    event = AuditEvent.objects.get(verb="agent.changed")
    assert event.actor == "erin"
    assert event.payload["after"]["status"] == "quarantined"
    assert "Status" in str(event.payload["change"])
    # And the agent's callback secret stays out of the trail
    assert event.payload["after"]["callback_secret"] == "[redacted]"
    assert agent.callback_secret not in str(event.payload)
    assert audit_verify().intact


def test_admin__workflow_added_and_deleted__both_audited(client_for: Any) -> None:
    client = client_for(Role.ADMIN)
    client.post(reverse("admin:registry_workflow_add"), {"slug": "claims", "name": "Claims"})
    workflow = Workflow.objects.get(slug="claims")
    client.post(reverse("admin:registry_workflow_delete", args=[workflow.pk]), {"post": "yes"})
    assert not Workflow.objects.filter(slug="claims").exists()
    of_workflows = AuditEvent.objects.filter(target_type="registry.workflow")
    verbs = list(of_workflows.order_by("sequence").values_list("verb", flat=True))
    assert verbs == ["workflow.created", "workflow.deleted"]
