"""The embedded servers and the demo's supervisor (controlplane/embedded.py): PostgreSQL and
Valkey from their wheels for a command, and processes that are reported and restarted when
they die."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROBE = (
    "import os, psycopg, redis; "
    "db = psycopg.connect(os.environ['DATABASE_URL']); "
    "print(db.execute('SHOW server_version').fetchone()[0]); "
    "print(redis.Redis.from_url(os.environ['REDIS_URL']).info('server')['redis_version'])"
)


def embedded(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "controlplane.embedded", *args],
        cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_run__nothing_configured__command_gets_postgres_and_valkey(tmp_path: Path) -> None:
    # Given no DATABASE_URL or REDIS_URL
    # When a command runs with the embedded servers, throwaway
    done = embedded("run", "--throwaway", "--dir", str(tmp_path / "s"), "--", sys.executable,
                    "-c", PROBE)  # fmt: skip
    # Then it reached PostgreSQL 18 and a Redis-protocol server, both on loopback, and nothing
    # is left behind
    assert done.returncode == 0, done.stderr
    postgres, valkey = done.stdout.split()
    assert postgres.startswith("18.")
    assert valkey
    assert "PostgreSQL 18" in done.stderr
    assert "on 127.0.0.1:" in done.stderr
    assert not (tmp_path / "s").exists()


def test_run__data_kept__and_urls_named_while_running(tmp_path: Path) -> None:
    # Given the servers of a kept folder, started twice
    folder = tmp_path / "s"
    write = "import os, psycopg; psycopg.connect(os.environ['DATABASE_URL'], autocommit=True).execute('CREATE TABLE kept (x int)')"  # noqa: E501
    read = (
        "import os, json, psycopg; "
        f"print(json.load(open('{folder}/urls.json'))['DATABASE_URL'] == os.environ['DATABASE_URL']); "  # noqa: E501
        "print(psycopg.connect(os.environ['DATABASE_URL']).execute("
        "\"SELECT to_regclass('kept') IS NOT NULL\").fetchone()[0])"
    )
    assert embedded("run", "--dir", str(folder), "--", sys.executable, "-c", write).returncode == 0
    # When a second run reads
    done = embedded("run", "--dir", str(folder), "--", sys.executable, "-c", read)
    # Then the table made by the first is there, and urls.json named the servers meanwhile
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    assert not (folder / "urls.json").exists()
    assert (folder / "postgres" / "postgres.secret").stat().st_mode & 0o077 == 0


def test_run__url_set_but_unreachable__one_line_and_nothing_started(tmp_path: Path) -> None:
    # Given a DATABASE_URL nobody answers
    done = embedded(
        "run", "--dir", str(tmp_path / "s"), "--", "true",
        env={"DATABASE_URL": "postgres://x@127.0.0.1:9/x"},
    )  # fmt: skip
    # Then the demo refuses to start, saying which and why
    assert done.returncode == 1
    assert "DATABASE_URL is set but cannot be reached" in done.stderr


def test_supervise__a_process_dies__reported_with_its_last_lines_and_restarted(
    tmp_path: Path,
) -> None:
    # Given a Procfile whose one process prints and dies each time it runs
    procfile = tmp_path / "Procfile"
    procfile.write_text("flaky: echo 'about to fail: disk full'; exit 3\n")
    # When it is supervised
    done = embedded("supervise", str(procfile))
    # Then each death is reported with the process's last lines, it is started again, and after
    # too many deaths everything stops with a message saying why
    assert done.returncode == 1
    assert done.stderr.count("flaky.1 exited with code 3; its last lines:") == 4
    assert done.stderr.count("about to fail: disk full") == 4
    assert done.stderr.count("flaky.1 started") == 4
    assert "flaky.1 died 4 times in 10 minutes: stopping everything" in done.stderr
    assert "flaky.1 | about to fail: disk full" in done.stdout
