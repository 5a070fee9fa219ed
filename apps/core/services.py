from __future__ import annotations

from django.utils import timezone

from apps.core.models import Heartbeat


def heartbeat_record(*, component: str) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(
        component=component, defaults={"last_seen": timezone.now()}
    )
    return beat
