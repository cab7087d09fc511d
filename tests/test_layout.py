"""The layout rules of docs/architecture.md, checked against the import graph.

The rules are written once, in the table of docs/architecture.md: this test reads that
table, then every ``import`` of every module of ``holo`` and ``segmentation`` (outside
``if TYPE_CHECKING:``, inside functions too), and fails on an import the table does not
allow, on a cycle, and on generated code used outside the transports.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
TRANSPORTS = {"holo.wire", "holo.server", "holo.client"}
#: Libraries of the extras: the lean SDK must import none of them.
HEAVY = ("SimpleITK", "vtkmodules", "av", "trimesh", "pydicom", "scipy", "DracoPy", "redis")


def _table() -> dict[str, set[str]]:
    """part -> the parts it may import, from the doc's table (in its row order)."""
    allowed: dict[str, set[str]] = {}
    foundation: set[str] = set()
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        parts = re.findall(r"`([\w.]+)`", cells[0])
        may = set(re.findall(r"`([\w.]+)`", cells[1]))
        if "foundation" in cells[1]:
            if not foundation:
                foundation = set(parts)
            may |= foundation
        for part in parts:
            allowed[part] = may
    return allowed


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("holo", "segmentation"):
        for path in (REPO / top).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "segmentation":
        return "segmentation"
    return "holo" if len(parts) == 1 else f"holo.{parts[1]}"


def _imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module imported, line) for every import of ``module`` that names holo code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return  # annotations only: no import at run time
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in known:  # a name inside a module: the module
                    name = name.rpartition(".")[0]
                if name and name != module:
                    yield name, node.lineno
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(path.read_text()))


def _graph() -> dict[str, dict[str, int]]:
    known = _modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in known}
    for module, path in known.items():
        for target, line in _imports(module, path, known):
            graph[module].setdefault(target, line)
    return graph


def test_the_table_is_in_dependency_order() -> None:
    table = _table()
    assert len(table) > 15, f"could not read the table of {DOC}"
    seen: set[str] = set()
    for part, may in table.items():
        later = may - seen - {part} - table["holo"]
        assert not later, f"{part} may import {sorted(later)}, listed after it: an upward import"
        seen.add(part)


def test_every_import_is_allowed_by_the_table() -> None:
    table = _table()
    wrong = []
    for module, targets in _graph().items():
        source = _part(module)
        assert source in table, f"{module}: its part {source} is not in {DOC.name}; add a row"
        for target, line in targets.items():
            goal = _part(target)
            if goal != source and goal not in table[source]:
                wrong.append(f"{module}:{line} imports {target} ({source} -> {goal})")
    assert not wrong, "imports the table does not allow:\n" + "\n".join(wrong)


def test_only_the_transports_import_generated_code() -> None:
    users = {
        module
        for module, targets in _graph().items()
        if _part(module) != "holo.v1" and any(_part(t) == "holo.v1" for t in targets)
    }
    assert users and {_part(m) for m in users} <= TRANSPORTS, sorted(users)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongly_connected(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongly_connected(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            strongly_connected(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize(
    "statement",
    [
        "import holo",
        "import holo.client, holo.client.session, holo.client.video, holo.client.timeline",
        "import holo.cli.main",
        "import holo.testing.simulate, holo.testing.clients",
        "from holo.errors import HoloError; from holo.session import Pose",
    ],
)
def test_the_sdk_and_cli_import_no_extra(statement: str) -> None:
    """What the lean install offers loads none of the extras' libraries (checked in a
    fresh interpreter: this one has loaded them all)."""
    loaded = f"sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})"
    probe = f"{statement}; import sys; print({loaded})"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
