"""The core's import graph, read from the source (ast): ``fedheart/`` imports nothing of the apps, the
launcher, the view, the command line or Flower, and its modules import each other without a cycle.

Every import statement counts, wherever it is: module level, inside a function, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = "fedheart"
# Packages outside the core that it must not know (the apps translate Flower messages to the core).
OUTSIDE = ("server_app", "client_app", "launcher", "webview", "fedheart_cli", "bench", "tests", "flwr")


def module_files(package: str = CORE, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_names(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module imports; ``from a import b`` yields ``a`` and ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (a name resolves to its longest module prefix)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for _, target in imported_names(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def outside_imports(modules: dict[str, Path]) -> list[str]:
    """``file:line imports name`` for every import of a package outside the core."""
    return [f"{path.relative_to(ROOT)}:{line} imports {target}"
            for name, path in modules.items() for line, target in imported_names(name, path)
            if target.split(".")[0] in OUTSIDE]


def test_the_core_imports_nothing_outside_it() -> None:
    modules = module_files()
    assert len(modules) > 30 and "fedheart.config" in modules  # the walk found the core
    assert outside_imports(modules) == []


def test_the_core_has_no_import_cycle() -> None:
    assert cycles(import_graph(module_files())) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_the_walk_finds_a_cycle_through_a_type_checking_import_and_an_app_import(tmp_path: Path) -> None:
    """The checks themselves, on a small package shaped like the old config <-> tracking cycle."""
    _write(tmp_path, {
        "core/__init__.py": "",
        "core/config.py": "from core.tracking import BACKENDS\n",
        "core/tracking/__init__.py": "from core.tracking import content\nBACKENDS = ()\n",
        "core/tracking/content.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                    "    from core.config import AppConfig\n",
        "core/cli.py": "def main():\n    from server_app.strategies import build_strategy\n",
        "core/leaf.py": "from . import config\n",
    })
    modules = module_files("core", tmp_path)
    assert cycles(import_graph(modules)) == [["core.config", "core.tracking", "core.tracking.content"]]
    assert import_graph(modules)["core.leaf"] == {"core", "core.config"}  # a relative import resolves
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(f"{__name__}.ROOT", tmp_path)
        assert outside_imports(modules) == ["core/cli.py:2 imports server_app.strategies",
                                            "core/cli.py:2 imports server_app.strategies.build_strategy"]
