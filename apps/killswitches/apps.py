from __future__ import annotations

from django.apps import AppConfig


class KillswitchesConfig(AppConfig):
    name = "apps.killswitches"
    label = "killswitches"
