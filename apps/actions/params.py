"""An action's params, made canonical once: the one value the schema checks, the policy decides,
the database stores and the connector sends.

JSON has one kind of number, so `100000.0` and `100000` are the same amount to an agent and to
the tool's JSON Schema (an `integer` accepts both), yet not to the code that reads them: a float
amount was dropped from the policy's facts and an amount cap never saw it. So params are
normalized before anything reads them:

- a whole number sent as a float (`100000.0`, `1e5`) where the schema asks for an `integer`,
  and always for the tool's amount param, is stored as the integer (up to 2**53, where floats
  stop naming every whole number: beyond it, the number must be written as an integer);
- a fraction where a whole number is asked for, a number that is not finite, an integer past
  Cedar's 64-bit range, text holding a NUL character and nesting deeper than `MAX_DEPTH` are
  refused, naming the field;
- numeric strings stay strings (the schema refuses them where it asks for a number).

`params_digest` names the canonical value: an approval and an execution are bound to it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from apps.registry.models import Tool

# Cedar's Long: the widest integer a policy can compare.
INTEGER_MAX = 2**63 - 1
# A float names every whole number up to 2**53 exactly; past it, `1e17` may not be the number the
# agent wrote, so a whole number that large must be written as an integer.
FLOAT_EXACT_MAX = 2**53
# Params nested deeper than this are refused: no tool needs them, and every reader recurses.
MAX_DEPTH = 32


class ParamsInvalid(Exception):
    """Params the tool cannot take; `errors` is [(field, message)], the field as
    `params.amount_cents` or `params.items[0].sku`."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


def params_digest(params: dict[str, Any]) -> str:
    """SHA-256 of the params' canonical JSON (sorted keys, no spaces): the same params give the
    same digest after a round trip through the database."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _wants_integer(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return "integer" in kinds and "number" not in kinds


def _child_schema(schema: Any, key: str | int) -> Any:
    if not isinstance(schema, dict):
        return None
    if isinstance(key, int):
        items = schema.get("items")
        if isinstance(items, list):
            return items[key] if key < len(items) else None
        return items
    properties = schema.get("properties")
    if isinstance(properties, dict) and key in properties:
        return properties[key]
    return None


def _normalize(
    value: Any, schema: Any, path: str, depth: int, errors: list[tuple[str, str]], *, whole: bool
) -> Any:
    if depth > MAX_DEPTH:
        errors.append((path, f"nested deeper than {MAX_DEPTH} levels"))
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            errors.append((path, "must be a finite number"))
            return value
        if whole or _wants_integer(schema):
            if not value.is_integer():
                errors.append((path, "must be a whole number"))
                return value
            if abs(value) > FLOAT_EXACT_MAX:
                errors.append(
                    (path, f"a whole number above {FLOAT_EXACT_MAX} must be written as an integer")
                )
                return value
            value = int(value)
        else:
            return value
    if isinstance(value, int):
        if abs(value) > INTEGER_MAX:
            errors.append((path, f"must be between -{INTEGER_MAX} and {INTEGER_MAX}"))
        return value
    if isinstance(value, str):
        if "\x00" in value:
            errors.append((path, "must not contain a NUL character"))
        return value
    if isinstance(value, dict):
        normalized: dict[str, Any] = {}
        for key, item in value.items():
            if "\x00" in key:
                errors.append((f"{path}.{key!r}", "a key must not contain a NUL character"))
                continue
            normalized[key] = _normalize(
                item, _child_schema(schema, key), f"{path}.{key}", depth + 1, errors, whole=False
            )
        return normalized
    if isinstance(value, list):
        return [
            _normalize(
                item,
                _child_schema(schema, index),
                f"{path}[{index}]",
                depth + 1,
                errors,
                whole=False,
            )
            for index, item in enumerate(value)
        ]
    errors.append((path, f"{type(value).__name__} is not a JSON value"))
    return value


def params_normalize(tool: Tool, params: dict[str, Any]) -> dict[str, Any]:
    """The canonical form of `params` for `tool` (see the module's docstring); raises
    ParamsInvalid naming each field at fault. The tool's amount param, in minor units, is
    made a whole number whatever its schema says (`params_check` requires it)."""
    schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
    errors: list[tuple[str, str]] = []
    normalized: dict[str, Any] = {}
    for key, value in params.items():
        path = f"params.{key}"
        if "\x00" in key:
            errors.append((path.replace("\x00", "\\0"), "a key must not contain a NUL character"))
            continue
        amount = bool(tool.amount_param) and key == tool.amount_param
        normalized[key] = _normalize(
            value, _child_schema(schema, key), path, 1, errors, whole=amount
        )
    if errors:
        raise ParamsInvalid(errors)
    return normalized


@lru_cache(maxsize=512)
def _validator(tool_id: int, updated_at: str, schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def params_errors(tool: Tool, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each way `params` breaks the tool's input schema."""
    validator = _validator(
        tool.pk, tool.updated_at.isoformat(), json.dumps(tool.input_schema, sort_keys=True)
    )
    problems = []
    for error in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path)):
        problems.append((_param_path(error), error.message))
    return problems


def params_check(tool: Tool, params: dict[str, Any]) -> dict[str, Any]:
    """Normalize, then check against the tool's schema: the params every later step reads.
    Raises ParamsInvalid with each problem, the field first."""
    normalized = params_normalize(tool, params)
    problems = params_errors(tool, normalized) or _amount_problems(tool, normalized)
    if problems:
        raise ParamsInvalid(problems)
    return normalized


def _amount_problems(tool: Tool, params: dict[str, Any]) -> list[tuple[str, str]]:
    """A tool that moves money is decided on its amount: one it may not omit (a missing amount
    would pass every cap), a whole number of minor units whatever the schema allows."""
    if not tool.amount_param:
        return []
    field = f"params.{tool.amount_param}"
    if tool.amount_param not in params:
        return [(field, "required: the amount this tool moves, in minor units")]
    value = params[tool.amount_param]
    if isinstance(value, bool) or not isinstance(value, int):
        return [(field, "must be a whole number of minor units")]
    return []


def _param_path(error: SchemaError) -> str:
    path = "params"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    # A missing required property is reported on its parent; name the property itself.
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = [name for name in required if name not in error.instance]
        if missing:
            path += f".{missing[0]}"
    # So is a property the schema does not allow (additionalProperties: false).
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, dict)
    ):
        known = error.schema.get("properties", {})
        patterns = error.schema.get("patternProperties", {})
        unexpected = [
            name
            for name in error.instance
            if name not in known and not any(re.search(pattern, name) for pattern in patterns)
        ]
        if unexpected:
            path += f".{unexpected[0]}"
    return path
