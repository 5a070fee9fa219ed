"""`manage.py export_feedback [--since YYYY-MM-DD] [--output FILE]`: every review decision as
JSON Lines ({context, correction, rationale}), for retraining and audit."""

from __future__ import annotations

import sys
from datetime import datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.reviews.selectors import feedback_lines


class Command(BaseCommand):
    help = "Write every review decision as JSON Lines (stdout, or --output FILE)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="only decisions on or after this date (YYYY-MM-DD)")
        parser.add_argument("--output", help="write to this file instead of stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        since = None
        if options["since"]:
            try:
                day = datetime.strptime(options["since"], "%Y-%m-%d").date()
            except ValueError:
                raise CommandError(
                    f"--since: expected a date as YYYY-MM-DD, got {options['since']!r}"
                ) from None
            since = timezone.make_aware(datetime.combine(day, time.min))
        count = 0
        try:
            out = open(options["output"], "w", encoding="utf-8") if options["output"] else None  # noqa: SIM115
        except OSError as exc:
            raise CommandError(
                f"--output: cannot write {options['output']}: {exc.strerror}"
            ) from None
        target = out or sys.stdout
        try:
            for line in feedback_lines(since):
                target.write(line)
                count += 1
        finally:
            if out is not None:
                out.close()
        self.stderr.write(f"{count} decision(s) exported")
