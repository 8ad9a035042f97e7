"""Static import closure of kiln's stages, for the dvc.yaml code-deps test.

Every ``import stages...`` / ``from stages... import`` anywhere in a module (top level or
not) is an edge; importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``,
so parent packages are edges too. A family stage imports its role module by name
(``stages.families.<name>.<role>``, see stages/families/__init__.py), which no static
reader can see: ``stage_entries`` adds it the way the registry does.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_path(module: str) -> Path | None:
    base = ROOT / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def direct_imports(module: str, *, parents: bool = True) -> frozenset[str]:
    """Modules ``module`` imports; with ``parents``, the packages that run before it too."""
    path = module_path(module)
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set(_with_parents(package)) if package and parents else set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("stages") and module_path(name) is not None:
                found.update(m for m in (_with_parents(name) if parents else [name]) if module_path(m) is not None)
    found.discard(module)
    return frozenset(found)


def closure(entries: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [m for e in entries for m in _with_parents(e) if module_path(m) is not None]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(direct_imports(module) - seen)
    return seen


def closure_files(entries: list[str]) -> set[str]:
    """Repo-relative paths (posix) of every module file in the closure."""
    return {module_path(m).relative_to(ROOT).as_posix() for m in closure(entries)}


def all_modules() -> list[str]:
    return sorted(module_name(p) for p in (ROOT / "stages").rglob("*.py"))


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (import cycles), over the
    imports the code writes (a submodule's implicit import of its own package is no cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:   # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(direct_imports(node, parents=False)):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in all_modules():
        if module not in index:
            visit(module)
    return found
