from __future__ import annotations

from celery import shared_task

from apps.demo.traffic import demo_traffic_tick


@shared_task(name="demo.tick", ignore_result=True)
def tick() -> None:
    """From the scheduler, while DEMO_TRAFFIC is on: the demo agents pick up demo work."""
    demo_traffic_tick()
