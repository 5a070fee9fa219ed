"""The Celery application: configured from Django settings (the CELERY_ prefix)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("escapement")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Imported for its signal handlers, which carry the request id from web to worker.
import apps.core.task_context  # noqa: E402, F401
