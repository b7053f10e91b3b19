"""The house as docs/architecture.md draws it, checked on the code's imports.

Every product module's imports (top-level, inside functions, under TYPE_CHECKING: a cycle
hidden in a function is still a cycle) are read with :mod:`ast`, never executed, so the test
sees the code as a reader does. It fails on an import cycle, on a pure core that reaches a
web, database, CLI or event-loop library through anything it imports, on ``ca/`` importing
the web stack or the layers above it, and on a module or class past the size a newcomer can
hold in mind.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Mapping

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ca", "ocsp", "tsa", "csc", "ra", "web", "cli")
PURE_CORES = ("ca.chain", "ca.issuance", "ca.crl", "ocsp.responder", "tsa.core", "csc", "ra")
PROTOCOLS = ("ocsp", "tsa", "csc", "ra")  # protocol packages; their HTTP endpoints live in web/
IMPURE = ("flask", "werkzeug", "sqlalchemy", "alembic", "click", "gevent", "gunicorn",
          "psycopg2")
WEB = ("flask", "werkzeug", "gunicorn")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:  # Alembic's scripts: data, not the house
                found[_module_name(path)] = path
    return found


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_modules()[name].read_text(encoding="utf-8"))


def _resolve(name: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".")
    if _modules()[name].name != "__init__.py":
        base.pop()
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports: product modules by their full name (``from ca import
    issuance`` is ca.issuance), other libraries by their top-level package."""
    modules = _modules()
    out: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            out.add(target if target.split(".")[0] in PACKAGES else target.split(".")[0])
    out.discard(name)
    return frozenset(out)


def _product_imports(name: str) -> set[str]:
    return {m for m in imports(name) if m in _modules()}


@cache
def reach(name: str) -> frozenset[str]:
    """Everything ``name`` imports, directly or through product modules it imports."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for target in imports(todo.pop()):
            if target not in seen:
                seen.add(target)
                if target in _modules():
                    todo.append(target)
    return frozenset(seen)


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def product_graph() -> dict[str, set[str]]:
    return {module: _product_imports(module) for module in _modules()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (module -> modules it imports), as the path around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_walk_sees_the_house() -> None:
    """The walk itself: it finds the packages, resolves ``from ca import issuance`` to the
    module and relative imports to their package, so the checks below can fail."""
    assert {"ca.services", "ocsp.responder", "tsa.core", "web.app", "cli.main"} <= set(_modules())
    assert "ca.issuance" in _product_imports("ca.services.issuance")
    assert "flask" in imports("web.app") and "ca.services" in imports("web.app")
    assert "sqlalchemy" in reach("web.app")  # through the services it composes


def test_no_import_cycle() -> None:
    cycle = find_cycle(product_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The finder itself: one edge from the bottom of the house (ca.errors) back up to the
    services closes a cycle through the services' own imports of ca.errors."""
    graph = product_graph()
    graph["ca.errors"] = graph["ca.errors"] | {"ca.services.revocation"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "ca.errors" in cycle


@pytest.mark.parametrize("core", PURE_CORES)
def test_pure_cores_import_no_web_database_cli_or_event_loop(core: str) -> None:
    modules = [m for m in _modules() if _in(m, (core,))]
    assert modules, f"{core} not found"
    for module in modules:
        bad = sorted(m for m in reach(module) if m in IMPURE)
        assert not bad, f"{module} reaches {', '.join(bad)}"


def test_the_core_knows_nothing_of_http_or_the_layers_above() -> None:
    """ca/ imports no web library and none of ocsp/, tsa/, web/, cli/; its testing subpackage,
    which serves throwaway hierarchies, may use the web stack but never the CLI."""
    for module in _modules():
        if not _in(module, ("ca",)):
            continue
        direct = imports(module)
        if _in(module, ("ca.testing",)):
            assert not any(_in(m, ("cli",)) for m in direct), f"{module} imports the CLI"
            continue
        bad = sorted(m for m in reach(module) if m in WEB or _in(m, ("ocsp", "tsa", "csc", "ra", "web",
                                                                     "cli")))
        assert not bad, f"{module} reaches {', '.join(bad)}"


def test_protocols_know_no_http_and_services_no_cli() -> None:
    """ocsp/ and tsa/ hold the protocols, web/ their HTTP endpoints: a protocol package reaches
    no web library and nothing of web/ (so no package imports another that imports it back);
    neither the protocols nor web/ import the CLI."""
    for module in _modules():
        if _in(module, PROTOCOLS):
            bad = sorted(m for m in reach(module) if m in WEB or _in(m, ("web", "cli")))
            assert not bad, f"{module} reaches {', '.join(bad)}"
        if _in(module, ("web",)):
            bad = sorted(m for m in imports(module) if _in(m, ("cli",)))
            assert not bad, f"{module} imports {', '.join(bad)}"


def test_no_package_imports_one_that_imports_it_back() -> None:
    """Folders as a reader sees them (ca.services, ca.store, ocsp, web, ...): no two import
    each other, not even through a third."""
    def room(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "ca" and len(parts) > 1 and \
            (ROOT / "ca" / parts[1]).is_dir() else parts[0] if parts[0] != "ca" else module
    graph: dict[str, set[str]] = {}
    for module in _modules():
        graph.setdefault(room(module), set()).update(
            room(m) for m in _product_imports(module) if room(m) != room(module))
    cycle = find_cycle(graph)
    assert cycle is None, "packages importing each other: " + " -> ".join(cycle or ())


def test_modules_and_classes_stay_small() -> None:
    too_long = []
    for module, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{module}: {lines} lines")
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_CLASS_LINES:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert not too_long, "; ".join(too_long)
