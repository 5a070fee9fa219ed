"""Reading a request's JSON params, field by field. The first bad field ends the request with a
4xx that names it: callers treat any 4xx as permanent, so each must say what to fix."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class SandboxError(Exception):
    """A permanent failure: bad input (400), nothing to act on (404), a business rule (422)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.field = field
        self.message = message
        super().__init__(self.error)

    @property
    def error(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.error}
        if self.field:
            body["field"] = self.field
        return body


class Params:
    """The params of one request; unknown fields are refused, so a typo never passes silently."""

    def __init__(self, data: Mapping[str, Any], allowed: Iterable[str] | None) -> None:
        """`allowed` None accepts any field (undos: callers echo the original's result)."""
        if allowed is not None:
            allowed = frozenset(allowed)
            for name in data:
                if name not in allowed:
                    known = ", ".join(sorted(allowed)) or "none"
                    raise SandboxError(400, f"is not a known field (fields are {known})", name)
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, *, max_length: int, allow_empty: bool = False) -> str:
        value = self.data.get(name)
        if value is None:
            raise SandboxError(400, "is required", name)
        if not isinstance(value, str):
            raise SandboxError(400, "must be a string", name)
        if not allow_empty and not value.strip():
            raise SandboxError(400, "must not be empty", name)
        if len(value) > max_length:
            raise SandboxError(400, f"must be at most {max_length} characters", name)
        return value

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int:
        value = self.data.get(name)
        if value is None:
            raise SandboxError(400, "is required", name)
        # bool is an int to Python, never to the caller who sent `true`.
        if isinstance(value, bool) or not isinstance(value, int):
            raise SandboxError(400, "must be an integer", name)
        if value < minimum:
            raise SandboxError(400, f"must be at least {minimum}", name)
        if maximum is not None and value > maximum:
            raise SandboxError(400, f"must be at most {maximum}", name)
        return value

    def currency(self, name: str) -> str:
        value = self.text(name, max_length=3)
        if not CURRENCY_RE.match(value):
            raise SandboxError(400, "must be a three-letter ISO 4217 code such as EUR", name)
        return value

    def choice(self, name: str, options: Iterable[str]) -> str:
        options = tuple(options)
        value = self.text(name, max_length=100)
        if value not in options:
            raise SandboxError(400, f"{value!r} is not one of {', '.join(options)}", name)
        return value

    def original(self, key_name: str, reference: str) -> tuple[str | None, str | None]:
        """What an undo names: (the original's key, its reference such as refund_id). At least
        one; when both come, the service checks they name the same thing."""
        key = self.text(key_name, max_length=255) if self.has(key_name) else None
        ref = self.text(reference, max_length=100) if self.has(reference) else None
        if key is None and ref is None:
            raise SandboxError(400, f"is required (or {reference})", key_name)
        return key, ref
