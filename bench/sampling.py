"""Where a benchmark's time went: CPU by process group, read from /proc at the start and the end
of a window, and what PostgreSQL's backends were doing, sampled from pg_stat_activity during it.
Linux only; elsewhere the figures are empty."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.db import DatabaseError, connection, connections

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class _Stat:
    pid: int
    ppid: int
    session: int
    ticks: int  # user + system
    cmdline: str


def _stat(pid: int) -> _Stat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
        cmdline = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the fields follow the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return _Stat(pid, int(fields[1]), int(fields[3]), int(fields[11]) + int(fields[12]), cmdline)


def _processes() -> list[_Stat]:
    found = []
    for entry in PROC.iterdir() if PROC.exists() else ():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found.append(stat)
    return found


def _machine() -> tuple[int, int, int]:
    """(busy, idle, steal) ticks of all cores since boot, from /proc/stat."""
    if not (PROC / "stat").exists():
        return 0, 0, 0
    values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    return sum(values[:8]) - idle - steal, idle, steal


# A group is named by a test on a process: its own pid, session or command line.
Group = Callable[[_Stat], bool]


def in_session(pid: int) -> Group:
    """A process started in a session of its own (bench.harness.started) and its children."""
    return lambda stat: stat.session == pid


def postgres_on(port: int) -> Group:
    """The PostgreSQL server listening on `port` (its postmaster and every backend)."""
    masters = {
        stat.pid
        for stat in _processes()
        if "postgres" in stat.cmdline and f"-p {port} " in f"{stat.cmdline} "
    }
    return lambda stat: stat.pid in masters or stat.ppid in masters


def redis_on(port: int) -> Group:
    """The Redis-protocol server on `port`: Redis, or the embedded Valkey."""
    servers = ("redis-server", "valkey-server")
    return lambda stat: (
        any(server in stat.cmdline.split(" ", 1)[0] for server in servers)
        and f":{port}" in stat.cmdline
    )


def _label(stat: _Stat) -> str:
    """A short name for a process outside the groups: its program and first arguments."""
    words = stat.cmdline.split()
    if not words:
        return "kernel threads"
    return " ".join([Path(words[0]).name, *words[1:3]])[:40]


@dataclass(frozen=True)
class Cpu:
    """Per group, the CPU it used over the window, in % of one core (the machine's total is
    100 x cores); `other` is the rest of the machine's busy time, `others` the largest parts of
    it by command (processes that ended during the window are in `other` only)."""

    seconds: float
    groups: dict[str, float]
    other: float
    others: list[tuple[str, float]]
    idle: float
    steal: float

    def describe(self) -> str:
        parts = [f"{name} {share:.0f}" for name, share in self.groups.items()]
        largest = ", ".join(f"{name} {share:.0f}" for name, share in self.others if share >= 1)
        parts.append(f"other processes {self.other:.0f}" + (f" ({largest})" if largest else ""))
        parts.append(f"idle {self.idle:.0f}")
        if self.steal:
            parts.append(f"stolen by the host {self.steal:.0f}")
        return ", ".join(parts)


@dataclass
class CpuWindow:
    groups: Mapping[str, Group]
    _start: dict[int, tuple[str, int]] = field(default_factory=dict)
    _machine: tuple[int, int, int] = (0, 0, 0)
    _at: float = 0.0

    def _by_process(self) -> dict[int, tuple[str, int]]:
        """pid -> (its group's name, or "other:" and its label; its CPU ticks so far)."""
        found = {}
        for stat in _processes():
            name = next(
                (name for name, test in self.groups.items() if test(stat)),
                f"other:{_label(stat)}",
            )
            found[stat.pid] = (name, stat.ticks)
        return found

    def start(self) -> None:
        self._start = self._by_process()
        self._machine = _machine()
        self._at = time.monotonic()

    def stop(self) -> Cpu:
        seconds = time.monotonic() - self._at
        end = self._by_process()
        busy, idle, steal = (b - a for a, b in zip(self._machine, _machine(), strict=True))
        used: Counter[str] = Counter(dict.fromkeys(self.groups, 0))
        for pid, (name, ticks) in end.items():
            # A process that started during the window counts from zero.
            used[name] += ticks - self._start.get(pid, (name, 0))[1]
        mine = sum(used[name] for name in self.groups)

        def share(ticks: int) -> float:
            return 100.0 * ticks / TICKS / seconds if seconds else 0.0

        others = [
            (name.removeprefix("other:"), share(ticks))
            for name, ticks in used.most_common()
            if name.startswith("other:")
        ]
        return Cpu(
            seconds,
            {name: share(used[name]) for name in self.groups},
            share(max(0, busy - mine)),
            others[:3],
            share(idle),
            share(steal),
        )


# --- PostgreSQL ----------------------------------------------------------------------------

ACTIVITY = """
SELECT count(*) FILTER (WHERE state = 'active'),
       count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),
       count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'
                        AND query ILIKE %s),
       count(*) FILTER (WHERE state = 'active' AND wait_event_type IS NULL),
       count(*) FILTER (WHERE state LIKE 'idle in transaction%%')
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
"""


@dataclass(frozen=True)
class Activity:
    """Mean number of the database's client backends, over the samples, that were..."""

    samples: int
    active: float  # running a statement
    waiting_for_lock: float  # ... of which waiting for a lock held by another transaction
    waiting_for: float  # ... of those, on statements whose text matches the pattern
    on_cpu: float  # ... of which running, not waiting for anything
    idle_in_transaction: float  # in a transaction, waiting for their client's next statement

    def describe(self, what: str) -> str:
        return (
            f"{self.active:.1f} running a statement, of which {self.waiting_for_lock:.1f} "
            f"waiting for a lock ({self.waiting_for:.1f} on {what}) and {self.on_cpu:.1f} "
            f"on CPU; {self.idle_in_transaction:.1f} idle in a transaction, waiting for their "
            f"client ({self.samples} samples)"
        )


@contextmanager
def pg_activity(pattern: str, every: float = 0.1) -> Iterator[list[Activity]]:
    """Sample pg_stat_activity every `every` s while the block runs, on a connection of its own;
    the result is in the yielded list once the block ends."""
    rows: list[tuple[int, ...]] = []
    done = threading.Event()

    def sample() -> None:
        try:
            with connection.cursor() as cursor:
                while not done.is_set():
                    cursor.execute(ACTIVITY, [pattern])
                    row = cursor.fetchone()
                    if row is not None:
                        rows.append(tuple(row))
                    done.wait(every)
        except DatabaseError:
            pass  # (the database went away: the run itself will say so)
        finally:
            connections.close_all()

    thread = threading.Thread(target=sample, name="pg-activity", daemon=True)
    result: list[Activity] = []
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join(timeout=10)
    if rows:
        n = len(rows)
        means = [sum(row[i] for row in rows) / n for i in range(5)]
        result.append(Activity(n, *means))
