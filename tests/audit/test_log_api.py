"""The audit log's public reads: the latest signed checkpoint and the key as text, checkpoints by
size and by page, consistency proofs between two sizes; bad sizes answered 422 naming the field."""

from __future__ import annotations

import pytest
from django.test import Client
from escapement_client.transparency import checkpoint_parse, consistency_verify, note_verify

from apps.audit.log import log_integrate, verifier_key
from apps.audit.models import AuditCheckpoint
from tests.audit.conftest import record_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_checkpoints() -> list[AuditCheckpoint]:
    """Checkpoints at sizes 2, 5 and 9."""
    made = []
    for count in (2, 3, 4):
        record_events(count)
        checkpoint = log_integrate()
        assert checkpoint is not None
        made.append(checkpoint)
    return made


def test_checkpoint__empty_log__404(client: Client) -> None:
    answer = client.get("/api/v1/audit/checkpoint")
    assert answer.status_code == 404
    assert answer.json()["detail"] == "The audit log has no checkpoint yet."


def test_checkpoint_and_key__anyone__text_that_verifies(
    client: Client, three_checkpoints: list[AuditCheckpoint]
) -> None:
    note = client.get("/api/v1/audit/checkpoint")
    key = client.get("/api/v1/audit/key")
    assert note["Content-Type"] == key["Content-Type"] == "text/plain; charset=utf-8"
    assert key.content.decode().strip() == verifier_key()
    signed = checkpoint_parse(note_verify(note.content.decode(), key.content.decode().strip()))
    assert (signed.size, signed.root_hash) == (9, bytes(three_checkpoints[-1].root_hash))


def test_checkpoint_of_size__known_and_unknown(
    client: Client, three_checkpoints: list[AuditCheckpoint]
) -> None:
    assert client.get("/api/v1/audit/checkpoints/5").content.decode() == three_checkpoints[1].note
    assert client.get("/api/v1/audit/checkpoints/4").status_code == 404
    assert client.get("/api/v1/audit/checkpoints/five").status_code == 422


def test_checkpoints__paged_newest_first(
    client: Client, three_checkpoints: list[AuditCheckpoint]
) -> None:
    first = client.get("/api/v1/audit/checkpoints?limit=2").json()
    assert [row["size"] for row in first["checkpoints"]] == [9, 5]
    assert first["next"] == 5
    rest = client.get(f"/api/v1/audit/checkpoints?limit=2&before={first['next']}").json()
    assert ([row["size"] for row in rest["checkpoints"]], rest["next"]) == ([2], None)
    assert rest["checkpoints"][0]["root_hash"] == bytes(three_checkpoints[0].root_hash).hex()
    assert client.get("/api/v1/audit/checkpoints?limit=0").status_code == 422


def test_consistency__between_two_sizes__verifies_against_their_roots(
    client: Client, three_checkpoints: list[AuditCheckpoint]
) -> None:
    answer = client.get("/api/v1/audit/consistency?first=2&second=9")
    assert answer.status_code == 200
    body = answer.json()
    assert consistency_verify(
        first=2,
        second=9,
        first_root=bytes(three_checkpoints[0].root_hash),
        second_root=bytes(three_checkpoints[2].root_hash),
        path=[bytes.fromhex(value) for value in body["proof"]],
    )


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("first=0&second=5", "first", "must be at least 1, got 0"),
        ("first=6&second=5", "first", "must not exceed second (5), got 6"),
        ("first=2&second=10", "second", "the log holds 9 entries; 10 is beyond it"),
    ],
)
def test_consistency__sizes_it_cannot_prove__422_naming_the_field(
    client: Client, three_checkpoints: list[AuditCheckpoint], query: str, field: str, message: str
) -> None:
    answer = client.get(f"/api/v1/audit/consistency?{query}")
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": field, "message": message}]


def test_consistency__not_a_number__422_naming_the_field(client: Client) -> None:
    answer = client.get("/api/v1/audit/consistency?first=a&second=2")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "first"
