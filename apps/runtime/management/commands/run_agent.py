"""manage.py run_agent WORKFLOW [--subject S] [--input JSON]: start one run of a workflow's
hosted agent (a worker executes it)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.runtime.services import RunRefused, run_start


class Command(BaseCommand):
    help = "Start a run of a workflow's hosted agent and print its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="slug of the workflow")
        parser.add_argument("--subject", default="", help='the business object, e.g. "order:1003"')
        parser.add_argument("--input", default="{}", help="the run's input, a JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["input"])
        except json.JSONDecodeError as exc:
            message = f"--input: not valid JSON: {exc.msg} at column {exc.colno}"
            raise CommandError(message) from None
        if not isinstance(data, dict):
            raise CommandError("--input: expected a JSON object")
        try:
            run = run_start(
                workflow=options["workflow"], subject=options["subject"], input=data, source="cli"
            )
        except RunRefused as exc:
            raise CommandError(f"{exc.field or 'run'}: {exc.message}") from None
        self.stdout.write(f"Run {run.pk} of {run.workflow.slug} started.")
