"""With PROMETHEUS_MULTIPROC_DIR, the counters of several processes on one host (gunicorn workers,
Celery workers) add up in one scrape, whichever process serves it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, database_url_for_subprocess

SETUP = (
    "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'controlplane.settings'); "
    "django.setup(); "
)


def run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SETUP + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.django_db(transaction=True)
def test_multiprocess__two_processes_count__a_third_scrapes_the_sum(tmp_path: Path) -> None:
    env: dict[str, Any] = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DATABASE_URL": database_url_for_subprocess(),
        "LOG_LEVEL": "ERROR",
    }
    # Given two processes that each counted three successful executions and one decision
    count = (
        "from apps.actions.metrics import EXECUTIONS, GATE_DECISIONS; "
        "EXECUTIONS.labels('succeeded').inc(3); "
        "GATE_DECISIONS.labels('refunds', 'allow').inc()"
    )
    run(count, env)
    run(count, env)

    # When a third process serves a scrape
    body = run("from controlplane.metrics import exposition; print(exposition()[0].decode())", env)

    # Then it reports the sum of both, next to the database's gauges
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert samples[("escapement_executions_total", (("result", "succeeded"),))] == 6
    decisions = ("escapement_gate_decisions_total", (("outcome", "allow"), ("workflow", "refunds")))
    assert samples[decisions] == 2
    assert samples[("escapement_database_up", ())] == 1
