"""The one error format of the API, used by every endpoint:

    {"detail": "...", "errors": [{"field": "...", "message": "..."}]}

`detail` is one sentence for a person; `errors` names each field at fault (empty when the
problem is not about a field). Bad input is always a 4xx; a 500 means a bug.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError
from pydantic import Field

from apps.core.api_input import BodyRefused

logger = logging.getLogger(__name__)

# Where ninja says a value came from; the field a client knows is what follows.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie", "form", "file"})


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ApiError(Exception):
    """Raise from any endpoint or service called by one to answer with a 4xx."""

    def __init__(self, status: int, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = tuple(errors)


class ErrorItem(Schema):
    field: str = Field(description="the field at fault, e.g. params.amount_cents")
    message: str = Field(description="what is wrong with it")


class ErrorOut(Schema):
    """Every error of the API has this shape."""

    detail: str = Field(description="one sentence for a person")
    errors: list[ErrorItem] = Field(description="each field at fault; empty when none is")


def error_body(detail: str, errors: Iterable[FieldError] = ()) -> dict[str, Any]:
    return {
        "detail": detail,
        "errors": [{"field": error.field, "message": error.message} for error in errors],
    }


def error_response(status: int, detail: str, errors: Iterable[FieldError] = ()) -> JsonResponse:
    return JsonResponse(error_body(detail, errors), status=status)


def field_name(loc: Sequence[Any], *, body_param: bool = True) -> str:
    """("body", "payload", "roles", 1) -> "roles[1]"; ("query", "limit") -> "limit"."""
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        source = parts.pop(0)
        # A body schema arrives wrapped in the endpoint's parameter name; clients never see it.
        if source == "body" and body_param and parts:
            parts.pop(0)
        if not parts:
            return str(source)
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "is not valid"))
    # pydantic prefixes custom validator messages with "Value error, "; the field says enough.
    return message.removeprefix("Value error, ")


def _on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        FieldError(field_name(error.get("loc", ())), _validation_message(error))
        for error in exc.errors
    ]
    names = ", ".join(dict.fromkeys(error.field for error in errors))
    return error_response(422, f"Invalid input: {names}.", errors)


def _on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        message = f"not valid JSON: {cause.msg} at line {cause.lineno} column {cause.colno}"
        return error_response(
            400, "The request body is not valid JSON.", [FieldError("body", message)]
        )
    if isinstance(cause, BodyRefused):
        return error_response(
            422, f"Invalid input: {cause.field}.", [FieldError(cause.field, cause.message)]
        )
    if isinstance(exc, AuthenticationError):
        return error_response(401, "Authentication required: sign in or send a valid key.")
    if exc.status_code == 403 and str(exc) == "CSRF check Failed":
        return error_response(
            403,
            "CSRF check failed: a signed-in session must send the CSRF token.",
            [FieldError("X-CSRFToken", "missing or does not match the csrftoken cookie")],
        )
    if isinstance(exc, AuthorizationError):
        return error_response(403, str(exc) or "You are not allowed to do this.")
    return error_response(exc.status_code, str(exc))


def _on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(exc.status, exc.detail, exc.errors)


def _on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(
        413, "The request body is too large.", [FieldError("body", f"at most {limit} bytes")]
    )


def _on_not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(404, "Not found.")


Handler = Callable[[HttpRequest, Any], HttpResponse]

HANDLERS: tuple[tuple[type[Exception], Handler], ...] = (
    (ValidationError, _on_validation_error),
    (HttpError, _on_http_error),
    (ApiError, _on_api_error),
    (Http404, _on_not_found),
    (RequestDataTooBig, _on_too_big),
)


def install_error_handlers(api: NinjaAPI) -> None:
    for exception_class, handler in HANDLERS:
        api.add_exception_handler(exception_class, handler)
