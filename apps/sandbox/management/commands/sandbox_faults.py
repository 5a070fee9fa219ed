"""manage.py sandbox_faults MODE [--delay-ms N]

Make the sandbox system of record healthy, slow, failing or flaky, for a demo of timeouts,
retries and circuit breakers. The same switch as `POST /sandbox/faults`."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.sandbox.models import FaultMode
from apps.sandbox.params import SandboxError
from apps.sandbox.services import faults_set


class Command(BaseCommand):
    help = (
        "Set the sandbox's faults switch: healthy, slow (waits --delay-ms), failing (answers 503) "
        "or flaky (every other request answers 503)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        # No argparse `choices`: a wrong mode gets one line naming the modes, not a usage dump.
        parser.add_argument("mode", help=", ".join(FaultMode.values))
        parser.add_argument(
            "--delay-ms",
            type=int,
            default=None,
            help="how long slow mode waits before answering (default 2000)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            faults = faults_set(mode=options["mode"].strip().lower(), delay_ms=options["delay_ms"])
        except SandboxError as exc:
            field = "--delay-ms" if exc.field == "delay_ms" else exc.field
            raise CommandError(f"{field}: {exc.message}") from None
        delay = f" ({faults.delay_ms} ms)" if faults.mode == FaultMode.SLOW else ""
        self.stdout.write(f"sandbox faults: {faults.mode}{delay}")
