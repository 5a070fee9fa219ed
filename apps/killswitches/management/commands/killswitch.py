"""manage.py killswitch engage --scope {global,workflow,agent,tool} [--target SLUG] --reason TEXT
manage.py killswitch release (--id ID | --scope S [--target SLUG]) --reason TEXT
manage.py killswitch list [--all]
manage.py killswitch proof ID
manage.py killswitch drain --scope S [--target SLUG] --mode {cancel,hand_over} --reason TEXT
                           [--preview | --expect ID,ID,...]
manage.py killswitch rollback --scope {agent,workflow} --target SLUG --count N --reason TEXT
                              [--preview | --expect ID,ID,...]

Each prints one JSON document on stdout (engage and release print the switch and its proof),
for scripts and pagers. Bad input exits 1 with one line naming the option at fault. The
rollback runs here, in this process, with a line on stderr per action as it goes.

Drain and rollback act on the actions chosen when they run. `--preview` prints those actions
and does nothing, with `expect`, their ids; `--expect` with those ids drains or rolls back only
if the actions chosen are still exactly those (for a rollback, in that order). Otherwise
nothing is done and the command exits 3 with one line saying what changed."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from apps.actions.models import Action
from apps.killswitches.confirmation import SetChanged, expected_ids_check
from apps.killswitches.drain import drain_preview, drain_run
from apps.killswitches.models import KillSwitch, RollbackRun, Scope
from apps.killswitches.proof import switch_proof
from apps.killswitches.rollback import rollback_perform, rollback_preview, rollback_request
from apps.killswitches.selectors import switches_listed
from apps.killswitches.switches import (
    SwitchError,
    SwitchInvalid,
    scope_check,
    switch_engage,
    switch_release,
)

CLI_ACTOR = "system:cli"
SET_CHANGED_EXIT = 3
OPTIONS = {
    "expected_ids": "--expect",
    "scope": "--scope",
    "target": "--target",
    "reason": "--reason",
    "mode": "--mode",
    "count": "--count",
    "switch": "switch",
}


class Command(BaseCommand):
    help = "Engage, release, list and prove kill switches; drain a scope; roll back the last N."

    def add_arguments(self, parser: ArgumentParser) -> None:
        verbs = parser.add_subparsers(
            dest="verb", metavar="{engage,release,list,proof,drain,rollback}"
        )
        # Options are checked here, not by argparse, so that a mistake reads as one line.
        engage = verbs.add_parser("engage", help="stop a scope")
        self._scope_options(engage)
        release = verbs.add_parser("release", help="release a switch, by id or by scope")
        release.add_argument("--id", dest="switch_id", default=None)
        self._scope_options(release, scope_required=False)
        listing = verbs.add_parser("list", help="engaged switches (with --all, also released)")
        listing.add_argument("--all", action="store_true")
        proof = verbs.add_parser("proof", help="the proof of one engagement, as JSON")
        proof.add_argument("switch_id", metavar="ID")
        drain = verbs.add_parser("drain", help="cancel or hand over queued and held work")
        self._scope_options(drain)
        drain.add_argument("--mode", default="")
        self._confirm_options(drain)
        rollback = verbs.add_parser("rollback", help="undo the last N succeeded actions")
        self._scope_options(rollback)
        rollback.add_argument("--count", default="")
        self._confirm_options(rollback)

    @staticmethod
    def _scope_options(parser: ArgumentParser, *, scope_required: bool = True) -> None:
        parser.add_argument("--scope", default="" if scope_required else None)
        parser.add_argument("--target", default="", metavar="SLUG")
        parser.add_argument("--reason", default="")

    @staticmethod
    def _confirm_options(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--preview", action="store_true", help="print the actions it would touch; do nothing"
        )
        parser.add_argument(
            "--expect", default=None, metavar="ID,ID,...", help="act only on exactly these"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options.get("verb")
        if verb is None:
            raise CommandError("give a verb: engage, release, list, proof, drain or rollback")
        try:
            document = getattr(self, f"_{verb}")(options)
        except SetChanged as exc:
            raise CommandError(
                f"--expect: {exc.message}; --preview shows the set now",
                returncode=SET_CHANGED_EXIT,
            ) from None
        except SwitchError as exc:
            where = OPTIONS.get(exc.field, exc.field)
            raise CommandError(f"{where}: {exc.message}" if where else exc.message) from None
        self.stdout.write(json.dumps(document, indent=2, cls=DjangoJSONEncoder))

    def _engage(self, options: dict[str, Any]) -> dict[str, Any]:
        switch = switch_engage(
            scope=options["scope"],
            target=options["target"],
            reason=options["reason"],
            actor=CLI_ACTOR,
            via="command",
        )
        return switch_proof(switch).as_dict()

    def _release(self, options: dict[str, Any]) -> dict[str, Any]:
        switch = self._switch_to_release(options)
        released = switch_release(
            switch_id=switch.pk, reason=options["reason"], actor=CLI_ACTOR, via="command"
        )
        return switch_proof(released.switch).as_dict() | {
            "agent_reactivated": released.agent_reactivated,
            "resumed": released.resumed,
        }

    @staticmethod
    def _switch_to_release(options: dict[str, Any]) -> KillSwitch:
        if options["switch_id"] is not None:
            return _switch(options["switch_id"])
        if options["scope"] is None:
            raise SwitchInvalid("name the switch: --id ID, or --scope (and --target)", "scope")
        scope, target = scope_check(options["scope"], options["target"])
        engaged = list(
            KillSwitch.objects.filter(released_at__isnull=True, scope=scope, target=target)
        )
        where = scope if scope == Scope.GLOBAL else f"{scope} {target}"
        if not engaged:
            raise SwitchInvalid(f"no kill switch is engaged on {where}", "scope")
        if len(engaged) > 1:
            ids = ", ".join(str(switch.pk) for switch in engaged)
            raise SwitchInvalid(f"{len(engaged)} switches are engaged on {where}: {ids}", "switch")
        return engaged[0]

    def _list(self, options: dict[str, Any]) -> dict[str, Any]:
        found = switches_listed(engaged=None if options["all"] else True, limit=200)
        return {"switches": [switch_proof(switch).as_dict() for switch in found]}

    def _proof(self, options: dict[str, Any]) -> dict[str, Any]:
        return switch_proof(_switch(options["switch_id"])).as_dict()

    def _drain(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["preview"]:
            plan = drain_preview(scope=options["scope"], target=options["target"])
            return {
                "scope": options["scope"],
                "target": options["target"],
                "queued": plan.queued,
                "held": plan.held,
                "expect": ",".join(plan.ids),
                "actions": [_planned(action) for action in plan.actions],
            }
        run = drain_run(
            scope=options["scope"],
            target=options["target"],
            mode=options["mode"],
            reason=options["reason"],
            actor=CLI_ACTOR,
            expected=expected_ids_check(options["expect"]),
        )
        return {
            "drain": run.pk,
            "scope": run.scope,
            "target": run.target,
            "mode": run.mode,
            "report": run.report,
        }

    def _rollback(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["preview"]:
            chosen = rollback_preview(
                scope=options["scope"], target=options["target"], count=options["count"]
            )
            return {
                "scope": options["scope"],
                "target": options["target"],
                "count": len(chosen),
                "expect": ",".join(str(action.pk) for action in chosen),
                "actions": [_planned(action) for action in chosen],
            }
        # The run is recorded as for the console; this process undoes it at once rather than
        # leaving it to a worker (the worker's task finds it finished and does nothing).
        run = rollback_request(
            scope=options["scope"],
            target=options["target"],
            count=options["count"],
            reason=options["reason"],
            actor=CLI_ACTOR,
            expected=expected_ids_check(options["expect"]),
            dispatch=False,
        )
        self.stderr.write(f"rolling back {run.total} action(s) of {run.where}, newest first")
        finished = rollback_perform(run_id=run.pk, progress=self._progress)
        return {
            "rollback": finished.pk,
            "scope": finished.scope,
            "target": finished.target,
            "state": finished.state,
            "report": finished.report,
        }

    def _progress(self, run: RollbackRun, entry: dict[str, Any]) -> None:
        self.stderr.write(
            f"{run.done}/{run.total} {entry['action']} {entry['subject']}: "
            f"{entry['outcome']} ({entry['detail']})"
        )


def _planned(action: Action) -> dict[str, Any]:
    return {
        "action": str(action.pk),
        "agent": action.agent.slug,
        "tool": action.tool.slug,
        "subject": action.subject,
        "status": action.status,
        "reversible": action.tool.reversible,
        "created_at": action.created_at,
        "finished_at": action.finished_at,
    }


def _switch(raw: str) -> KillSwitch:
    try:
        switch_id = int(raw)
    except ValueError:
        raise SwitchInvalid(f"{raw!r} is not a switch id (a whole number)", "switch") from None
    switch = KillSwitch.objects.filter(pk=switch_id).first()
    if switch is None:
        raise SwitchInvalid(f"no kill switch {switch_id}", "switch")
    return switch
