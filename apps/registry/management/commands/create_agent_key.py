"""manage.py create_agent_key AGENT_SLUG [--expires-in DAYS] [--label TEXT] [--workflow SLUG ...]

Prints the new key once: only its digest is stored, so it cannot be shown again. Store it where
the agent reads its secrets; a lost key is revoked and replaced, never recovered.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.registry.models import Agent, AgentKey, Workflow
from apps.registry.services import agent_key_create

# How the command appears in the audit trail (a system actor, not a person).
CLI_ACTOR = "system:cli"
LABEL_MAX = AgentKey._meta.get_field("label").max_length or 120


class Command(BaseCommand):
    help = "Make an API key for an agent and print it once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("agent", metavar="AGENT_SLUG")
        parser.add_argument(
            "--expires-in",
            dest="expires_in",
            metavar="DAYS",
            default=None,
            help="days until the key stops working (default: never)",
        )
        parser.add_argument("--label", default="", help="what the key is for, e.g. 'prod runner'")
        parser.add_argument(
            "--workflow",
            dest="workflows",
            metavar="SLUG",
            action="extend",
            nargs="+",
            default=[],
            help="limit the key to these of the agent's workflows (default: all it serves)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"AGENT_SLUG: no agent {options['agent']!r} is registered")
        expires_in = self._days(options["expires_in"])
        label = options["label"].strip()
        if len(label) > LABEL_MAX:
            raise CommandError(f"--label: at most {LABEL_MAX} characters, got {len(label)}")
        scope = self._scope(agent, options["workflows"])
        try:
            issued = agent_key_create(
                agent=agent,
                actor=CLI_ACTOR,
                label=label,
                expires_in_days=expires_in,
                workflows=scope,
            )
        except ValueError as exc:  # checked above; kept so a new rule still reads as one line
            raise CommandError(str(exc)) from None
        record = issued.record
        expires = f"{record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "never"
        served = sorted(agent.workflows.values_list("slug", flat=True))
        if scope:
            scope_text = ", ".join(sorted(workflow.slug for workflow in scope))
        else:
            scope_text = f"all of {agent.slug}'s workflows ({', '.join(served) or 'none yet'})"
        self.stdout.write(f"created a key for {agent.slug}")
        self.stdout.write(f"key: {issued.key}")
        self.stdout.write(f"prefix: {record.prefix}")
        self.stdout.write(f"expires: {expires}")
        self.stdout.write(f"scope: {scope_text}")
        self.stdout.write("This key is shown once: store it now. Only its digest is kept.")

    @staticmethod
    def _days(value: str | None) -> int | None:
        if value is None:
            return None
        try:
            days = int(value)
        except ValueError:
            raise CommandError(f"--expires-in: {value!r} is not a whole number of days") from None
        if days <= 0:
            raise CommandError(f"--expires-in: must be a positive number of days, got {days}")
        return days

    @staticmethod
    def _scope(agent: Agent, slugs: list[str]) -> list[Workflow]:
        wanted = list(dict.fromkeys(slug.strip() for slug in slugs))
        if not wanted:
            return []
        found = {workflow.slug: workflow for workflow in Workflow.objects.filter(slug__in=wanted)}
        unknown = [slug for slug in wanted if slug not in found]
        if unknown:
            raise CommandError(f"--workflow: no workflow {', '.join(map(repr, unknown))}")
        served = set(agent.workflows.values_list("slug", flat=True))
        outside = [slug for slug in wanted if slug not in served]
        if outside:
            raise CommandError(
                f"--workflow: {agent.slug} does not serve {', '.join(outside)}"
                f" (it serves {', '.join(sorted(served)) or 'no workflow'})"
            )
        return [found[slug] for slug in wanted]
