"""The demo traffic's switch, as the Agent runs page and `manage.py demo_traffic` show it: one
DemoTraffic row, paused or not. The traffic that reads it lives with the demo (apps/demo)."""

from __future__ import annotations

from apps.runtime.models import DemoTraffic


def demo_traffic_state() -> DemoTraffic:
    return DemoTraffic.objects.get_or_create(pk=DemoTraffic.SINGLETON)[0]


def demo_traffic_set(*, paused: bool, by: str) -> DemoTraffic:
    state = demo_traffic_state()
    DemoTraffic.objects.filter(pk=state.pk).update(paused=paused, paused_by=by if paused else "")
    state.refresh_from_db()
    return state
