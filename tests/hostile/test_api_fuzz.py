"""The whole API under generated input (schemathesis, from `/api/v1/openapi.json`): every
operation, called as an agent (its key) or as staff (a staff token, or a signed-in session with
its CSRF token), with data that fits the schema and data that breaks it. No answer may be a 5xx,
and every answer must match what the schema promises (status code, content type, body).

CI size: FUZZ_EXAMPLES (default 100) cases of valid data and as many of invalid data per operation,
derandomized so that a run is repeatable; `make fuzz` runs many more, freshly random each time.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from controlplane.api import api
from tests.hostile.conftest import CSRF_SECRET, Hostile

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
RANDOM = os.environ.get("FUZZ_RANDOM", "") == "1"

# How each operation is entered: the first scheme its `security` lists ("public" for the audit
# log's checkpoints and key, which anyone may read).
_OPENAPI = api.get_openapi_schema()
OPERATIONS: list[tuple[str, str, str]] = [
    (
        method.upper(),
        path,
        operation["security"][0].popitem()[0] if "security" in operation else "public",
    )
    for path, methods in _OPENAPI["paths"].items()
    for method, operation in methods.items()
]

# What every answer must satisfy. Left out on purpose: the acceptance checks (valid-looking data
# answered 4xx, or invalid data answered 2xx) and the ignored-auth check, because the API checks
# more than its schema says (scope names, each tool's own params schema, roles), and because the
# fuzz sends real credentials over whatever auth it generates; tests/hostile/test_auth.py checks
# every operation's refusal of missing and wrong credentials instead.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

_schema: OpenApiSchema | None = None


def api_schema() -> OpenApiSchema:
    """The schema as the API serves it, loaded once through the WSGI application."""
    global _schema
    if _schema is None:
        _schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler())
    return _schema


def credentials(scheme: str, hostile: Hostile) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, cookies) of the caller."""
    if scheme == "public":
        return {}, {}
    if scheme == "AgentKeyAuth":
        return {"Authorization": f"Bearer {hostile.agent_key}"}, {}
    if scheme == "StaffTokenAuth":
        return {"Authorization": f"Bearer {hostile.staff_token}"}, {}
    assert scheme == "SessionAuth", scheme
    return {"X-CSRFToken": CSRF_SECRET}, hostile.session_cookies()


# Refund params that pass the tool's schema, with hostile text where text is allowed, so that
# generated proposals get past the schema check into the policy, the records and the audit.
_hostile_text = st.text(min_size=0, max_size=300)
_refund_params = st.fixed_dictionaries(
    {
        "order_id": _hostile_text,
        "amount_cents": st.integers(min_value=1, max_value=2**70),
        "currency": st.sampled_from(["EUR", "USD", "GBP"]),
        "reason": _hostile_text,
    }
)


def steer(case: Any, data: st.DataObject, hostile: Hostile) -> None:
    """Point part of the generated cases at things that exist, so that the fuzz reaches the
    code behind the lookups (a random UUID only ever finds a 404)."""
    params = case.path_parameters or {}
    if "action_id" in params and data.draw(st.booleans(), label="known action"):
        known = (*hostile.action_ids, hostile.other_action_id)
        params["action_id"] = data.draw(st.sampled_from(known), label="action_id")
    if "switch_id" in params and data.draw(st.booleans(), label="known switch"):
        params["switch_id"] = data.draw(st.sampled_from(hostile.switch_ids), label="switch_id")
    body = case.body
    proposing = case.operation.path.endswith("/actions") and isinstance(body, dict)
    if proposing and data.draw(st.booleans(), label="in scope"):
        body["workflow"], body["tool"] = "refunds", "issue_refund"
        if data.draw(st.booleans(), label="valid params"):
            body["params"] = data.draw(_refund_params, label="params")


def _takes_input(method: str, path: str) -> bool:
    operation = _OPENAPI["paths"][path][method.lower()]
    return bool(operation.get("parameters") or operation.get("requestBody"))


# Every operation with valid input; those that take any input with invalid input too (an
# operation without parameters or body has no invalid input to send).
CASES = [
    (method, path, scheme, mode)
    for method, path, scheme in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _takes_input(method, path)
]


@pytest.mark.parametrize(
    ("method", "path", "scheme", "mode"),
    CASES,
    ids=[
        f"{m} {p}-{'valid' if g is GenerationMode.POSITIVE else 'invalid'}" for m, p, _, g in CASES
    ],
)
@pytest.mark.usefixtures("in_test_transaction")
def test_api__generated_input__no_5xx_and_answers_match_the_schema(
    hostile: Hostile, method: str, path: str, scheme: str, mode: GenerationMode
) -> None:
    # Given the operation as the served schema describes it, and the caller's credentials
    operation = api_schema()[path][method]
    headers, cookies = credentials(scheme, hostile)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        # When it is called with generated data
        case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
        steer(case, data, hostile)
        response = case.call(headers=headers, cookies=cookies)
        # Then the answer is no server error and matches the schema
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()
