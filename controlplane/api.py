"""The one NinjaAPI of the product, mounted at /api/v1/ (OpenAPI docs at /api/v1/docs)."""

from __future__ import annotations

from ninja import NinjaAPI

from apps.accounts.api import router as accounts_router
from apps.actions.api import router as actions_router
from apps.audit.api import router as audit_router
from apps.core.api_errors import install_error_handlers
from apps.core.api_input import StorableJsonParser
from apps.killswitches.api import router as killswitches_router

api = NinjaAPI(
    title="Escapement API",
    version="1",
    description=(
        "The operator control plane for AI agents. Every error answers "
        '`{"detail": "...", "errors": [{"field": "...", "message": "..."}]}` with a 4xx code.'
    ),
    urls_namespace="api",
    # Text PostgreSQL cannot store (NUL, lone surrogates) is a 422 naming the field, not a 500.
    parser=StorableJsonParser(),
)
install_error_handlers(api)

api.add_router("/", accounts_router)
api.add_router("/", actions_router)
api.add_router("/", audit_router)
api.add_router("/", killswitches_router)
