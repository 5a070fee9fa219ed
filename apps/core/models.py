from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The last time a background component proved it was alive (the scheduler's beat runs a
    task on a worker that stamps this row)."""

    component = models.CharField(max_length=40, unique=True)
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.component} @ {self.last_seen:%Y-%m-%d %H:%M:%S}"
