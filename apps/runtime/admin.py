"""Admin for the runtime's plumbing: agents' monthly model budgets (workflow budgets live in
the Decision Books). Changes are audited like every registry change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from apps.audit.admin_trail import AuditedAdminMixin
from apps.runtime.models import AgentBudget

if TYPE_CHECKING:
    AgentBudgetAdminBase = admin.ModelAdmin[AgentBudget]
else:
    AgentBudgetAdminBase = admin.ModelAdmin


@admin.register(AgentBudget)
class AgentBudgetAdmin(AuditedAdminMixin, AgentBudgetAdminBase):
    list_display = ("agent", "monthly_limit_cents", "soft_limit_percent")
    search_fields = ("agent__slug",)
    autocomplete_fields = ("agent",)
