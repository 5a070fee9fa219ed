"""Engaging and releasing kill switches, and the firewall's quarantine of an agent.

Every engage and release is audited in its own transaction. An engage passes the fence
(apps/killswitches/coverage.py) so that its engage time is later than the start of every action
claimed before it; a release sends the queued actions it was holding back to the workers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from apps.actions.dispatch import actions_resume
from apps.actions.models import Action, Status
from apps.actions.states import Actor
from apps.audit.services import audit_record
from apps.core.errors import ServiceError
from apps.killswitches.coverage import fence_for_engage, in_scope
from apps.killswitches.models import KillSwitch, Scope
from apps.registry.models import Agent, Tool, Workflow

logger = logging.getLogger(__name__)

REASON_MAX = 2000
VIAS = frozenset({"console", "api", "command", "firewall"})


class SwitchError(ServiceError):
    """A switch operation that cannot be done; `field` names the input at fault, if any."""


class SwitchInvalid(SwitchError):
    """Bad input: an unknown scope or target, a missing reason."""


class SwitchConflict(SwitchError):
    """The switch is already in the state asked for."""


def actor_name(actor: Actor) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return str(actor.get_username()) or "anonymous"


def scope_check(scope: str, target: str) -> tuple[str, str]:
    """(scope, target) cleaned, or SwitchInvalid naming the field. A target must exist."""
    scope = (scope or "").strip().lower()
    target = (target or "").strip()
    if scope not in Scope.values:
        raise SwitchInvalid(
            f"unknown scope {scope!r}; scopes are {', '.join(Scope.values)}", "scope"
        )
    if scope == Scope.GLOBAL:
        if target:
            raise SwitchInvalid("a global switch has no target: leave it empty", "target")
        return scope, ""
    if not target:
        raise SwitchInvalid(f"a {scope} switch needs the {scope}'s slug", "target")
    if scope == Scope.WORKFLOW:
        exists = Workflow.objects.filter(slug=target).exists()
    elif scope == Scope.AGENT:
        exists = Agent.objects.filter(slug=target).exists()
    else:
        exists = Tool.objects.filter(slug=target).exists()
    if not exists:
        raise SwitchInvalid(f"no {scope} {target!r} is registered", "target")
    return scope, target


def reason_check(reason: str, field: str = "reason") -> str:
    reason = (reason or "").strip()
    if not reason:
        raise SwitchInvalid("say why: the reason is shown to on-call and kept in the audit", field)
    if len(reason) > REASON_MAX:
        raise SwitchInvalid(f"at most {REASON_MAX} characters, got {len(reason)}", field)
    return reason


def switch_engage(
    *,
    scope: str,
    target: str = "",
    reason: str,
    actor: Actor,
    via: str,
) -> KillSwitch:
    """Engage a switch. From the moment this commits, no action in its scope starts running
    and the gate records new proposals there as blocked. Refused (SwitchConflict) when the same
    scope is already stopped by on-call."""
    assert via in VIAS
    scope, target = scope_check(scope, target)
    reason = reason_check(reason)
    with transaction.atomic():
        fence_for_engage()
        existing = KillSwitch.objects.filter(
            released_at__isnull=True, scope=scope, target=target, kind=KillSwitch.Kind.MANUAL
        ).first()
        if existing is not None:
            raise SwitchConflict(
                f"{existing.where} is already stopped (switch {existing.pk}, engaged "
                f"{existing.engaged_at:%Y-%m-%d %H:%M:%S} UTC by {existing.engaged_by})"
            )
        switch = _insert(
            scope=scope,
            target=target,
            reason=reason,
            kind=KillSwitch.Kind.MANUAL,
            engaged_by=actor_name(actor),
            via=via,
        )
        audit_record(
            actor=actor,
            verb="killswitch.engaged",
            target=switch,
            data=_engage_data(switch),
        )
    logger.warning("kill switch %s engaged on %s by %s", switch.pk, switch.where, switch.engaged_by)
    return switch


def _insert(
    *,
    scope: str,
    target: str,
    reason: str,
    kind: str,
    engaged_by: str,
    via: str,
    evidence: dict[str, Any] | None = None,
) -> KillSwitch:
    # engaged_at is the database's clock at this statement, after the fence was taken.
    switch = KillSwitch.objects.create(
        scope=scope,
        target=target,
        reason=reason,
        kind=kind,
        evidence=evidence or {},
        engaged_by=engaged_by,
        engaged_via=via,
        engaged_at=Now(),
    )
    switch.refresh_from_db(fields=["engaged_at"])
    return switch


def _engage_data(switch: KillSwitch) -> dict[str, Any]:
    return {
        "scope": switch.scope,
        "target": switch.target,
        "kind": switch.kind,
        "reason": switch.reason,
        "via": switch.engaged_via,
        "engaged_at": switch.engaged_at.isoformat(),
        **({"evidence": switch.evidence} if switch.evidence else {}),
    }


@dataclass(frozen=True)
class Released:
    switch: KillSwitch
    agent_reactivated: bool
    resumed: int  # queued actions sent back to the workers


def switch_release(*, switch_id: int, reason: str, actor: Actor, via: str) -> Released:
    """Release a switch. The queued actions it held back go to the workers again (those still
    covered by another switch are refused by the claim, as before). Releasing a quarantine makes
    its agent active again."""
    assert via in VIAS
    reason = reason_check(reason)
    reactivated = False
    with transaction.atomic():
        switch = KillSwitch.objects.select_for_update().filter(pk=switch_id).first()
        if switch is None:
            raise SwitchInvalid(f"no kill switch {switch_id}", "switch")
        if switch.released_at is not None:
            raise SwitchConflict(
                f"switch {switch.pk} on {switch.where} was already released "
                f"{switch.released_at:%Y-%m-%d %H:%M:%S} UTC by {switch.released_by}"
            )
        KillSwitch.objects.filter(pk=switch.pk).update(
            released_at=Now(), released_by=actor_name(actor), release_reason=reason
        )
        switch.refresh_from_db()
        audit_record(
            actor=actor,
            verb="killswitch.released",
            target=switch,
            data={
                "scope": switch.scope,
                "target": switch.target,
                "kind": switch.kind,
                "reason": reason,
                "via": via,
                "released_at": switch.released_at.isoformat() if switch.released_at else None,
            },
        )
        if switch.kind == KillSwitch.Kind.QUARANTINE:
            reactivated = _reactivate(switch, actor=actor, reason=reason)
        waiting = list(
            Action.objects.filter(in_scope(switch.scope, switch.target), status=Status.QUEUED)
            .order_by("queued_at")
            .values_list("pk", flat=True)
        )
        actions_resume(waiting)
    logger.warning(
        "kill switch %s on %s released by %s", switch.pk, switch.where, actor_name(actor)
    )
    return Released(switch=switch, agent_reactivated=reactivated, resumed=len(waiting))


def _reactivate(switch: KillSwitch, *, actor: Actor, reason: str) -> bool:
    """The agent of a released quarantine is active again, unless another quarantine holds it."""
    others = KillSwitch.objects.filter(
        released_at__isnull=True,
        kind=KillSwitch.Kind.QUARANTINE,
        scope=Scope.AGENT,
        target=switch.target,
    ).exclude(pk=switch.pk)
    if others.exists():
        return False
    agent = Agent.objects.select_for_update(no_key=True).filter(slug=switch.target).first()
    if agent is None or agent.status != Agent.Status.QUARANTINED:
        return False
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.ACTIVE)
    audit_record(
        actor=actor,
        verb="agent.reactivated",
        target=agent,
        data={"from": Agent.Status.QUARANTINED, "to": Agent.Status.ACTIVE, "reason": reason},
    )
    return True


def agent_quarantine(
    *, agent_id: int, trigger: str, reason: str, evidence: dict[str, Any]
) -> KillSwitch | None:
    """Quarantine an agent: its status becomes quarantined (the gate refuses its proposals)
    and an agent switch with the evidence as its reason stops its queued work. Returns None
    when a quarantine of that agent is already engaged (two requests tripping at once)."""
    with transaction.atomic():
        fence_for_engage()
        # no_key: the gate's inserts hold key-share locks on the agent row; they need not wait.
        agent = Agent.objects.select_for_update(no_key=True).filter(pk=agent_id).first()
        if agent is None:
            return None
        engaged = KillSwitch.objects.filter(
            released_at__isnull=True,
            kind=KillSwitch.Kind.QUARANTINE,
            scope=Scope.AGENT,
            target=agent.slug,
        )
        if engaged.exists():
            return None
        previous = agent.status
        Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.QUARANTINED)
        switch = _insert(
            scope=Scope.AGENT,
            target=agent.slug,
            reason=reason,
            kind=KillSwitch.Kind.QUARANTINE,
            engaged_by="system:firewall",
            via="firewall",
            evidence={"trigger": trigger, **evidence},
        )
        audit_record(
            actor="system:firewall",
            verb="agent.quarantined",
            target=agent,
            data={"from": previous, "to": Agent.Status.QUARANTINED, "switch": switch.pk},
        )
        audit_record(
            actor="system:firewall",
            verb="killswitch.engaged",
            target=switch,
            data=_engage_data(switch),
        )
    logger.warning("agent %s quarantined by the firewall (%s): %s", agent.slug, trigger, reason)
    return switch
