"""The Celery application: configured from Django settings (the CELERY_ prefix)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("escapement")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Every worker also listens for queued actions announced by PostgreSQL (apps/actions/pickup.py).
app.steps["worker"].add("apps.actions.pickup:ActionPickup")

# Imported for their signal handlers, which carry the request id from web to worker, and keep a
# worker's database connections from one task to the next.
import apps.core.task_context  # noqa: E402
import apps.core.worker_connections  # noqa: E402, F401
