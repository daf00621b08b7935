"""The layer contracts of docs/architecture.md, checked on the source: every `import` statement of
echofm/, flows/ and tests/ is read with `ast` (module level, inside functions and under
TYPE_CHECKING alike), so a contract breaks here before it breaks a deployment."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = "echofm.cli"  # the command line: the only part of echofm that may run flows
ORCHESTRATION = ("prefect", "prefect_dask", "flows")
# Every import of echofm.store stays inside these: it knows where MLflow is, nothing else.
STORE_MAY_IMPORT = {"echofm.errors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for top in ("echofm", "flows", "tests"):
        for path in sorted((ROOT / top).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if not modules()[module].name == "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports(module: str) -> frozenset[str]:
    """Every module `module` imports: `from a import b` counts as `a`, and as `a.b` when that
    is a module of this repository."""
    tree = ast.parse(modules()[module].read_text(), filename=str(modules()[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules())
    return frozenset(found)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def project_imports(module: str) -> set[str]:
    return {name for name in imports(module) if name in modules() and not within(name, "tests")}


def core_modules() -> Iterator[str]:
    return (m for m in modules() if within(m, "echofm") and not within(m, ENTRY_POINTS))


def test_core_never_imports_orchestration() -> None:
    offenders = {m: sorted(i for i in imports(m) if any(within(i, o) for o in ORCHESTRATION)) for m in core_modules()}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_only_the_entry_point_layer_runs_flows() -> None:
    runners = {m for m in modules() if within(m, "echofm") and any(within(i, "flows") for i in imports(m))}
    assert runners and all(within(m, ENTRY_POINTS) for m in runners)


def test_store_and_errors_import_nothing_of_the_project() -> None:
    assert project_imports("echofm.store") <= STORE_MAY_IMPORT
    assert project_imports("echofm.errors") == set()


def test_pretraining_never_imports_downstream_or_registry() -> None:
    offenders = {m: sorted(i for i in project_imports(m) if within(i, "echofm.downstream") or within(i, "echofm.registry"))
                 for m in modules() if within(m, "echofm.pretrain")}
    assert {m: i for m, i in offenders.items() if i} == {}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package(module: str) -> str:
    """A module's place in the layer map: `echofm.<package>` (a top-level module is its own)."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_modules_or_packages() -> None:
    echofm = [m for m in modules() if within(m, "echofm")]
    graph = {m: {i for i in project_imports(m) if i in echofm and i != m} for m in echofm}
    assert _cycle(graph) is None
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(_package(module), set()).update(_package(t) for t in targets if _package(t) != _package(module))
    assert _cycle(packages) is None


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_test_module_imports_another() -> None:
    offenders = {}
    for module in (m for m in modules() if within(m, "tests")):
        imported = {i for i in imports(module) if within(i, "tests") and i.split(".")[-1].startswith("test_")}
        if imported - {module}:
            offenders[module] = sorted(imported)
    assert offenders == {}
    assert any(within(i, "tests.factories") for m in modules() for i in imports(m))  # the check sees test imports
