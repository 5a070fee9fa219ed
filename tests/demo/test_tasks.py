"""The demo's tick: the scheduler's entry under `make run` names a task the worker knows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BEAT_PROBE = """
import json, django
django.setup()
from django.conf import settings
from controlplane.celery import app
app.loader.import_default_modules()
entry = settings.CELERY_BEAT_SCHEDULE["demo-traffic"]
print(json.dumps({"task": entry["task"], "registered": entry["task"] in app.tasks}))
"""


def test_beat_schedule__demo_traffic_on__the_tick_names_a_registered_task(
    tmp_path: Path,
) -> None:
    # Given the settings of `make run` (DEMO_TRAFFIC on), loaded in a fresh process
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "ESCAPEMENT_VAR_DIR": str(tmp_path / "var"),
        "DEMO_TRAFFIC": "true",
    }
    # When the worker's task modules are discovered
    completed = subprocess.run(
        [sys.executable, "-c", BEAT_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # Then the scheduler's demo entry names the demo's tick, which a worker knows
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    assert found == {"task": "demo.tick", "registered": True}
