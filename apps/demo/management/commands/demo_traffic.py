"""manage.py demo_traffic on|off|status: pause or resume the demo agents' work."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.runtime.traffic_switch import demo_traffic_set, demo_traffic_state


class Command(BaseCommand):
    help = "Pause (off) or resume (on) the demo traffic, or show whether it runs (status)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("switch", choices=["on", "off", "status"])

    def handle(self, *args: Any, **options: Any) -> None:
        switch = options["switch"]
        if switch == "status":
            state = demo_traffic_state()
        elif switch in ("on", "off"):
            state = demo_traffic_set(paused=switch == "off", by="manage.py demo_traffic")
        else:  # argparse has refused anything else already
            raise CommandError(f"switch: expected on, off or status, got {switch!r}")
        if not settings.DEMO_TRAFFIC:
            running = "off (DEMO_TRAFFIC is not set; `make run` sets it)"
        else:
            running = "paused" if state.paused else "on"
        self.stdout.write(
            f"Demo traffic: {running}; {state.counter} pieces of demo work started so far."
        )
