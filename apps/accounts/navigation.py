"""The navigation: which pages exist and which role opens each. A user sees only the entries
their roles open. Each app adds its page here, so the menu and the access rules stay in one
list that tests walk entry by entry."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from apps.accounts.roles import Role


@dataclass(frozen=True)
class NavEntry:
    label: str
    url_name: str
    role: Role

    @property
    def url(self) -> str:
        return reverse(self.url_name)


NAVIGATION: tuple[NavEntry, ...] = (
    NavEntry("Review queue", "reviews:queue", Role.SUPERVISOR),
    NavEntry("Decision Books", "books:index", Role.RISK),
    NavEntry("Audit trail", "audit:index", Role.RISK),
    NavEntry("Balance sheet", "ledger:balance_sheet", Role.FINANCE),
    NavEntry("Model budgets", "runtime:budgets", Role.FINANCE),
    NavEntry("On-call", "killswitches:console", Role.ONCALL),
    NavEntry("Agent runs", "runtime:runs", Role.ONCALL),
    NavEntry("SLOs", "ledger:slos", Role.ONCALL),
    NavEntry("Admin", "admin:index", Role.ADMIN),
)


def entries_for(roles: frozenset[Role]) -> list[NavEntry]:
    return [entry for entry in NAVIGATION if entry.role in roles]
