"""What the gate reads of the registry on every proposal, kept in each process between requests:
agent keys and their agents, an agent's workflows and tools, a key's scope, each workflow's
active Decision Book version; and, for the workers, the agent, workflow, tool and book version
an action names.

Any change to those tables moves the registry's generation (triggers, registry migrations 0004
and 0005).
Each proposal reads the generation once, first; a snapshot of another generation is dropped and
what the proposal needs is read again. What a proposal sees is therefore never older than the
start of its request, as when it read every row itself. Kill switches and circuits are not kept:
the gate reads them in its transaction, and the claim stays the enforcement point."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import cast

from django.db import connection
from django.db.models import Model

from apps.books.models import BookVersion
from apps.registry.models import Agent, AgentKey, Tool, Workflow


@dataclass
class _Snapshot:
    generation: int
    served: dict[int, tuple[str, ...]] = field(default_factory=dict)  # agent -> its workflows
    tools: dict[tuple[int, str], Tool | None] = field(default_factory=dict)  # (agent, slug)
    scopes: dict[int, frozenset[str]] = field(default_factory=dict)  # key -> its own scope
    versions: dict[str, tuple[BookVersion | None, Workflow | None]] = field(default_factory=dict)
    keys: dict[str, AgentKey | None] = field(default_factory=dict)  # prefix -> key, its agent
    rows: dict[tuple[type[Model], int], Model | None] = field(default_factory=dict)  # by id


_current: _Snapshot | None = None
_lock = threading.Lock()


def registry_view() -> RegistryView:
    """The registry as of now: the kept snapshot when the generation has not moved."""
    global _current
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM registry_registrygeneration WHERE id = 1")
        row = cursor.fetchone()
    if row is None:
        # (no change recorded since the table was emptied: nothing can be trusted to be kept)
        return RegistryView(_Snapshot(generation=-1), keep=False)
    with _lock:
        if _current is None or _current.generation != row[0]:
            _current = _Snapshot(generation=row[0])
        return RegistryView(_current, keep=True)


class RegistryView:
    """Reads through a snapshot: each answer read once per generation, then kept (unless the
    generation is unknown, when nothing is kept). Rows handed out are shared: read them only."""

    def __init__(self, snapshot: _Snapshot, *, keep: bool) -> None:
        self._snapshot = snapshot if keep else _Snapshot(generation=snapshot.generation)

    def key(self, prefix: str) -> AgentKey | None:
        """The key of that prefix with its agent, as last read (its use is stamped apart)."""
        if prefix not in self._snapshot.keys:
            self._snapshot.keys[prefix] = (
                AgentKey.objects.select_related("agent").filter(prefix=prefix).first()
            )
        return self._snapshot.keys[prefix]

    def served(self, agent: Agent) -> tuple[str, ...]:
        """The slugs of the workflows the agent serves, sorted."""
        found = self._snapshot.served.get(agent.pk)
        if found is None:
            found = tuple(sorted(agent.workflows.values_list("slug", flat=True)))
            self._snapshot.served[agent.pk] = found
        return found

    def key_workflows(self, key: AgentKey, *, served: tuple[str, ...]) -> set[str]:
        """The workflows a key may act in: its own scope within the agent's, or all of them."""
        scoped = self._snapshot.scopes.get(key.pk)
        if scoped is None:
            scoped = frozenset(key.workflows.values_list("slug", flat=True))
            self._snapshot.scopes[key.pk] = scoped
        return set(scoped) & set(served) if scoped else set(served)

    def tool(self, agent: Agent, slug: str) -> Tool | None:
        """The agent's tool of that slug, or None when it may not use it."""
        entry = (agent.pk, slug)
        if entry not in self._snapshot.tools:
            self._snapshot.tools[entry] = agent.tools.filter(slug=slug).first()
        return self._snapshot.tools[entry]

    def active(self, workflow_slug: str) -> tuple[BookVersion | None, Workflow | None]:
        """The workflow's published book version (with its workflow), and the workflow."""
        found = self._snapshot.versions.get(workflow_slug)
        if found is None:
            version = (
                BookVersion.objects.filter(
                    workflow__slug=workflow_slug, status=BookVersion.Status.PUBLISHED
                )
                .select_related("workflow")
                .first()
            )
            workflow = (
                version.workflow
                if version is not None
                else Workflow.objects.filter(slug=workflow_slug).first()
            )
            found = (version, workflow)
            self._snapshot.versions[workflow_slug] = found
        return found

    def row[M: Agent | Workflow | Tool | BookVersion](self, model: type[M], pk: int) -> M | None:
        """The agent, workflow, tool or book version of that id (those tables move the
        generation), or None when there is none."""
        entry = (cast(type[Model], model), pk)
        if entry not in self._snapshot.rows:
            self._snapshot.rows[entry] = model._default_manager.filter(pk=pk).first()
        return cast("M | None", self._snapshot.rows[entry])
