"""The package layout's import rules (docs/design.md, "Layout"), read from the source.

- ``impala_frodo/`` is the pure core: it never imports Ray, ``learner`` or ``actors``.
- ``actors/`` never imports ``learner``, and an actor process never imports torch: no
  module an actor module imports, directly or through the core, imports torch at load.
- ``learner/`` may import both.
- Inside ``impala_frodo`` and ``learner``, each subpackage is a room with one job, and a
  room imports only the rooms :data:`ROOMS` lists for it (the package docstrings say
  the same in words). No module imports itself back through others (no import circle).
- No module of the three packages is over :data:`MAX_MODULE_LINES` lines, and no
  function over :data:`MAX_FUNCTION_LINES`.

Imports are read with :mod:`ast`: every ``import`` statement counts, inside functions too
(a deferred import is still an import), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("impala_frodo", "actors", "learner")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Each room and the rooms it may import. A room is a subpackage of ``impala_frodo`` or
#: ``learner`` (``impala_frodo.utils`` is a module at the core's root, a room of its own).
ROOMS: dict[str, frozenset[str]] = {
    "impala_frodo.utils": frozenset(),
    "impala_frodo.envs": frozenset({"impala_frodo.utils"}),
    "impala_frodo.config": frozenset({"impala_frodo.utils", "impala_frodo.envs"}),
    "impala_frodo.networks": frozenset({"impala_frodo.utils", "impala_frodo.config"}),
    "impala_frodo.acting": frozenset(
        {"impala_frodo.utils", "impala_frodo.config", "impala_frodo.envs", "impala_frodo.networks"}
    ),
    "impala_frodo.rule": frozenset(
        {
            "impala_frodo.utils",
            "impala_frodo.config",
            "impala_frodo.networks",
            "impala_frodo.acting",
        }
    ),
    "impala_frodo.records": frozenset({"impala_frodo.utils", "impala_frodo.config"}),
    "impala_frodo.sizing": frozenset(
        {"impala_frodo.utils", "impala_frodo.config", "impala_frodo.networks", "impala_frodo.rule"}
    ),
    "impala_frodo.reports": frozenset(
        {
            "impala_frodo.utils",
            "impala_frodo.config",
            "impala_frodo.envs",
            "impala_frodo.networks",
            "impala_frodo.acting",
            "impala_frodo.rule",
            "impala_frodo.records",
        }
    ),
    "learner.control": frozenset(),
    "learner.cluster": frozenset({"learner.control"}),
    "learner.training": frozenset({"learner.control", "learner.cluster"}),
    "learner.app": frozenset({"learner.control", "learner.cluster", "learner.training"}),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function = True
        if not (top_level_only and in_function):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("name", sorted(n for n in modules() if top(n) == "impala_frodo"))
def test_the_core_imports_neither_ray_nor_the_outer_packages(name):
    bad = sorted(i for i in imports(modules()[name]) if top(i) in ("ray", "learner", "actors"))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if top(n) == "actors"))
def test_actors_never_import_the_learner(name):
    bad = sorted(i for i in imports(modules()[name]) if top(i) == "learner")
    assert not bad, f"{name} imports {bad}"


def load_time_closure(start: str, known: dict[str, Path]) -> dict[str, str]:
    """Every project module loaded with ``start`` (module-level imports, followed through
    the project's packages and their ``__init__``), mapped to the module that imports it."""
    seen = {start: ""}
    todo = [start]
    while todo:
        name = todo.pop()
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for target in [*parents, *imports(known[name], top_level_only=True)]:
            if target in known and target not in seen:
                seen[target] = name
                todo.append(target)
    return seen


def test_an_actor_process_loads_no_module_that_imports_torch():
    known = modules()
    loaded = load_time_closure("actors.rollout", known)
    offenders = {
        name: via
        for name, via in loaded.items()
        if any(top(i) == "torch" for i in imports(known[name], top_level_only=True))
    }
    assert not offenders, f"modules an actor loads import torch (module: imported by): {offenders}"


def test_the_rules_can_fail(tmp_path):
    """The checks see a rule broken in a function body and ignore TYPE_CHECKING blocks."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "def f():\n    import ray\n    from learner.app.driver import train\n"
    )
    assert {"ray", "learner.app.driver", "learner.app.driver.train"} <= imports(source)
    assert "torch" not in imports(source)
    assert imports(source, top_level_only=True) == {"typing", "typing.TYPE_CHECKING"}


def room(name: str) -> str | None:
    """The room a module belongs to (``impala_frodo.rule.vtrace`` -> ``impala_frodo.rule``);
    None for a package's own ``__init__``/``__main__`` and for ``actors``."""
    parts = name.split(".")
    if parts[0] not in ("impala_frodo", "learner") or len(parts) < 2 or parts[1] == "__main__":
        return None
    return ".".join(parts[:2])


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a ``from a import b`` of a module ``a.b``
    counts as ``a.b``, not as the package ``a``)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        found = imports(path)
        graph[name] = {i for i in found if i in known and i != name}
        graph[name] -= {i for i in graph[name] if any(j.startswith(i + ".") for j in graph[name])}
    return graph


def room_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a.b -> c.d"`` for every import from one room into a room it may not import."""
    bad = []
    for name, targets in graph.items():
        source = room(name)
        for target in sorted(targets):
            into = room(target)
            if source is None or into is None or into == source or top(source) != top(into):
                continue  # between the top-level packages, the rules above apply
            if source not in ROOMS or into not in ROOMS[source]:
                bad.append(
                    f"{name} -> {target} ({source} may import {sorted(ROOMS.get(source, ()))})"
                )
    return bad


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top_node = stack.pop()
                on_stack.discard(top_node)
                component.append(top_node)
                if top_node == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_every_module_is_in_a_room():
    stray = [n for n in modules() if room(n) is not None and room(n) not in ROOMS]
    assert not stray, f"modules outside the rooms of tests/test_layout.py's ROOMS: {stray}"


def test_rooms_import_only_the_rooms_below_them():
    assert not room_violations(import_graph(modules()))


def test_no_import_circle():
    assert not import_circles(import_graph(modules()))


def test_the_room_and_circle_checks_can_fail():
    graph = {
        "impala_frodo.rule.updater": {"impala_frodo.reports.probes"},  # upwards
        "impala_frodo.reports.probes": {"impala_frodo.rule.updater"},  # allowed, but a circle
        "learner.control.progress": {"learner.app.cli"},  # upwards
        "learner.app.cli": {"learner.training.loop", "impala_frodo.envs.batched"},  # allowed
    }
    assert [v.split(" (")[0] for v in room_violations(graph)] == [
        "impala_frodo.rule.updater -> impala_frodo.reports.probes",
        "learner.control.progress -> learner.app.cli",
    ]
    assert import_circles(graph) == [["impala_frodo.reports.probes", "impala_frodo.rule.updater"]]


def long_parts(path: Path) -> list[str]:
    """The module if over :data:`MAX_MODULE_LINES`, and its functions over
    :data:`MAX_FUNCTION_LINES`, with their lengths."""
    text = path.read_text(encoding="utf-8")
    found = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{path.name}: {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    return found


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_stay_small(name):
    assert not long_parts(modules()[name])


def test_the_size_check_can_fail(tmp_path):
    source = tmp_path / "big.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    source.write_text("def f():\n" + body + "\n" * MAX_MODULE_LINES)
    assert [p.split(":")[0] for p in long_parts(source)] == ["big.py", "big.py"]
