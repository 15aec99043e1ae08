"""The layout's own rules, checked on the source: no module over 450 lines, no import cycle between
the addon's modules, a handful of modules at addon/'s root (the rest live in rooms named for
their role). See the README's "Layout" section and docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addon"
MAX_LINES = 450
MAX_LOOSE = 12


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    found = {}
    for path in ADDON.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def imports(name: str, path: Path, package: bool, known: dict[str, tuple[Path, bool]]) -> set[str]:
    """The addon modules `name` imports at module level (TYPE_CHECKING blocks included)."""
    here = name if package else name.rpartition(".")[0]
    edges: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in known else target)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return {e for e in edges if e in known and e != name}


def test_no_module_is_over_the_line_budget() -> None:
    long = {str(p.relative_to(ROOT)): n for p, _ in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern (at most {MAX_LINES} lines): {long}"


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports(name, path, package, known) for name, (path, package) in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, f"modules that import each other: {cycles}"


def test_addon_root_keeps_a_handful_of_modules() -> None:
    loose = sorted(p.name for p in ADDON.glob("*.py"))
    assert len(loose) <= MAX_LOOSE, f"put these in a room (a package named for their role): {loose}"
