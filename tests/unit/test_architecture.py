"""The arrows point one way (README, "Modules"): read from the source, every import counted,
including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("activities", "follows", "feeds", "feedsite")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports (a name imported from a package counts as the module of
    that name when there is one, else the package)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from . import a, b` imports the modules a and b; `from .m import f`, the module m.
            targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            targets = targets or [base]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_walk_sees_imports_inside_functions_and_finds_cycles():
    graph = _graph()
    assert "feeds.store" in graph["feeds.services"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_activities_and_follows_know_nothing_of_feeds():
    wrong = {
        (module, target)
        for module, targets in _graph().items()
        if module.split(".")[0] in ("activities", "follows")
        for target in targets
        if target.split(".")[0] == "feeds"
    }
    assert wrong == set()


def test_only_the_store_talks_to_redis():
    talkers = set()
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] in ("redis", "django_redis") for n in names):
                talkers.add(name)
    assert {t for t in talkers if not t.startswith("feeds.store")} == set()


def test_settings_are_the_only_reader_of_the_environment():
    # The launchers (make run, the serving layout, embedded services) start processes before
    # Django is configured and hand their environment on; the WSGI/ASGI/Celery entry points
    # only default DJANGO_SETTINGS_MODULE (and wsgi drops the process environment from requests).
    launchers = {
        "feedsite.settings",
        "feedsite.devrun",
        "feedsite.serve",
        "feedsite.embedded",
        "feedsite.devcluster",
        "feedsite.wsgi",
        "feedsite.asgi",
        "feedsite.celery",
    }
    readers = {
        name
        for name, path in _modules().items()
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    }
    assert readers - launchers == set()
