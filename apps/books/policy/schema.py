"""The Cedar schema policies are validated against: entity types, the two actions, and the
context every decision sees. The `params` record is built from the input schemas of the tools a
book allows, so policies can test any declared param by name (after `has`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# JSON Schema type -> Cedar type, for params that policies may read.
_CEDAR_TYPES = {"string": "String", "integer": "Long", "boolean": "Bool"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CONTEXT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("workflow", "String", "slug of the workflow"),
    ("amount", "Long", "amount in minor units (cents), 0 when the tool has none"),
    ("has_amount", "Bool", "whether the tool carries an amount"),
    ("currency", "String", "currency of the amount, upper case"),
    ("confidence", "decimal", "the agent's confidence, 0.0 to 1.0 (0.0 when not given)"),
    ("has_confidence", "Bool", "whether the agent gave a confidence"),
    ("risk_zone", "String", "green, yellow or red: the tool's zone in this book"),
    ("segment", "String", "customer segment of the subject, empty when unknown"),
    ("subject", "String", 'the business object, such as "order:1042"'),
    ("hour", "Long", "hour of the day, 0-23, in the product's time zone"),
    ("weekday", "Long", "day of the week, 1 (Monday) to 7 (Sunday)"),
)


@dataclass(frozen=True)
class ToolParams:
    slug: str
    input_schema: Mapping[str, Any]


def param_types(tools: Iterable[ToolParams]) -> dict[str, str]:
    """Params policies can read: those declared with a simple type, the same in every tool that
    declares them (a name typed differently by two tools is left out rather than guessed)."""
    seen: dict[str, str | None] = {}
    for tool in tools:
        properties = tool.input_schema.get("properties", {})
        if not isinstance(properties, Mapping):
            continue
        for name, spec in properties.items():
            # A JSON Schema "type" may also be a list (["string", "null"]): not a simple type.
            json_type = spec.get("type") if isinstance(spec, Mapping) else None
            cedar = _CEDAR_TYPES.get(json_type) if isinstance(json_type, str) else None
            if cedar is None or not _IDENTIFIER.match(name):
                continue
            if name in seen and seen[name] != cedar:
                seen[name] = None
            else:
                seen.setdefault(name, cedar)
    return {name: cedar for name, cedar in sorted(seen.items()) if cedar is not None}


def build_schema(params: Mapping[str, str]) -> str:
    param_lines = ",\n".join(f"  {name}?: {cedar}" for name, cedar in params.items())
    context_lines = ",\n".join(f"    {name}: {cedar}" for name, cedar, _ in CONTEXT_FIELDS)
    return (
        "entity Workflow;\n"
        "entity Agent in [Workflow] {\n  risk_tier: String\n};\n"
        "entity Tool {\n  risk_zone: String,\n  reversible: Bool\n};\n"
        f"type Params = {{\n{param_lines}\n}};\n"
        'action "propose", "execute" appliesTo {\n'
        "  principal: [Agent],\n"
        "  resource: [Tool],\n"
        f"  context: {{\n{context_lines},\n    params: Params\n  }}\n"
        "};\n"
    )
