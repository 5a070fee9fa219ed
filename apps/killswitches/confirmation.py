"""What on-call confirmed, held against what a rollback or a drain would act on now.

The confirmation step shows a set of actions (the last N succeeded of an agent or workflow, or
the queued and held work of a scope) and the submit carries their ids back. Between the two, a
newer action may have succeeded or new work been queued: acting on the set as it is at submit
time would touch actions nobody saw. So the service selects again and acts only when the set
is the one confirmed; otherwise it does nothing and says what changed, for the person to look
again. The ids sent back are only ever compared, never acted on as such: a tampered form can at
worst be asked again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

from apps.actions.models import Action
from apps.killswitches.switches import SwitchConflict, SwitchInvalid

FIELD = "expected_ids"
LISTED_MAX = 10  # ids named per kind of change in a one-line message; the rest are counted


def expected_ids_check(raw: str | Iterable[object] | None) -> list[str] | None:
    """The confirmed ids as canonical strings, in the order given; None when none were sent.
    A string is a comma-separated list (the console's hidden field, the command's --expect)."""
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    ids: list[str] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            ids.append(str(UUID(text)))
        except ValueError:
            raise SwitchInvalid(f"{text[:40]!r} is not an action id", FIELD) from None
    if len(set(ids)) != len(ids):
        raise SwitchInvalid("names an action more than once", FIELD)
    return ids


class SetChanged(SwitchConflict):
    """The set selected now is not the set confirmed: nothing was done.

    `current` is the set now (to show and confirm again), `added` the actions in it that were
    not confirmed, `gone` the confirmed ones no longer in it (as they are now), `missing` the
    confirmed ids of no action at all, `reordered` true when only the order differs (a rollback
    undoes newest first). `detail` is one sentence for a person, `change` what changed."""

    def __init__(
        self,
        *,
        verb: str,
        done: str,
        current: list[Action],
        added: list[Action],
        gone: list[Action],
        missing: list[str],
        reordered: bool,
    ) -> None:
        self.current = current
        self.added = added
        self.gone = gone
        self.missing = missing
        self.reordered = reordered
        self.detail = (
            f"The actions to {verb} changed since they were confirmed; nothing was {done}."
        )
        self.change = self._change()
        super().__init__(f"{self.detail[0].lower()}{self.detail[1:-1]}: {self.change}", FIELD)

    @property
    def added_ids(self) -> frozenset[str]:
        return frozenset(str(action.pk) for action in self.added)

    def _change(self) -> str:
        parts = []
        if self.added:
            parts.append(f"{len(self.added)} new: {_listed(self.added)}")
        if self.gone or self.missing:
            gone = _listed(self.gone, extra=self.missing)
            parts.append(f"{len(self.gone) + len(self.missing)} no longer in it: {gone}")
        if self.reordered and not parts:
            parts.append("the same actions in another order")
        parts.append(f"{len(self.current)} now")
        return "; ".join(parts)


def _listed(actions: Sequence[Action], extra: Sequence[str] = ()) -> str:
    names = [f"{action.pk} ({action.subject or '-'}, {action.status})" for action in actions]
    names += [f"{missing} (no such action)" for missing in extra]
    shown = ", ".join(names[:LISTED_MAX])
    more = len(names) - LISTED_MAX
    return f"{shown} and {more} more" if more > 0 else shown


def confirmed_check(
    *,
    expected: Sequence[str] | None,
    current: list[Action],
    verb: str,
    done: str,
    ordered: bool,
) -> None:
    """Nothing when no set was confirmed (`expected` None) or it is the set `current`; else
    SetChanged. `ordered`: the order is part of what was confirmed."""
    if expected is None:
        return
    now = [str(action.pk) for action in current]
    if (now == list(expected)) if ordered else (set(now) == set(expected)):
        return
    confirmed = set(expected)
    added = [action for action in current if str(action.pk) not in confirmed]
    gone_ids = [action_id for action_id in expected if action_id not in set(now)]
    found = {
        str(action.pk): action
        for action in Action.objects.filter(pk__in=gone_ids).select_related("agent", "tool")
    }
    raise SetChanged(
        verb=verb,
        done=done,
        current=current,
        added=added,
        gone=[found[action_id] for action_id in gone_ids if action_id in found],
        missing=[action_id for action_id in gone_ids if action_id not in found],
        reordered=not added and not gone_ids,
    )
