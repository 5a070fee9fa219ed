"""manage.py audit_verify: exit 0 when the audit chain is intact, 1 naming the first bad event."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from apps.audit.selectors import audit_verify


class Command(BaseCommand):
    help = "Recompute the audit trail's hash chain; exit 1 at the first broken event."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify()
        if report.intact:
            self.stdout.write(f"audit chain intact: {report.checked} events verified")
            return
        self.stderr.write(
            f"audit chain broken at event #{report.first_bad_sequence}: {report.problem} "
            f"({report.checked} events before it verified)"
        )
        sys.exit(1)
