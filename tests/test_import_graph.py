"""The package's import graph, read from the source with ``ast`` (nothing is imported).

What counts as an import:

* a *module-level* import is one that runs when its module is imported: at the top of the module,
  in a class body, or under a module-level ``if``/``try``/``with``. Imports under
  ``if TYPE_CHECKING:`` never run and are left out. Imports inside a function body run only when the
  function is called (deliberately lazy: heavy or optional libraries, a choice among stages);
* an import names the deepest prodkg module it reaches: ``from prodkg.kb import store`` is an
  import of ``prodkg.kb.store``, ``from prodkg.kb import KnowledgeGraph`` one of ``prodkg.kb``.

The checks:

(a) no cycle among prodkg modules through module-level imports: such a cycle can leave a module
    half-initialised when the other is imported first. A package ``__init__`` that re-exports its
    submodules is not a cycle with them (Python imports the package first), so the implicit import of
    a module's parent packages is not an edge here. Imports inside functions are counted too, in a
    second check: a cycle through them cannot break an import, but it ties two modules together all
    the same; the ones accepted are listed in FUNCTION_LEVEL_CYCLES (none today), so that a new one
    is a decision, not an accident.
(b) ``kb/`` never imports torch: not directly (at any level), and not through the prodkg modules
    (parent packages included) that its module-level imports load.
(c) ``extractors/`` never imports prefect or rdflib, in the same sense.
(d) ``flows/`` has no module-level ``import torch`` (the CLI and configuration load without it).
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Import cycles accepted because at least one of their imports is inside a function (sorted module names each).
FUNCTION_LEVEL_CYCLES: list[list[str]] = []


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    top: set[str] = field(default_factory=set)  # module-level imports (absolute names, any package)
    lazy: set[str] = field(default_factory=set)  # function-level imports


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {name: ROOT / folder for name, folder in config.get("package-dir", {}).items()}
    return {name: dirs.get(name, ROOT / name.replace(".", "/")) for name in config["packages"]}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: Module, tree: ast.Module, known: set[str]) -> None:
    base = module.name if module.is_package else module.name.rpartition(".")[0]

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = base.split(".")
        anchor = ".".join(parts[: len(parts) - node.level + 1])
        return f"{anchor}.{node.module}" if node.module else anchor

    def names(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        target = resolve(node)
        # `from package import submodule` imports the submodule
        return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            (module.lazy if lazy else module.top).update(names(node))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, lazy)
            return
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package, folder in _package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            is_package = path.name == "__init__.py"
            name = package if is_package else f"{package}.{path.stem}"
            found[name] = Module(name, path, is_package)
    known = set(found)
    for module in found.values():
        _imports(module, ast.parse(module.path.read_text(), str(module.path)), known)
    return found


MODULES = _modules()


def _own(names: set[str]) -> set[str]:
    """The prodkg modules among imported names (``prodkg.kb.store.X`` is not a module: its module is)."""
    out = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def _top_level(name: str) -> str:
    return name.split(".", 1)[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(out)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _loaded_at_import(name: str) -> set[str]:
    """Every prodkg module importing ``name`` runs: module-level imports, transitively, parent packages included."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        parts = current.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in MODULES and mod not in seen:
                seen.add(mod)
                todo.extend(_own(MODULES[mod].top))
    return seen


def _third_party_at_import(name: str) -> dict[str, set[str]]:
    """Top-level names of outside packages that importing ``name`` imports -> the prodkg modules that import them."""
    out: dict[str, set[str]] = defaultdict(set)
    for mod in _loaded_at_import(name):
        for imported in MODULES[mod].top:
            if _top_level(imported) != "prodkg":
                out[_top_level(imported)].add(mod)
    return out


def _in_folder(package: str) -> list[str]:
    return sorted(n for n in MODULES if n == package or n.startswith(package + "."))


def test_the_graph_is_read():
    assert len(MODULES) > 50
    assert "prodkg.kb.store" in _own(MODULES["prodkg.kb"].top)
    assert "torch" in {_top_level(n) for n in MODULES["prodkg.adaptation.model"].top}


def test_no_import_cycles_at_module_level():
    edges = {name: _own(module.top) - set(_parents(name)) for name, module in MODULES.items()}
    assert _cycles(edges) == []


def test_import_cycles_through_function_level_imports_are_the_known_ones():
    edges = {name: _own(module.top | module.lazy) - set(_parents(name)) for name, module in MODULES.items()}
    assert _cycles(edges) == FUNCTION_LEVEL_CYCLES


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("prodkg.kb", {"torch"}), ("prodkg.extractors", {"prefect", "rdflib"})],
)
def test_layers_keep_out_of_libraries_they_must_not_load(package, forbidden):
    problems = []
    for name in _in_folder(package):
        module = MODULES[name]
        direct = {_top_level(n) for n in module.top | module.lazy} & forbidden
        if direct:
            problems.append(f"{name} imports {sorted(direct)}")
        for lib, importers in sorted(_third_party_at_import(name).items()):
            if lib in forbidden and importers - {name}:
                problems.append(f"{name} loads {lib} through {sorted(importers - {name})}")
    assert problems == []


def test_flows_do_not_import_torch_at_module_level():
    offenders = [n for n in _in_folder("prodkg.flows") if "torch" in {_top_level(i) for i in MODULES[n].top}]
    assert offenders == []
