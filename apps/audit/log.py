"""The audit trail as a Merkle log, as transparency logs keep theirs (RFC 9162, C2SP).

Writers append events without a shared lock (`apps/audit/services.py`). The sequencer
(`log_integrate`, one at a time under an advisory lock) takes committed events into the log in
the order they were written: each becomes a leaf, hashed over its entry encoding, the hashes of
the perfect subtrees it completes are kept, and a checkpoint of the new size and root hash is
signed with the log's Ed25519 key (held outside the database) and appended to the witness file.
Proofs of inclusion and of consistency are answered from the kept hashes."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from escapement_client.transparency import (
    Checkpoint,
    Frontier,
    TransparencyError,
    checkpoint_body,
    checkpoint_parse,
    consistency_path,
    consistency_verify,
    inclusion_path,
    note_sign,
    note_verify,
    subtree_hash,
    verifier_key_for,
)

from apps.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf, AuditNode

logger = logging.getLogger(__name__)

# The advisory lock that keeps the sequencer to one at a time ("audit-lg" in ASCII).
SEQUENCER_LOCK = 0x6175646974_2D6C67

# An event's entry encoding (see escapement_client.transparency.entry_encode), built by
# PostgreSQL from the row `e`: a version byte, the event's number and time in microseconds as
# 8-byte integers, then each text field as its UTF-8 length (4 bytes) and bytes. Written out
# here, not kept as a function in the database, so that no one with rights on the schema can
# change what a leaf means.
_FIELDS = ("actor_type", "actor", "verb", "target_type", "target_id", "subject", "trace_id")
ENTRY_SQL = (
    "('\\x01'::bytea || int8send(e.sequence)"
    " || int8send((extract(epoch FROM e.created_at) * 1000000)::bigint)"
    + "".join(
        f" || int4send(octet_length(convert_to(e.{field}, 'UTF8')))"
        f" || convert_to(e.{field}, 'UTF8')"
        for field in (*_FIELDS, "payload_digest")
    )
    + ")"
)
LEAF_SQL = f"sha256('\\x00'::bytea || {ENTRY_SQL})"


# Committed events not yet in the log, oldest written first, with their leaf hashes.
_UNSEQUENCED_SQL = f"""
SELECT e.id, {LEAF_SQL} FROM audit_auditevent e
WHERE e.writer_xid >= %s
  AND NOT EXISTS (SELECT 1 FROM audit_auditleaf l WHERE l.event_id = e.id)
ORDER BY e.sequence LIMIT %s
"""  # noqa: S608 (LEAF_SQL is constant text)


@contextmanager
def catalog_only(cursor: Any) -> Iterator[Callable[[str], str]]:
    """Within: functions and operators resolve in pg_catalog alone, so that nothing created in
    the trail's schema (a `convert_to` for varchar, an operator) can change what the SQL here
    computes. Yields a function that names the trail's tables in their schema. Needs a
    transaction (the setting lasts to its end, and is put back on leaving)."""
    cursor.execute("SELECT pg_catalog.current_schema(), pg_catalog.current_setting('search_path')")
    schema, path = cursor.fetchone()
    qualified = connection.ops.quote_name(schema)
    cursor.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
    try:
        yield lambda sql: sql.replace("audit_audit", f"{qualified}.audit_audit")
    finally:
        cursor.execute("SELECT pg_catalog.set_config('search_path', %s, true)", [path])


class SigningKeyMissing(RuntimeError):
    """No AUDIT_SIGNING_KEY: the log cannot sign checkpoints, so the sequencer waits."""


class ProofRefused(ValueError):
    """A proof asked of sizes or entries the log cannot prove; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def signer_key() -> str:
    """The log's signer key (AUDIT_SIGNING_KEY); SigningKeyMissing where it is not held."""
    key: str = settings.AUDIT_SIGNING_KEY
    if not key:
        raise SigningKeyMissing("AUDIT_SIGNING_KEY is not set: the audit log cannot sign")
    return key


def verifier_key() -> str:
    """The log's public key in the signed-note verifier form: name+key id+base64 key. Hosts
    that do not sign (the web) are given it (AUDIT_VERIFIER_KEY) rather than the private key."""
    given: str = settings.AUDIT_VERIFIER_KEY
    return given or verifier_key_for(signer_key())


def log_origin() -> str:
    origin: str = settings.AUDIT_LOG_ORIGIN
    return origin


def latest_checkpoint() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-size").first()


def log_integrate(*, limit: int = 10_000) -> AuditCheckpoint | None:
    """Take committed events not yet in the log into it, at most `limit`, in the order they were
    written, and sign a checkpoint of the new tree. None when another sequencer is running or
    nothing was new. The checkpoint goes to the witness file once it has committed."""
    key = signer_key()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
            if not cursor.fetchone()[0]:
                return None
            latest = latest_checkpoint()
            if not _sound(latest):
                return None
            frontier = (
                Frontier.from_list(latest.size, [bytes.fromhex(h) for h in latest.frontier])
                if latest
                else Frontier()
            )
            floor = latest.xid_floor if latest else 0
            # Every transaction older than this one's horizon has ended: what it committed is
            # seen by the next statement, so the next run need not look before it.
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            horizon = int(cursor.fetchone()[0])
            # A floor above every transaction id this cluster has given (a restore from a dump
            # into another cluster) would hide every new event: look from the start once.
            cursor.execute("SELECT pg_catalog.pg_current_xact_id()::text::bigint")
            if floor > int(cursor.fetchone()[0]):
                floor = 0
            with catalog_only(cursor) as trail:
                cursor.execute(trail(_UNSEQUENCED_SQL), [floor, limit])
                rows = cursor.fetchall()
        if not rows:
            return None
        leaves: list[tuple[int, int, bytes]] = []
        nodes: list[tuple[int, int, bytes]] = []
        for event_id, leaf in rows:
            leaves.append((frontier.size, event_id, bytes(leaf)))
            nodes.extend(frontier.append(bytes(leaf)))
        # Written with COPY: a backlog of many thousands goes in as fast as PostgreSQL reads.
        with connection.cursor() as cursor:
            for copy, values in (
                ("COPY audit_auditleaf (index, event_id, hash) FROM STDIN", leaves),
                ("COPY audit_auditnode (level, index, hash) FROM STDIN", nodes),
            ):
                with cursor.cursor.copy(copy) as writer:
                    for row in values:
                        writer.write_row(row)
        root = frontier.root()
        body = checkpoint_body(Checkpoint(origin=log_origin(), size=frontier.size, root_hash=root))
        checkpoint = AuditCheckpoint.objects.create(
            size=frontier.size,
            root_hash=root,
            note=note_sign(body, key),
            created_at=timezone.now(),
            frontier=[value.hex() for value in frontier.to_list()],
            # A full batch may have left events behind: look from the same place next time.
            xid_floor=horizon if len(rows) < limit else floor,
        )
        transaction.on_commit(lambda: checkpoint_publish(checkpoint))
    return checkpoint


def _sound(latest: AuditCheckpoint | None) -> bool:
    """Whether the sequencer may go on from `latest`: its note is signed by the log's key (or
    one it had before) for this log, its size and its root; the kept frontier gives that root;
    no leaf lies beyond it; and the witness file's newest checkpoint is this one or one it
    extends. Anything else was written by another hand than the sequencer's: building on it
    would sign a tree no one can verify, so the sequencer stops and says so until someone
    looks."""
    problem = _unsound(latest) if latest is not None else _witness_problem(None)
    if problem:
        logger.error(
            "audit log: the sequencer stops at the checkpoint of size %s: %s; "
            "run manage.py audit_verify",
            latest.size if latest is not None else 0,
            problem,
        )
    return not problem


def _unsound(latest: AuditCheckpoint) -> str:
    root = bytes(latest.root_hash)
    try:
        signed = checkpoint_parse(note_open(latest.note))
    except TransparencyError as exc:
        return f"its note does not verify ({exc})"
    if (signed.origin, signed.size, signed.root_hash) != (log_origin(), latest.size, root):
        return "its row does not match its signed note"
    try:
        kept = Frontier.from_list(latest.size, [bytes.fromhex(h) for h in latest.frontier])
    except (TransparencyError, ValueError, TypeError):
        return "its frontier is malformed"
    if kept.root() != root:
        return "its frontier does not give its root"
    if AuditLeaf.objects.filter(index__gte=latest.size).exists():
        return "leaves were written beyond it"
    return _witness_problem(latest)


def _witness_problem(latest: AuditCheckpoint | None) -> str:
    """Why the database's newest checkpoint is not the witness file's newest or one extending
    it ("" when it is, or when there is no witness file)."""
    try:
        notes = witness_notes(tail=True)
    except (OSError, TransparencyError) as exc:
        return f"the witness file cannot be read ({exc})"
    if not notes:
        return ""
    try:
        witnessed = checkpoint_parse(note_open(notes[-1]))
    except TransparencyError as exc:
        return f"the witness file's newest checkpoint does not verify ({exc})"
    if latest is None or witnessed.size > latest.size:
        return f"the witness file holds a checkpoint at size {witnessed.size}, beyond it"
    if witnessed.size == latest.size:
        return "" if witnessed.root_hash == bytes(latest.root_hash) else "it forks the witness's"
    proof = consistency_proof(first=witnessed.size, second=latest.size)
    if not consistency_verify(
        first=witnessed.size,
        second=latest.size,
        first_root=witnessed.root_hash,
        second_root=bytes(latest.root_hash),
        path=proof,
    ):
        return f"it does not extend the witness file's checkpoint at size {witnessed.size}"
    return ""


def note_open(note: str) -> str:
    """A note's text when the log's key, or one it had before, signed it; the current key's
    refusal otherwise."""
    keys = [verifier_key(), *settings.AUDIT_PAST_VERIFIER_KEYS]
    refusals = []
    for key in keys:
        try:
            return note_verify(note, key)
        except TransparencyError as exc:
            refusals.append(exc)
    raise refusals[0]


def log_integrate_all() -> int:
    """Run the sequencer until nothing is left; the log's size after."""
    while log_integrate() is not None:
        pass
    latest = latest_checkpoint()
    return latest.size if latest else 0


def checkpoint_publish(checkpoint: AuditCheckpoint) -> None:
    """Append the signed checkpoint to the witness file and POST it to the witness URL, if set.
    Neither failing undoes the checkpoint: it is logged, and the next one covers this one."""
    path: str = settings.AUDIT_WITNESS_FILE
    if path:
        try:
            witness_append(Path(path), checkpoint.note)
        except OSError as exc:
            logger.error(
                "audit checkpoint %s not written to the witness file: %s", checkpoint.size, exc
            )
    url: str = settings.AUDIT_WITNESS_URL
    if url:
        try:
            answer = requests.post(
                url,
                data=checkpoint.note.encode(),
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=5,
            )
            answer.raise_for_status()
        except requests.RequestException as exc:
            logger.warning("audit checkpoint %s not sent to the witness: %s", checkpoint.size, exc)


# A witness file holds signed notes one after another, each followed by an empty line (a note
# itself ends in its signature lines, after the one empty line inside it).
def witness_append(path: Path, note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as witness:
        witness.write(note + "\n")


def witness_read(path: Path) -> list[str]:
    """The notes of a witness file (or of a file holding a single note), in order."""
    return _notes_in(path.read_text(encoding="utf-8"), str(path))


def _notes_in(text: str, where: str) -> list[str]:
    chunks = [chunk for chunk in text.split("\n\n") if chunk.strip()]
    if len(chunks) % 2:
        raise TransparencyError(f"{where}: not a sequence of signed notes (a note is cut short)")
    return [f"{chunks[i]}\n\n{chunks[i + 1].rstrip(chr(10))}\n" for i in range(0, len(chunks), 2)]


def witness_notes(*, tail: bool = False) -> list[str]:
    """The checkpoints in this installation's witness file (none when it has none yet); with
    `tail`, only those in its last few kilobytes (the newest one among them)."""
    path: str = settings.AUDIT_WITNESS_FILE
    if not path or not Path(path).is_file():
        return []
    if not tail:
        return witness_read(Path(path))
    with Path(path).open("rb") as witness:
        witness.seek(0, 2)
        witness.seek(max(0, witness.tell() - _TAIL_BYTES))
        text = witness.read().decode("utf-8", errors="replace")
    # (the tail may begin inside a note: start at the first body followed by its signatures)
    chunks = text.split("\n\n")
    first = next(
        (
            i
            for i in range(len(chunks) - 1)
            if not chunks[i].startswith(SIGNATURE_DASH) and chunks[i + 1].startswith(SIGNATURE_DASH)
        ),
        len(chunks),
    )
    return _notes_in("\n\n".join(chunks[first:]), str(path))


SIGNATURE_DASH = "\u2014 "
_TAIL_BYTES = 8192


# --- Proofs ---------------------------------------------------------------------------------


def _with_kept_hashes[T](compute: Callable[[Callable[[int, int], bytes]], T]) -> T:
    """Run a proof computation against the kept perfect-subtree hashes: a first pass learns
    which it needs (they depend on the sizes alone), one read each of leaves and nodes fetches
    them, the second pass computes."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return bytes(32)

    compute(record)
    known = _perfect_hashes(wanted)

    def answer(level: int, index: int) -> bytes:
        try:
            return known[(level, index)]
        except KeyError:
            raise LogDamaged(f"the log has lost the hash of subtree {level}/{index}") from None

    return compute(answer)


class LogDamaged(RuntimeError):
    """A hash a proof needs is not kept: the log's tables were changed out of band."""


def _perfect_hashes(wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    wanted = list(wanted)
    leaves = [index for level, index in wanted if level == 0]
    nodes = [(level, index) for level, index in wanted if level > 0]
    known = {
        (0, index): bytes(value)
        for index, value in AuditLeaf.objects.filter(index__in=leaves).values_list("index", "hash")
    }
    if nodes:
        known.update(
            ((level, index), bytes(value))
            for level, index, value in AuditNode.objects.filter(pk__in=nodes).values_list(
                "level", "index", "hash"
            )
        )
    return known


def _subtree(perfect: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
    return lambda lo, hi: subtree_hash(lo, hi, perfect)


@dataclass(frozen=True)
class EventProof:
    event: AuditEvent
    leaf_index: int
    leaf_hash: bytes
    entry: bytes
    audit_path: list[bytes]


def entries_of(event_ids: list[int]) -> dict[int, bytes]:
    """The entry encodings of events, as their leaves hash them."""
    with transaction.atomic(), connection.cursor() as cursor, catalog_only(cursor) as trail:
        cursor.execute(
            trail(f"SELECT e.id, {ENTRY_SQL} FROM audit_auditevent e WHERE e.id = ANY(%s)"),  # noqa: S608
            [event_ids],
        )
        return {event_id: bytes(entry) for event_id, entry in cursor.fetchall()}


def inclusion_proofs(
    events: list[AuditEvent], checkpoint: AuditCheckpoint
) -> tuple[list[EventProof], list[AuditEvent]]:
    """Proofs that these events are in the tree of `checkpoint`; and those not yet in it."""
    leaves = {
        leaf.event_id: leaf
        for leaf in AuditLeaf.objects.filter(
            event_id__in=[event.pk for event in events], index__lt=checkpoint.size
        )
    }
    proven = [event for event in events if event.pk in leaves]
    entries = entries_of([event.pk for event in proven])

    def paths(perfect: Callable[[int, int], bytes]) -> list[list[bytes]]:
        return [
            inclusion_path(
                index=leaves[event.pk].index, size=checkpoint.size, subtree=_subtree(perfect)
            )
            for event in proven
        ]

    audit_paths = _with_kept_hashes(paths)
    proofs = [
        EventProof(
            event=event,
            leaf_index=leaves[event.pk].index,
            leaf_hash=bytes(leaves[event.pk].hash),
            entry=entries[event.pk],
            audit_path=path,
        )
        for event, path in zip(proven, audit_paths, strict=True)
    ]
    return proofs, [event for event in events if event.pk not in leaves]


def consistency_proof(*, first: int, second: int) -> list[bytes]:
    """RFC 9162's proof that the tree of size `first` is a prefix of the tree of size `second`."""
    latest = latest_checkpoint()
    size = latest.size if latest else 0
    if first < 1:
        raise ProofRefused("first", f"must be at least 1, got {first}")
    if second > size:
        raise ProofRefused("second", f"the log holds {size} entries; {second} is beyond it")
    if first > second:
        raise ProofRefused("first", f"must not exceed second ({second}), got {first}")
    return _with_kept_hashes(
        lambda perfect: consistency_path(first=first, second=second, subtree=_subtree(perfect))
    )


def checkpoint_at(size: int) -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.filter(size=size).first()


def created_at_us(moment: datetime) -> int:
    """A time as the entry encoding writes it: microseconds since the Unix epoch, UTC."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_fields(event: AuditEvent) -> dict[str, Any]:
    """The fields an event's entry encodes, named as `entry_decode` names them."""
    return {
        "event_id": event.sequence,
        "created_at_us": created_at_us(event.created_at),
        **{field: getattr(event, field) for field in _FIELDS},
        "payload_digest": event.payload_digest,
    }


def proof_document(events: list[AuditEvent]) -> dict[str, Any]:
    """The proof that these events are in the log, against its latest checkpoint, in the form
    `escapement_client.transparency.proof_verify` checks; events not yet in it are listed as
    pending."""
    checkpoint = latest_checkpoint()
    proofs: list[EventProof] = []
    pending = events
    if checkpoint is not None:
        proofs, pending = inclusion_proofs(events, checkpoint)
    return {
        "checkpoint": checkpoint.note if checkpoint else None,
        "tree_size": checkpoint.size if checkpoint else 0,
        "root_hash": bytes(checkpoint.root_hash).hex() if checkpoint else None,
        "events": [
            {
                "leaf_index": proof.leaf_index,
                "leaf_hash": proof.leaf_hash.hex(),
                "entry": base64.b64encode(proof.entry).decode(),
                "audit_path": [value.hex() for value in proof.audit_path],
                "tree_size": checkpoint.size if checkpoint else 0,
                "root_hash": bytes(checkpoint.root_hash).hex() if checkpoint else "",
                "payload_canonical": proof.event.payload_canonical,
                "event": event_fields(proof.event),
            }
            for proof in proofs
        ],
        "pending": [
            {"sequence": event.sequence, "verb": event.verb, "created_at": event.created_at}
            for event in pending
        ],
    }
