"""Every request gets an id that appears in the response and on every log line."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from pythonjsonlogger.json import JsonFormatter

from apps.core.logging import RequestIdFilter
from apps.core.request_context import reset_request_id, set_request_id

pytestmark = pytest.mark.django_db


def test_request__no_id_given__one_is_assigned_and_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escapement.request")
    response = client.get("/accounts/login/")
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    record = next(r for r in caplog.records if r.name == "escapement.request")
    assert getattr(record, "status", None) == 200
    assert getattr(record, "path", None) == "/accounts/login/"


def test_request__safe_id_given__kept(client: Client) -> None:
    response = client.get("/accounts/login/", headers={"X-Request-ID": "trace-abc.123:9"})
    assert response["X-Request-ID"] == "trace-abc.123:9"


def test_request__unsafe_id_given__replaced(client: Client) -> None:
    response = client.get("/accounts/login/", headers={"X-Request-ID": "evil\nline injected"})
    assert response["X-Request-ID"] != "evil\nline injected"
    assert len(response["X-Request-ID"]) == 32


def test_json_log_line__carries_request_id() -> None:
    # Given the production formatter of the settings
    logging_config: dict[str, Any] = settings.LOGGING
    config = logging_config["formatters"]["json"]
    formatter = JsonFormatter(config["format"], rename_fields=config["rename_fields"])
    record = logging.LogRecord(
        "escapement.test", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    token = set_request_id("req-0001-abcd")
    try:
        RequestIdFilter().filter(record)
    finally:
        reset_request_id(token)
    # When it formats a record
    line = json.loads(formatter.format(record))
    # Then it is one JSON object with the message, level and request id
    assert line["message"] == "hello x"
    assert line["level"] == "INFO"
    assert line["request_id"] == "req-0001-abcd"
