from __future__ import annotations

import importlib

from django.apps import AppConfig
from django.conf import settings


class RuntimeConfig(AppConfig):
    name = "apps.runtime"
    label = "runtime"

    def ready(self) -> None:
        # Hosted agents register their steps and deterministic models when their module is
        # imported; RUNTIME_AGENT_MODULES names those modules.
        for module in getattr(settings, "RUNTIME_AGENT_MODULES", ()):
            importlib.import_module(module)
