"""The Decision Book pages through the test client: forms, htmx partials, errors."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.books.forms import DraftForm
from apps.books.models import BookVersion
from apps.books.services import draft_create
from apps.registry.models import Tool, Workflow
from tests.factories import (
    REFUND_CONTROLS,
    make_agent,
    make_published_book,
    make_tool,
    make_workflow,
)

REFUND_OBJECTIVE = REFUND_CONTROLS["objective"]

pytestmark = pytest.mark.django_db


@pytest.fixture
def refunds(user_for: Any) -> BookVersion:
    """refunds v1 published by bob, refund-bot serving it, and an open draft."""
    bob = user_for(Role.RISK)
    make_tool()
    make_agent(owner=user_for(Role.ADMIN))
    make_published_book(workflow=make_workflow(), author=bob)
    return draft_create(workflow=Workflow.objects.get(slug="refunds"), user=bob)


def form_data(draft: BookVersion, **changes: Any) -> dict[str, Any]:
    tools = list(Tool.objects.order_by("slug"))
    initial = DraftForm.initial_for(draft, tools)
    data = {key: ("" if value is None else value) for key, value in initial.items()}
    data = {key: value for key, value in data.items() if value is not False}
    data.update(changes)
    return data


def test_workflow_create__from_index__listed_and_audited(client_for: Any) -> None:
    client = client_for(Role.RISK)
    response = client.post("/books/", {"slug": "claims", "name": "Insurance claims"})
    assert response.status_code == 302
    assert response["Location"] == "/books/claims/"
    assert "claims" in client.get("/books/").content.decode()


def test_workflow_create__bad_slug__error_next_to_field(client_for: Any) -> None:
    response = client_for(Role.RISK).post("/books/", {"slug": "Has Spaces", "name": "x"})
    assert response.status_code == 200
    assert "use lower-case letters" in response.content.decode()
    assert not Workflow.objects.filter(name="x").exists()


def test_draft_save__valid_form__stored_in_minor_units(
    client_for: Any, refunds: BookVersion
) -> None:
    client = client_for(Role.RISK)
    data = form_data(refunds, **{"tool__issue_refund__auto_cap": "75.50", "save": "1"})
    response = client.post("/books/refunds/draft/", data)
    assert response.status_code == 302
    refunds.refresh_from_db()
    assert refunds.tools[0]["auto_cap"] == 7550
    assert "context.amount > 7550" in refunds.policy_text


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"tool__issue_refund__auto_cap": "600.00"},
            "tool__issue_refund__auto_cap",
            "cannot be above the hard cap",
        ),
        ({"model_policy": '{"classify": {"tier": "huge"}}'}, "model_policy", "classify.tier"),
        ({"model_policy": "{not json"}, "model_policy", "Not valid JSON"),
        (
            {"business_hours_start": "18", "business_hours_end": "9"},
            "business_hours_end",
            "must come after",
        ),
        ({"confidence_threshold": "1.5"}, "confidence_threshold", "less than or equal to 1"),
        ({"currency": "E1R"}, "currency", "three-letter currency code"),
        ({"data_sources": "orders | soon"}, "data_sources", "Line 1"),
    ],
)
def test_draft_save__bad_field__422_error_at_field_and_nothing_saved(
    client_for: Any, refunds: BookVersion, changes: dict[str, str], field: str, message: str
) -> None:
    before = BookVersion.objects.get(pk=refunds.pk).updated_at
    response = client_for(Role.RISK).post(
        "/books/refunds/draft/", form_data(refunds, save="1", **changes)
    )
    assert response.status_code == 422
    form = response.context["form"]
    assert field in form.errors
    assert message in " ".join(form.errors[field])
    assert BookVersion.objects.get(pk=refunds.pk).updated_at == before


def test_publish__broken_raw_policy__refused_and_active_unchanged(
    client_for: Any, refunds: BookVersion
) -> None:
    raw = (
        '@id("x")\n@message("m")\nforbid (principal, action, resource) when { context.amunt > 1 };'
    )
    data = form_data(refunds, raw_policies=raw, publish="1", change_note="try")
    response = client_for(Role.RISK).post("/books/refunds/draft/", data)
    assert response.status_code == 422
    problems = response.context["problems"]
    assert [(p.section, p.line, p.policy_id) for p in problems] == [("raw", 1, "x")]
    assert BookVersion.objects.get(workflow__slug="refunds", status="published").number == 1


def test_publish__without_change_note__error_at_note(client_for: Any, refunds: BookVersion) -> None:
    response = client_for(Role.RISK).post("/books/refunds/draft/", form_data(refunds, publish="1"))
    assert response.status_code == 422
    assert "change_note" in response.context["publish_form"].errors
    assert BookVersion.objects.filter(workflow__slug="refunds", status="draft").exists()


def test_publish__valid__v2_active_and_lands_on_diff(client_for: Any, refunds: BookVersion) -> None:
    data = form_data(refunds, publish="1", change_note="tighter", confidence_threshold="0.9")
    response = client_for(Role.RISK).post("/books/refunds/draft/", data)
    assert response.status_code == 302
    assert response["Location"] == "/books/refunds/diff/?from=1&to=2"
    diff = client_for(Role.RISK).get(response["Location"]).content.decode()
    assert "Confidence threshold: 0.9" in diff


def test_preview__htmx__compiled_cedar_partial_only(client_for: Any, refunds: BookVersion) -> None:
    data = form_data(refunds, **{"tool__issue_refund__hard_cap": "900.00"})
    response = client_for(Role.RISK).post(
        "/books/refunds/draft/preview/", data, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert html.strip().startswith('<pre id="compiled-cedar"')
    assert "context.amount &gt; 90000" in html
    # The preview changes nothing stored
    refunds.refresh_from_db()
    assert refunds.tools[0]["hard_cap"] == 50000


def test_validate__good_draft__no_problems(client_for: Any, refunds: BookVersion) -> None:
    response = client_for(Role.RISK).post("/books/refunds/draft/validate/", form_data(refunds))
    assert 'data-testid="problems-ok"' in response.content.decode()


@pytest.mark.parametrize(
    ("amount", "confidence", "decision", "reason"),
    [
        (3000, "0.9", "allow", "issue_refund-may-run"),
        (30000, "0.9", "hold", "issue_refund-review-above-5000"),
        (300000, "0.9", "deny", "issue_refund-never-above-50000"),
        (3000, "0.5", "hold", "confidence-threshold"),
    ],
)
def test_try_it__sample_action__decision_and_reason(
    client_for: Any, refunds: BookVersion, amount: int, confidence: str, decision: str, reason: str
) -> None:
    params = (
        f'{{"order_id": "1042", "amount_cents": {amount}, "currency": "EUR", "reason": "late"}}'
    )
    data = form_data(
        refunds,
        **{
            "try-agent": "refund-bot",
            "try-tool": "issue_refund",
            "try-params": params,
            "try-confidence": confidence,
        },
    )
    response = client_for(Role.RISK).post("/books/refunds/draft/try/", data)
    assert response.status_code == 200
    outcome = response.context["outcome"]
    assert outcome.decision == decision
    assert outcome.reasons[0].policy_id == reason


def test_try_it__params_not_json__error_names_params(client_for: Any, refunds: BookVersion) -> None:
    data = form_data(
        refunds, **{"try-agent": "refund-bot", "try-tool": "issue_refund", "try-params": "[1"}
    )
    response = client_for(Role.RISK).post("/books/refunds/draft/try/", data)
    assert "params: Not valid JSON" in response.content.decode()


def test_diff__unknown_version__400_naming_parameter(client_for: Any, refunds: BookVersion) -> None:
    response = client_for(Role.RISK).get("/books/refunds/diff/?from=7&to=1")
    assert response.status_code == 400
    assert "from: no published version &#x27;7&#x27; of refunds" in response.content.decode()


def test_rollback__from_history__new_version_with_old_content(
    client_for: Any, refunds: BookVersion
) -> None:
    client = client_for(Role.RISK)
    client.post(
        "/books/refunds/draft/", form_data(refunds, publish="1", change_note="v2", sla_minutes="99")
    )
    response = client.post("/books/refunds/v1/rollback/", {"change_note": "v2 was too slow"})
    assert response.status_code == 302
    active = BookVersion.objects.get(workflow__slug="refunds", status="published")
    assert (
        active.number,
        active.sla_minutes,
        active.based_on.number if active.based_on else None,
    ) == (3, 60, 1)


def test_draft_pages__no_draft__preview_404(client_for: Any, user_for: Any) -> None:
    make_tool()
    make_published_book(workflow=make_workflow(), author=user_for(Role.RISK))
    response = client_for(Role.RISK).post("/books/refunds/draft/preview/", {})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "url",
    ["/books/refunds/", "/books/refunds/draft/", "/books/refunds/v1/", "/books/refunds/diff/"],
)
def test_book_pages__supervisor__403(client_for: Any, refunds: BookVersion, url: str) -> None:
    assert client_for(Role.SUPERVISOR).get(url).status_code == 403


def test_book_posts__supervisor__403_and_nothing_changes(
    client_for: Any, refunds: BookVersion
) -> None:
    client: Client = client_for(Role.SUPERVISOR)
    assert (
        client.post(
            "/books/refunds/draft/", form_data(refunds, publish="1", change_note="x")
        ).status_code
        == 403
    )
    assert client.post("/books/refunds/v1/rollback/", {"change_note": "x"}).status_code == 403
    assert BookVersion.objects.get(workflow__slug="refunds", status="published").number == 1


def test_draft_form__after_publish__cannot_reach_the_published_version(
    client_for: Any, refunds: BookVersion
) -> None:
    # Given the draft published as v2, so that no draft is left
    client = client_for(Role.RISK)
    client.post("/books/refunds/draft/", form_data(refunds, publish="1", change_note="v2"))
    published = BookVersion.objects.get(workflow__slug="refunds", status="published")
    # When the editor form is posted again with other content
    response = client.post(
        "/books/refunds/draft/", form_data(published, save="1", sla_minutes="5", objective="x")
    )
    # Then there is no draft to write to, and v2 is untouched
    assert response.status_code == 200
    assert "No draft of refunds" in response.content.decode()
    published.refresh_from_db()
    assert (published.sla_minutes, published.objective) == (60, REFUND_OBJECTIVE)
