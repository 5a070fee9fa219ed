"""manage.py audit_key: print the audit log's verifier key, for auditors and witnesses."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.audit.log import verifier_key


class Command(BaseCommand):
    help = "Print the audit log's verifier key (the signed-note form: name+key id+public key)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(verifier_key())
