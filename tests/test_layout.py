"""The package layout's import rules (docs/design.md, "Layout"), read from the source.

- ``impala_frodo/`` is the pure core: it never imports Ray, ``learner`` or ``actors``.
- ``actors/`` never imports ``learner``, and an actor process never imports torch: no
  module an actor module imports, directly or through the core, imports torch at load.
- ``learner/`` may import both.

Imports are read with :mod:`ast`: every ``import`` statement counts, inside functions too
(a deferred import is still an import), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("impala_frodo", "actors", "learner")


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
        "def f():\n    import ray\n    from learner.driver import train\n"
    )
    assert {"ray", "learner.driver", "learner.driver.train"} <= imports(source)
    assert "torch" not in imports(source)
    assert imports(source, top_level_only=True) == {"typing", "typing.TYPE_CHECKING"}
