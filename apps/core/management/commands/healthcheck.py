"""manage.py healthcheck: the /healthz report on standard output; exit 0 healthy, 1 not.

For container health checks and pagers that run on the host rather than over HTTP."""

from __future__ import annotations

import json
import sys
from typing import Any

from celery import current_app
from django.core.management.base import BaseCommand

from apps.core.health import health_report


class Command(BaseCommand):
    help = "Check database, broker and workers; print the report as JSON; exit 1 if unhealthy."

    def handle(self, *args: Any, **options: Any) -> None:
        healthy, report = health_report(current_app)
        self.stdout.write(json.dumps(report, indent=2))
        if not healthy:
            failing = [name for name, check in report["checks"].items() if not check["ok"]]
            self.stderr.write(f"unhealthy: {', '.join(failing)}")
            sys.exit(1)
