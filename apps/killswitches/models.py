"""Kill switches: a stop at one scope (everything, a workflow, an agent or a tool)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Scope(models.TextChoices):
    GLOBAL = "global"
    WORKFLOW = "workflow"
    AGENT = "agent"
    TOOL = "tool"


class KillSwitch(models.Model):
    """One engagement of a switch, from engaged to released. While `released_at` is empty it
    covers every action in its scope: the gate records new proposals there as blocked, and no
    queued action in it starts running."""

    scope = models.CharField(max_length=8, choices=Scope.choices)
    target = models.CharField(max_length=63, blank=True, help_text="slug; empty for global")
    reason = models.TextField()
    engaged_by = models.CharField(max_length=150)
    engaged_at = models.DateTimeField()
    released_by = models.CharField(max_length=150, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-engaged_at"]
        indexes = [models.Index(fields=["released_at", "scope", "target"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope="global", target="") | (~Q(scope="global") & ~Q(target="")),
                name="killswitch_target_matches_scope",
            )
        ]

    def __str__(self) -> str:
        where = self.scope if self.scope == Scope.GLOBAL else f"{self.scope}:{self.target}"
        return f"{where} ({'engaged' if self.released_at is None else 'released'})"

    @property
    def engaged(self) -> bool:
        return self.released_at is None


def covering(*, workflow: str, agent: str, tool: str) -> Q:
    """Engaged switches that cover an action of this workflow, agent and tool."""
    return Q(released_at__isnull=True) & (
        Q(scope=Scope.GLOBAL)
        | Q(scope=Scope.WORKFLOW, target=workflow)
        | Q(scope=Scope.AGENT, target=agent)
        | Q(scope=Scope.TOOL, target=tool)
    )
