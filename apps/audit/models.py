from __future__ import annotations

from django.db import models
from django.db.models.expressions import RawSQL


class AuditEvent(models.Model):
    """One recorded state change, written in the transaction of the change. Writers share no
    lock: the sequencer (`apps/audit/log.py`) later takes each committed event into the Merkle
    log as a leaf (`AuditLeaf`), and signed checkpoints of that log prove that no event taken in
    was changed or removed since."""

    class ActorType(models.TextChoices):
        USER = "user"
        AGENT = "agent"
        SYSTEM = "system"

    # The order of writing (a database sequence: unique, rising, with gaps where a transaction
    # rolled back). Not the order of the log: that is the leaf index.
    sequence = models.BigIntegerField(
        unique=True, db_default=RawSQL("nextval('audit_event_sequence')", ()), editable=False
    )
    # The writing transaction's id: the sequencer looks for events not yet in the log only among
    # those written by transactions that were still open when it last looked.
    writer_xid = models.BigIntegerField(
        db_default=RawSQL("pg_current_xact_id()::text::bigint", ()), editable=False, db_index=True
    )
    created_at = models.DateTimeField()
    actor_type = models.CharField(max_length=6, choices=ActorType.choices)
    actor = models.CharField(max_length=150, help_text="username, agent slug or component")
    verb = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=120)
    subject = models.CharField(max_length=200, blank=True, db_index=True)
    # The trace of the request or task that made the change (32 hex digits), when tracing is on:
    # the id its log lines carry and its spans share, so an event leads to them and back.
    trace_id = models.CharField(max_length=32, blank=True, default="")
    payload = models.JSONField(default=dict)
    payload_digest = models.CharField(max_length=64)
    # The payload exactly as digested (canonical JSON), so that PostgreSQL can recompute the
    # digest itself. Empty (NULL) on events written before it was kept: their digests are
    # recomputed from `payload` in Python.
    payload_canonical = models.TextField(null=True, blank=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["sequence"]
        indexes = [
            models.Index(fields=["target_type", "target_id", "sequence"]),
            # Only traced events are looked up by trace; untraced ones cost the index nothing.
            models.Index(
                fields=["trace_id", "sequence"],
                name="audit_event_trace",
                condition=~models.Q(trace_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.verb} {self.target_type}:{self.target_id}"


class AuditLeaf(models.Model):
    """An event's place in the Merkle log: leaf `index` is the event, hashed as RFC 9162 hashes
    a leaf (SHA-256 of 0x00 and the event's entry encoding)."""

    index = models.BigIntegerField(primary_key=True)
    event = models.OneToOneField(AuditEvent, on_delete=models.PROTECT, related_name="leaf")
    hash = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return f"leaf {self.index}"


class AuditNode(models.Model):
    """The hash of a perfect subtree of the log: leaves [index * 2^level, (index + 1) * 2^level),
    level >= 1. Kept so that any proof is a handful of reads, never a rebuild."""

    pk = models.CompositePrimaryKey("level", "index")
    level = models.SmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return f"node {self.level}/{self.index}"


class AuditCheckpoint(models.Model):
    """A signed statement of the log's size and root hash: a C2SP tlog-checkpoint in a C2SP
    signed note. Also appended to the witness file outside the database when it is made."""

    size = models.BigIntegerField(unique=True)
    root_hash = models.BinaryField(max_length=32)
    note = models.TextField(help_text="the signed note, exactly as published")
    created_at = models.DateTimeField()
    # Where the sequencer goes on from: the hashes of the tree's maximal perfect subtrees
    # (hex, largest first), and the oldest transaction that was still open when it ran.
    frontier = models.JSONField(default=list)
    xid_floor = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-size"]

    def __str__(self) -> str:
        return f"checkpoint at size {self.size}"
