"""Runs every benchmark in bench/ (each `bench_*.py` module's `main()`) and prints one table.

Usage: `make bench` (which provides PostgreSQL and Redis for the benchmarks that need them), or
`.venv/bin/python bench/run.py [name ...]` to run some of them (`policy` for bench_policy.py,
`killswitch` for bench_killswitch.py: engage -> every worker refuses).

A benchmark's `main()` returns its rows: mappings with the keys of COLUMNS. Times are in
microseconds; `per_second` is what the row counts (decisions, requests) per second; `met` is a
bool, or one bool per target when `target` lists several ("; "-separated). Figures go to
docs/benchmarks.md by hand, with the machine they were measured on.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COLUMNS: tuple[tuple[str, str], ...] = (
    ("bench", "benchmark"),
    ("case", "case"),
    ("n", "n"),
    ("p50_us", "p50 us"),
    ("p90_us", "p90 us"),
    ("p99_us", "p99 us"),
    ("per_second", "per s"),
    ("ratio", "ratio"),
    ("target", "target"),
    ("met", "met"),
)

Row = Mapping[str, object]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, tuple):
        return "; ".join(_cell(item) for item in value)
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _misses(met: object) -> bool:
    return met is False or (isinstance(met, tuple) and False in met)


def table(rows: Iterable[Row]) -> str:
    """A Markdown table, so that it can be pasted into docs/benchmarks.md as it is."""
    cells = [[title for _, title in COLUMNS]] + [
        [_cell(row.get(key)) for key, _ in COLUMNS] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
             for line in cells]  # fmt: skip
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # What else the machine is doing shows in every figure: the load average says how much.
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())
    # And how fast a core is right now: on a shared virtual machine the same loop takes from one
    # time to the next anything from once to three times as long.
    start = time.process_time()
    sum(range(10**7))
    check = f", sum(range(10**7)) in {time.process_time() - start:.2f} s of CPU"
    return (
        f"{cores} cores ({model or platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
        f"{load}{check}"
    )


def benchmarks(names: Sequence[str]) -> list[tuple[str, Callable[[], list[Row]]]]:
    found = []
    for path in sorted((ROOT / "bench").glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if names and name not in names:
            continue
        module = importlib.import_module(f"bench.{path.stem}")
        found.append((name, module.main))
    return found


def run(names: Sequence[str]) -> int:
    # Benchmarks read the product's code as it runs: with its settings and app registry.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    # The gate benchmark proposes thousands a minute from one agent: the behavioural firewall
    # still counts every proposal (its cost is in the figures) but must not quarantine it.
    os.environ.setdefault("FIREWALL_RATE_FLOOR", "100000000")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()

    selected = benchmarks(names)
    if not selected:
        sys.stderr.write(f"bench: no benchmark called {', '.join(names)} in bench/\n")
        return 2
    out = sys.stdout
    out.write(f"machine: {machine()}\n")
    rows: list[Row] = []
    for name, main in selected:
        out.write(f"running {name} ...\n")
        out.flush()
        rows += main()
    out.write(f"finished on: {machine()}\n")
    out.write("\n" + table(rows) + "\n")
    missed = [row for row in rows if _misses(row.get("met"))]
    if missed:
        out.write(f"\n{len(missed)} figure(s) miss their target (see the 'met' column).\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
