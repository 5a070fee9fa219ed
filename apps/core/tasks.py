from __future__ import annotations

import logging
import socket

from celery import shared_task

from apps.core.services import heartbeat_record

logger = logging.getLogger(__name__)


@shared_task(name="core.ping", ignore_result=False)
def ping(payload: str = "ping") -> dict[str, str]:
    """Round trip through the broker: proves a worker takes tasks and returns results."""
    return {"echo": payload, "worker": socket.gethostname()}


@shared_task(name="core.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Sent by the scheduler on a fixed period; the stamp shows the scheduler and a worker live."""
    heartbeat_record(component="scheduler")
    logger.debug("scheduler heartbeat recorded")
