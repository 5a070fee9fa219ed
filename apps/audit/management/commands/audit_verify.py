"""manage.py audit_verify: recompute the audit log from its events and hold it against every
signed checkpoint (stored, in the witness file, and any file a user kept); exit 0 when it
holds, 1 naming the first bad entry or the checkpoint size it fails."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from escapement_client.transparency import TransparencyError

from apps.audit.log import witness_notes, witness_read
from apps.audit.selectors import audit_verify


class Command(BaseCommand):
    help = (
        "Recompute the audit log from its events and check it against its signed checkpoints "
        "and any kept ones; exit 1 at the first problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="FILE",
            help="a file of signed checkpoints kept outside the database (repeatable)",
        )
        parser.add_argument(
            "--key",
            default="",
            help="the log's verifier key, or a file holding it (default: this installation's)",
        )
        parser.add_argument(
            "--no-witness",
            action="store_true",
            help="do not read the witness file (AUDIT_WITNESS_FILE)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kept: list[str] = []
        if not options["no_witness"]:
            try:
                kept.extend(witness_notes())
            except TransparencyError as exc:
                raise CommandError(f"AUDIT_WITNESS_FILE: {exc}") from None
        for path in (Path(name) for name in options["checkpoint"]):
            try:
                kept.extend(witness_read(path))
            except OSError as exc:
                raise CommandError(f"--checkpoint: cannot read {path}: {exc.strerror}") from None
            except TransparencyError as exc:
                raise CommandError(f"--checkpoint: {exc}") from None
        key = options["key"].strip()
        if key and Path(key).is_file():
            key = Path(key).read_text().strip()
        report = audit_verify(kept=kept, key=key or None)
        if report.intact:
            self.stdout.write(
                f"audit log intact: {report.checked} entries verified against "
                f"{report.checkpoints} signed checkpoints ({len(kept)} kept outside the "
                f"database); {report.pending} events not yet in the log"
            )
            return
        self.stderr.write(f"audit log broken: {report.problem}")
        sys.exit(1)
