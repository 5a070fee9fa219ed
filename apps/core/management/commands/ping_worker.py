"""manage.py ping_worker: send a task through the broker and wait for a worker's answer."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import KombuError

from apps.core.tasks import ping


class Command(BaseCommand):
    help = "Send core.ping to the workers and print the answer and the round-trip time."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")

    def handle(self, *args: Any, **options: Any) -> None:
        timeout: float = options["timeout"]
        if timeout <= 0:
            raise CommandError("--timeout: must be a positive number of seconds")
        started = time.perf_counter()
        try:
            result = ping.delay("ping").get(timeout=timeout)
        except CeleryTimeout:
            raise CommandError(f"no worker answered within {timeout:g}s") from None
        except (KombuError, OSError) as exc:
            raise CommandError(f"broker unreachable: {type(exc).__name__}: {exc}") from None
        elapsed = (time.perf_counter() - started) * 1000
        self.stdout.write(f"pong from {result['worker']} in {elapsed:.0f} ms")
