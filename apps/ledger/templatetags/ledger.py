"""`{% load ledger %}{% slo_alerts %}`: the open SLO alerts, for any page on-call watches."""

from __future__ import annotations

from typing import Any

from django import template

from apps.ledger.slos import open_alerts

register = template.Library()


@register.inclusion_tag("ledger/slo_alerts.html")
def slo_alerts() -> dict[str, Any]:
    return {"alerts": open_alerts()}
