"""The package's shape: layers point one way, no import cycles, no private or hidden imports.

The layer order is the import-linter contract in ``pyproject.toml``; the checks below are the
ones it cannot make, read from the source with ``ast`` (nothing is imported).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src"
# Imported inside the function that needs them: the optional extras (pyproject.toml), so the
# rest of itemvec works without them installed, and torch, so that loading a bundle and
# answering queries never imports it (tests/store/test_bundle.py::test_loading_needs_no_torch...),
# and scikit-learn's text features and projections, so that a serving worker does not pay
# ~74 MiB for search's spelling fallback and the explorer's map
# (tests/serve/test_workers.py::test_a_worker_imports_no_sklearn).
OPTIONAL = ("faiss", "fastapi", "fastapi_offline", "starlette", "uvicorn", "httpx", "pyspark",
            "matplotlib", "zstandard", "torch.utils.tensorboard", "umap", "playwright", "gensim",
            "implicit", "pandas", "torch", "safetensors.torch", "optuna",
            "sklearn.feature_extraction", "sklearn.decomposition", "sklearn.manifold")
PENDING: set[tuple[str, str]] = set()  # edges allowed while a move is half done (none now)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    name: str | None  # the name taken from ``target`` (None: the module itself)
    local: bool  # inside a function
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((SOURCE / "itemvec").rglob("*.py"))}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _statements(tree: ast.AST):
    """(import node, inside a function) for every import statement of a module."""
    def visit(node: ast.AST, local: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, local
            yield from visit(child, local or isinstance(child, ast.FunctionDef
                                                        | ast.AsyncFunctionDef | ast.Lambda))
    yield from visit(tree, False)


def imports_of(module: str) -> list[Import]:
    found = []
    for node, local in _statements(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, None, local, node.lineno) for a in node.names]
            continue
        base = _absolute(module, node)
        for alias in node.names:
            whole = f"{base}.{alias.name}"
            found.append(Import(module, whole, None, local, node.lineno) if whole in MODULES
                         else Import(module, base, alias.name, local, node.lineno))
    return found


IMPORTS = [i for module in MODULES for i in imports_of(module)]


def _internal(target: str) -> bool:
    return target == "itemvec" or target.startswith("itemvec.")


def _optional(target: str) -> bool:
    return any(target == o or target.startswith(f"{o}.") for o in OPTIONAL)


def _needs_extra(module: str) -> bool:
    """Modules that import an optional extra at module level (e.g. the FastAPI app)."""
    return any(i.source == module and not i.local and _optional(i.target) for i in IMPORTS)


def test_layer_contract_holds():
    """import-linter's ``layers`` contract from pyproject.toml, on this source tree."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SOURCE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import "
                          "lint_imports_command; lint_imports_command()", "--no-cache"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the itemvec modules it imports (top level and inside functions alike)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if _internal(i.target) and (i.source, i.target) not in PENDING:
            edges[i.source].add(i.target)
    return edges


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    private = [f"{i.source}:{i.line} imports {i.target}.{i.name}" for i in IMPORTS
               if _internal(i.target) and i.name and i.name.startswith("_")
               and not i.name.startswith("__")]
    assert private == []


def _private_attributes(module: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self``, ``cls`` or ``super()``: another's private part."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
            continue
        found.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_module_reaches_into_private_attributes():
    assert [hit for module in MODULES for hit in _private_attributes(module)] == []


def test_function_local_imports_are_only_for_optional_extras():
    """Everything else is imported at the top, where the dependency graph can see it."""
    hidden = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
              if i.local and not _optional(i.target)
              and not (_internal(i.target) and _needs_extra(i.target))
              and (i.source, i.target) not in PENDING]
    assert hidden == []
