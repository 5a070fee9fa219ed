"""The sandbox's writes, one function per thing its endpoints do. Each runs in one transaction,
locks the rows it changes, and raises SandboxError (a permanent 4xx) when a business rule says
no, in which case nothing it did is kept."""

from __future__ import annotations

from apps.sandbox.services.access import access_grant, access_revoke, mfa_reset
from apps.sandbox.services.faults import MAX_DELAY_MS, FaultVerdict, faults_set, faults_verdict
from apps.sandbox.services.invoices import (
    invoice_flag,
    invoice_match,
    invoice_unflag,
    invoice_unmatch,
)
from apps.sandbox.services.refunds import refund_issue, refund_undo

__all__ = [
    "MAX_DELAY_MS",
    "FaultVerdict",
    "access_grant",
    "access_revoke",
    "faults_set",
    "faults_verdict",
    "invoice_flag",
    "invoice_match",
    "invoice_unflag",
    "invoice_unmatch",
    "mfa_reset",
    "refund_issue",
    "refund_undo",
]
