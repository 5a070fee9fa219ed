from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """One recorded state change. Events form a single hash chain: each event's hash covers its
    own content and the previous event's hash, so editing or removing any event breaks every
    later link."""

    class ActorType(models.TextChoices):
        USER = "user"
        AGENT = "agent"
        SYSTEM = "system"

    sequence = models.BigIntegerField(unique=True)
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
    # digest itself when the chain is verified. Empty (NULL) on events written before it was kept:
    # their digests are recomputed from `payload` in Python.
    payload_canonical = models.TextField(null=True, blank=True, editable=False)  # noqa: DJ001
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

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


class ChainHead(models.Model):
    """The single row that writers lock to append to the chain one at a time."""

    last_sequence = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"chain head at #{self.last_sequence}"
