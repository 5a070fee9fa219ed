"""Reading the audit trail and proving it intact."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

from django.db import connection, transaction
from django.db.models import QuerySet
from escapement_client.transparency import (
    Frontier,
    TransparencyError,
    checkpoint_parse,
    note_verify,
)

from apps.audit.log import LEAF_SQL, catalog_only, log_origin, note_open
from apps.audit.models import AuditCheckpoint, AuditEvent
from apps.audit.services import payload_digest

PAYLOAD = "its payload does not match its digest"
REWRITTEN = "its event no longer matches the leaf the log took in"


@dataclass(frozen=True)
class LogReport:
    """What a full verification found. `intact` when every entry of the log recomputes from its
    event to the leaf the log took in, the tree matches every signed checkpoint (stored and
    kept) at its size, and no checkpoint is beyond the log's end."""

    intact: bool
    checked: int  # entries of the log recomputed
    checkpoints: int  # signed checkpoints the tree was held against
    pending: int = 0  # events written but not yet taken into the log
    problem: str = ""
    first_bad_index: int | None = None  # the first entry found wrong, when one can be named
    first_bad_sequence: int | None = None  # and its event's number
    bad_size: int | None = None  # the checkpoint size the log failed, when it is one


@dataclass(frozen=True)
class _Mark:
    size: int
    root: bytes
    source: str


# One batch of the log's entries in order, each recomputed by PostgreSQL from its event: the
# leaf hash over the event's entry encoding as the log stored it, whether its event is gone,
# whether its payload still matches its digest (canonical text against digest and against the
# stored JSON), and for events written before the canonical text was kept, the payload as text
# for Python to digest.
_BATCH_SQL = f"""
SELECT index, leaf, sequence,
       CASE WHEN sequence IS NULL THEN 1 WHEN payload_bad THEN 2 WHEN leaf <> stored THEN 3
            ELSE 0 END,
       legacy, digest
FROM (
    SELECT l.index, l.hash AS stored, {LEAF_SQL} AS leaf, e.sequence,
           e.payload_canonical IS NOT NULL AND (
               encode(sha256(convert_to(e.payload_canonical, 'UTF8')), 'hex') <> e.payload_digest
               OR e.payload_canonical::jsonb <> e.payload) AS payload_bad,
           CASE WHEN e.id IS NOT NULL AND e.payload_canonical IS NULL THEN e.payload::text END
               AS legacy,
           e.payload_digest AS digest
    FROM audit_auditleaf l LEFT JOIN audit_auditevent e ON e.id = l.event_id
    WHERE l.index >= %s AND l.index < %s ORDER BY l.index
) batch
"""  # noqa: S608 (LEAF_SQL is constant text)


class _Broken(Exception):
    def __init__(self, report: LogReport) -> None:
        self.report = report


def audit_verify(
    *,
    kept: Sequence[str] = (),
    key: str | None = None,
    batch: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> LogReport:
    """Recompute the whole log from its events and hold it against every signed checkpoint: the
    stored ones and `kept` (signed notes a user or a witness kept outside the database), each
    verified with `key` (when None: the log's verifier key, or one of the keys it had before).
    Stops at the first problem, naming the entry when it can and the checkpoint's size when only
    the root tells."""
    marks: list[_Mark] = []
    try:
        for checkpoint in AuditCheckpoint.objects.order_by("size"):
            marks.append(
                _mark(
                    checkpoint.note,
                    key or None,
                    f"the checkpoint signed at size {checkpoint.size}",
                    stored=(checkpoint.size, bytes(checkpoint.root_hash)),
                )
            )
        for note in kept:
            marks.append(_mark(note, key or None, "the kept checkpoint at size {size}"))
        checked = _entries_verify(sorted(marks, key=lambda m: m.size), batch, progress)
        _left_out(checked)
    except _Broken as broken:
        return broken.report
    return LogReport(True, checked, len(marks), pending=pending_count())


# An event the sequencer has not taken in this long after it was written was kept out of the
# log (the sequencer takes committed events within seconds).
LEFT_OUT_AFTER = "10 minutes"


def _left_out(checked: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), min(e.sequence) FROM audit_auditevent e"
            " WHERE e.created_at < now() - %s::interval"
            " AND NOT EXISTS (SELECT 1 FROM audit_auditleaf l WHERE l.event_id = e.id)",
            [LEFT_OUT_AFTER],
        )
        count, first = cursor.fetchone()
    if count:
        _fail(
            checked,
            f"{count} event{'s were' if count != 1 else ' was'} written over {LEFT_OUT_AFTER} ago"
            f" and never taken into the log (the first #{first})",
            sequence=first,
        )


def _mark(
    note: str, key: str | None, source: str, stored: tuple[int, bytes] | None = None
) -> _Mark:
    try:
        checkpoint = checkpoint_parse(note_open(note) if key is None else note_verify(note, key))
    except TransparencyError as exc:
        size = stored[0] if stored else None
        where = source.format(size="?")
        raise _Broken(LogReport(False, 0, 0, problem=f"{where}: {exc}", bad_size=size)) from None
    source = source.format(size=checkpoint.size)
    if checkpoint.origin != log_origin():
        raise _Broken(
            LogReport(
                False,
                0,
                0,
                problem=f"{source} is of another log ({checkpoint.origin!r})",
                bad_size=checkpoint.size,
            )
        )
    if stored is not None and stored != (checkpoint.size, checkpoint.root_hash):
        raise _Broken(
            LogReport(
                False,
                0,
                0,
                problem=f"{source}: its row does not match the note signed for it",
                bad_size=stored[0],
            )
        )
    return _Mark(checkpoint.size, checkpoint.root_hash, source)


def _entries_verify(marks: list[_Mark], batch: int, progress: Callable[[int], None] | None) -> int:
    """Walk the log in order; the number of entries, each recomputed, when all is well. Each
    batch is checked whole first (PostgreSQL flags what is wrong); the tree then takes its
    leaves in one go, stopping at each checkpoint's size to compare roots."""
    frontier = Frontier()
    reached = _Reached(marks)
    for rows in _batches(batch):
        if not rows:
            _fail(
                frontier.size, f"entry {frontier.size} is missing from the log", index=frontier.size
            )
        bad = _first_bad(frontier.size, rows)
        good = rows if bad is None else rows[: bad[0]]
        reached.extend(frontier, [bytes(row[1]) for row in good])
        if bad is not None:
            _fail(frontier.size, bad[1], index=frontier.size, sequence=bad[2])
        if progress is not None:
            progress(frontier.size)
    reached.end(frontier)
    return frontier.size


# Outside a transaction, batches are recomputed by this many database sessions side by side
# (PostgreSQL gives each its own process), while this one takes their leaves in order.
VERIFY_SESSIONS = 2


def _batches(batch: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of each range of `batch` entries up to the last leaf, in order."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(index) FROM audit_auditleaf")
        last = cursor.fetchone()[0]
    if last is None:
        return
    starts = range(0, last + 1, batch)
    if connection.in_atomic_block:
        # (other sessions would not see what this transaction wrote)
        for start in starts:
            yield _batch_rows(start, batch)
        return
    with ThreadPoolExecutor(VERIFY_SESSIONS) as pool:
        # A few batches ahead of the one being taken in, never the whole log in memory.
        ahead: deque[Future[list[tuple[Any, ...]]]] = deque()
        following = iter(starts)
        try:
            while True:
                while len(ahead) <= VERIFY_SESSIONS and (
                    (next_start := next(following, None)) is not None
                ):
                    ahead.append(pool.submit(_batch_rows_apart, next_start, batch))
                if not ahead:
                    return
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


def _batch_rows(start: int, batch: int) -> list[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cursor, catalog_only(cursor) as trail:
        cursor.execute(trail(_BATCH_SQL), [start, start + batch])
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


def _batch_rows_apart(start: int, batch: int) -> list[tuple[Any, ...]]:
    """One batch on a session of this thread's own, closed when done."""
    try:
        return _batch_rows(start, batch)
    finally:
        connection.close()


def _first_bad(size: int, rows: list[tuple[Any, ...]]) -> tuple[int, str, int | None] | None:
    """The first row of a batch starting at entry `size` that is wrong: its place in the batch,
    what is wrong, its event's number."""
    if rows[0][0] == size and rows[-1][0] - size == len(rows) - 1:
        suspects = [place for place, row in enumerate(rows) if row[3] or row[4] is not None]
    else:
        suspects = list(range(len(rows)))
    for place in suspects:
        index, _, sequence, check, legacy, digest = rows[place]
        if index != size + place:
            return place, f"entry {size + place} is missing from the log", None
        if check == 1:
            return place, f"entry {index}: its event is missing", None
        if check == 2 or (legacy is not None and payload_digest(json.loads(legacy)) != digest):
            return place, f"entry {index} (event #{sequence}): {PAYLOAD}", sequence
        if check == 3:
            return place, f"entry {index} (event #{sequence}): {REWRITTEN}", sequence
    return None


class _Reached:
    """The checkpoints the tree is held against, in order of size, as it grows."""

    def __init__(self, marks: list[_Mark]) -> None:
        self.marks, self.at, self.matched = marks, 0, 0

    def extend(self, frontier: Frontier, leaves: list[bytes]) -> None:
        taken = 0
        while (
            self.at < len(self.marks)
            and self.marks[self.at].size <= frontier.size + len(leaves) - taken
        ):
            mark = self.marks[self.at]
            cut = taken + mark.size - frontier.size
            frontier.extend(leaves[taken:cut])
            taken = cut
            if frontier.root() != mark.root:
                since = f"; it matched up to size {self.matched}" if self.matched else ""
                _fail(
                    frontier.size,
                    f"the log's first {frontier.size} entries do not match {mark.source}: "
                    f"an entry before it was changed{since}",
                    bad_size=frontier.size,
                )
            self.matched = frontier.size
            self.at += 1
        frontier.extend(leaves[taken:])

    def end(self, frontier: Frontier) -> None:
        """The log is read to its end: no checkpoint may lie beyond it."""
        if self.at < len(self.marks):
            beyond = self.marks[self.at]
            missing = beyond.size - frontier.size
            _fail(
                frontier.size,
                f"the log holds {frontier.size} entries, but {beyond.source}: "
                f"{missing} entr{'y is' if missing == 1 else 'ies are'} missing",
                bad_size=beyond.size,
            )


def _fail(
    checked: int,
    problem: str,
    *,
    index: int | None = None,
    sequence: int | None = None,
    bad_size: int | None = None,
) -> NoReturn:
    raise _Broken(
        LogReport(
            False,
            checked,
            0,
            problem=problem,
            first_bad_index=index,
            first_bad_sequence=sequence,
            bad_size=bad_size,
        )
    )


def pending_count() -> int:
    """Events written but not yet taken into the log (the sequencer runs every few seconds).
    Only those written since the sequencer's last full pass can be waiting: it looks there."""
    latest = AuditCheckpoint.objects.order_by("-size").values_list("xid_floor", flat=True).first()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM audit_auditevent e WHERE e.writer_xid >= %s"
            " AND NOT EXISTS (SELECT 1 FROM audit_auditleaf l WHERE l.event_id = e.id)",
            [latest or 0],
        )
        return int(cursor.fetchone()[0])


def last_verification() -> AuditEvent | None:
    """The newest full verification's record (its payload holds the verdict)."""
    return AuditEvent.objects.filter(verb="audit.verified").order_by("-sequence").first()


def recent_events(*, verb_prefix: str = "", target: str = "") -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.order_by("-sequence")
    if verb_prefix:
        events = events.filter(verb__startswith=verb_prefix)
    if target:
        events = events.filter(target_type=target)
    return events


def flight_record(
    *, subject: str = "", action_id: str = "", trace_id: str = ""
) -> QuerySet[AuditEvent]:
    """Everything that happened to one business object, or to one action, oldest first; with a
    trace id, only what the request or task of that trace did (alone: all it did)."""
    events = AuditEvent.objects.order_by("sequence")
    if trace_id:
        events = events.filter(trace_id=trace_id)
    if subject:
        return events.filter(subject=subject)
    if action_id:
        return events.filter(target_type="actions.action", target_id=action_id)
    return events
