"""The API's JSON body parser: refuses, naming the field, what would otherwise fail deep inside.

- Text the database cannot store: JSON happily carries `\\u0000` and lone surrogates (`\\ud800`),
  but PostgreSQL stores neither, in a text column or inside jsonb; left alone, such a value
  reaches the INSERT and fails there.
- Nesting deeper than MAX_DEPTH: no field of the API needs it, and very deep values exhaust the
  recursion of the JSON encoder, the schema validator or PostgreSQL's jsonb parser downstream.

Both are answered 422 naming the field (see apps/core/api_errors.py), before any endpoint runs.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from ninja.parser import Parser

# Levels of objects and arrays in a body: `{"params": {"a": [1]}}` has three.
MAX_DEPTH = 32


class BodyRefused(ValueError):
    """A value in the body (or the body as a whole) that the API refuses before parsing it into
    its schema; `field` in the API's notation (`params.items[2].name`, or `body`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain the NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode: it holds a lone surrogate (\\ud800-\\udfff)"
    return None


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def body_problem(value: Any) -> BodyRefused | None:
    """The first value in `value` (depth first, a key before its value) that is refused, if any.
    Iterative, so that a deep value cannot exhaust the recursion of the check itself."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return BodyRefused(path or "body", problem)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_DEPTH:
            return BodyRefused(path or "body", f"nested deeper than {MAX_DEPTH} levels")
        children: list[tuple[Any, str, int]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                where = _join(path, key)
                problem = _text_problem(key)
                if problem:
                    return BodyRefused(where, f"its name {problem}")
                children.append((child, where, depth + 1))
        else:
            children = [(child, _join(path, i), depth + 1) for i, child in enumerate(item)]
        stack.extend(reversed(children))
    return None


class StorableJsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        body = request.body
        try:
            data: dict[str, Any] = json.loads(body)
        except RecursionError:
            raise BodyRefused("body", f"nested deeper than {MAX_DEPTH} levels") from None
        # Only an escape (\u...) or a UTF-8-encoded surrogate (lead byte 0xED) can bring bad text
        # in (raw control characters are invalid JSON), and only as many brackets as MAX_DEPTH can
        # nest that deep: most bodies are let through without a walk.
        if b"\\u" in body or b"\xed" in body or body.count(b"{") + body.count(b"[") > MAX_DEPTH:
            found = body_problem(data)
            if found:
                raise found
        return data
