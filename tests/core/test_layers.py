"""The direction of imports (README, "Map of the code"): the contracts in .importlinter hold,
break when code imports upward, place every module of the product, and leave no import cycle."""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# Imports written inside functions, in apps/: each must say why on its line or the line above.
INLINE_IMPORTS_MAX = 7


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / ".importlinter")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _copy_of_the_code(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("apps", "controlplane"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    return tmp_path


def _graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(ROOT))
    try:
        return grimp.build_graph("apps", "controlplane", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))


def _product_modules(graph: grimp.ImportGraph) -> set[str]:
    return {module for module in graph.modules if ".migrations" not in module}


def test_contracts__the_code_as_it_is__kept() -> None:
    # Given the product's code and its contracts
    # When import-linter checks them
    result = _lint(ROOT)
    # Then every contract is kept
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout)


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        pytest.param(
            "apps/reviews/items.py",
            "from apps.reviews import services\n",
            "apps.reviews.items -> apps.reviews.services",
            id="a primitive imports a flow",
        ),
        pytest.param(
            "apps/killswitches/switches.py",
            "from apps.killswitches import drain\n",
            "apps.killswitches.switches -> apps.killswitches.drain",
            id="a flow imports a flow above it",
        ),
        pytest.param(
            "apps/killswitches/drain.py",
            "from apps.killswitches import rollback\n",
            "apps.killswitches.drain -> apps.killswitches.rollback",
            id="a flow imports a flow beside it",
        ),
        pytest.param(
            "apps/actions/gate.py",
            "def _later() -> None:\n    from apps.actions import api  # noqa\n",
            "apps.actions.gate -> apps.actions.api",
            id="a flow imports an entry point inside a function",
        ),
        pytest.param(
            "apps/core/workers.py",
            "from apps.actions import models\n",
            "apps.core.workers -> apps.actions.models",
            id="core imports an app",
        ),
        pytest.param(
            "apps/runtime/services.py",
            "import apps.demo.traffic\n",
            "apps.runtime.services -> apps.demo.traffic",
            id="the product imports the demo",
        ),
    ],
)
def test_contracts__an_import_against_the_direction__broken(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    # Given a copy of the code with one import against the direction
    root = _copy_of_the_code(tmp_path)
    with (root / module).open("a") as source:
        source.write("\n\n" + line)
    # When import-linter checks the copy
    result = _lint(root)
    # Then a contract is broken, naming that import
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout


def _layer_entries() -> set[str]:
    config = configparser.ConfigParser(inline_comment_prefixes=(";",))
    config.read(CONFIG)
    entries: set[str] = set()
    for line in config["importlinter:contract:layers"]["layers"].splitlines():
        for name in re.split(r"[:|]", line):
            name = name.strip().strip("()")
            if name:
                entries.add(name)
    return entries


def test_layers__every_module_of_the_product__has_a_place() -> None:
    # Given the modules of apps/ and controlplane/, and the layers' entries
    graph = _graph()
    entries = _layer_entries()
    # When each module is looked for in a layer (itself, or a package above it)
    unplaced = set()
    for module in _product_modules(graph):
        parts = module.split(".")
        placed = any(".".join(parts[:end]) in entries for end in range(1, len(parts) + 1))
        holds_placed = any(entry.startswith(module + ".") for entry in entries)
        if not placed and not holds_placed:
            unplaced.add(module)
    # Then every module has one: a new module is given its layer on purpose
    assert unplaced == set(), "give each a layer in .importlinter"
    # And every entry names a module that exists
    assert {entry for entry in entries if entry not in graph.modules} <= {"apps.core.errors"}


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_imports__modules_of_apps__no_cycle() -> None:
    # Given every import between the modules of apps/, those inside functions included
    graph = _graph()
    modules = {module for module in _product_modules(graph) if module.startswith("apps.")}
    # When the circles are looked for
    # Then there are none
    assert _cycles(graph, modules) == []


def _inline_imports() -> Iterator[tuple[str, int, str]]:
    for source in sorted((ROOT / "apps").rglob("*.py")):
        if "migrations" in source.parts:
            continue
        text = source.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    said = lines[inner.lineno - 1] + "\n" + lines[inner.lineno - 2]
                    yield f"{source.relative_to(ROOT)}:{inner.lineno}", inner.lineno, said


def test_imports_inside_functions__apps__few_and_each_says_why() -> None:
    # Given the imports written inside functions in apps/
    inline = list(_inline_imports())
    # Then there are few
    assert len(inline) <= INLINE_IMPORTS_MAX, [place for place, _, _ in inline]
    # And each says why, on its line or in a comment just above it
    unexplained = [place for place, _, said in inline if "#" not in said]
    assert unexplained == []


def test_core__ground_floor__imports_no_app() -> None:
    # Given the imports of apps/core
    graph = _graph()
    core = {module for module in graph.modules if module.startswith("apps.core")}
    # When those reaching another app are listed
    reaching = {
        (module, imported)
        for module in core
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("apps.") and not imported.startswith("apps.core")
    }
    # Then there are none
    assert reaching == set()
