"""The audit log's public face: its signed checkpoints, its key and proofs of consistency.

These answer without authentication, as transparency logs do: a checkpoint says how many entries
the log holds and their root hash, nothing of what they are, and witnesses and auditors must be
able to fetch it. Proofs that an action's events are in the log need the action's agent or staff
(`GET /api/v1/actions/{id}/proof`, apps/actions/api.py)."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import Field

from apps.audit.log import ProofRefused, checkpoint_at, consistency_proof, latest_checkpoint
from apps.audit.log import verifier_key as log_verifier_key
from apps.audit.models import AuditCheckpoint
from apps.core.api_errors import ApiError, ErrorOut, FieldError

router = Router(tags=["audit log"])

TEXT = {"200": {"description": "a signed note", "content": {"text/plain": {}}}}


def _text(body: str) -> HttpResponse:
    return HttpResponse(body, content_type="text/plain; charset=utf-8")


@router.get(
    "/audit/checkpoint",
    auth=None,
    response={404: ErrorOut},
    summary="The latest signed checkpoint",
    description="A C2SP tlog-checkpoint (origin, tree size, base64 root hash) in a C2SP signed "
    "note with an Ed25519 signature, as text. Verify it with the key of `/audit/key`.",
    openapi_extra={"responses": TEXT},
)
def checkpoint(request: HttpRequest) -> HttpResponse:
    latest = latest_checkpoint()
    if latest is None:
        raise ApiError(404, "The audit log has no checkpoint yet.")
    return _text(latest.note)


@router.get(
    "/audit/checkpoints/{size}",
    auth=None,
    response={404: ErrorOut, 422: ErrorOut},
    summary="The checkpoint signed at one size",
    openapi_extra={"responses": TEXT},
)
def checkpoint_of_size(request: HttpRequest, size: int) -> HttpResponse:
    found = checkpoint_at(size)
    if found is None:
        raise ApiError(404, f"No checkpoint was signed at size {size}.")
    return _text(found.note)


@router.get(
    "/audit/key",
    auth=None,
    summary="The log's verifier key",
    description="In the signed-note verifier-key form: `<name>+<hex key id>+<base64 of 0x01 and "
    "the Ed25519 public key>`.",
    openapi_extra={"responses": {"200": {"description": "the key", "content": {"text/plain": {}}}}},
)
def key(request: HttpRequest) -> HttpResponse:
    return _text(log_verifier_key() + "\n")


class CheckpointOut(Schema):
    size: int = Field(description="the tree size it signs")
    root_hash: str = Field(description="the root hash, hex")
    created_at: datetime
    note: str = Field(description="the signed note")


class CheckpointPage(Schema):
    checkpoints: list[CheckpointOut] = Field(description="newest first")
    next: int | None = Field(description="pass as `before` for the next page; null at the end")


class PageIn(Schema):
    before: int | None = Field(default=None, ge=1, description="sizes below this one")
    limit: int = Field(default=100, ge=1, le=1000)


@router.get(
    "/audit/checkpoints",
    auth=None,
    response={200: CheckpointPage, 422: ErrorOut},
    summary="Signed checkpoints, newest first",
)
def checkpoints(request: HttpRequest, page: Query[PageIn]) -> CheckpointPage:
    found = AuditCheckpoint.objects.order_by("-size")
    if page.before is not None:
        found = found.filter(size__lt=page.before)
    rows = list(found[: page.limit + 1])
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return CheckpointPage(
        checkpoints=[
            CheckpointOut(
                size=row.size,
                root_hash=bytes(row.root_hash).hex(),
                created_at=row.created_at,
                note=row.note,
            )
            for row in rows
        ],
        next=rows[-1].size if more else None,
    )


class ConsistencyIn(Schema):
    first: int = Field(description="the smaller tree size")
    second: int = Field(description="the larger tree size, at most the latest checkpoint's")


class ConsistencyOut(Schema):
    first: int
    second: int
    proof: list[str] = Field(description="RFC 9162 consistency proof, hex hashes")


@router.get(
    "/audit/consistency",
    auth=None,
    response={200: ConsistencyOut, 422: ErrorOut},
    summary="Proof that one tree size is a prefix of another",
    description="RFC 9162 section 2.1.4: the tree of size `first` is the start of the tree of "
    "size `second`, so nothing signed at `first` was changed or removed by `second`.",
)
def consistency(request: HttpRequest, sizes: Query[ConsistencyIn]) -> ConsistencyOut:
    try:
        proof = consistency_proof(first=sizes.first, second=sizes.second)
    except ProofRefused as refused:
        raise ApiError(
            422, f"{refused.field}: {refused.message}", [FieldError(refused.field, refused.message)]
        ) from None
    return ConsistencyOut(
        first=sizes.first, second=sizes.second, proof=[value.hex() for value in proof]
    )
