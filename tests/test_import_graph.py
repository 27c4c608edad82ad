"""The package's import graph, read from the source with ``ast`` (nothing is imported; see tests/package_imports.py).

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

from collections import defaultdict

import pytest
from package_imports import MODULES, own, top_level

#: Import cycles accepted because at least one of their imports is inside a function (sorted module names each).
FUNCTION_LEVEL_CYCLES: list[list[str]] = []


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
                todo.extend(own(MODULES[mod].top))
    return seen


def _third_party_at_import(name: str) -> dict[str, set[str]]:
    """Top-level names of outside packages that importing ``name`` imports -> the prodkg modules that import them."""
    out: dict[str, set[str]] = defaultdict(set)
    for mod in _loaded_at_import(name):
        for imported in MODULES[mod].top:
            if top_level(imported) != "prodkg":
                out[top_level(imported)].add(mod)
    return out


def _in_folder(package: str) -> list[str]:
    return sorted(n for n in MODULES if n == package or n.startswith(package + "."))


def test_the_graph_is_read():
    assert len(MODULES) > 50
    assert "prodkg.kb.store" in own(MODULES["prodkg.kb"].top)
    assert "torch" in {top_level(n) for n in MODULES["prodkg.adaptation.model"].top}


def test_no_import_cycles_at_module_level():
    edges = {name: own(module.top) - set(_parents(name)) for name, module in MODULES.items()}
    assert _cycles(edges) == []


def test_import_cycles_through_function_level_imports_are_the_known_ones():
    edges = {name: own(module.top | module.lazy) - set(_parents(name)) for name, module in MODULES.items()}
    assert _cycles(edges) == FUNCTION_LEVEL_CYCLES


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("prodkg.kb", {"torch"}), ("prodkg.extractors", {"prefect", "rdflib"})],
)
def test_layers_keep_out_of_libraries_they_must_not_load(package, forbidden):
    problems = []
    for name in _in_folder(package):
        module = MODULES[name]
        direct = {top_level(n) for n in module.top | module.lazy} & forbidden
        if direct:
            problems.append(f"{name} imports {sorted(direct)}")
        for lib, importers in sorted(_third_party_at_import(name).items()):
            if lib in forbidden and importers - {name}:
                problems.append(f"{name} loads {lib} through {sorted(importers - {name})}")
    assert problems == []


def test_flows_do_not_import_torch_at_module_level():
    offenders = [n for n in _in_folder("prodkg.flows") if "torch" in {top_level(i) for i in MODULES[n].top}]
    assert offenders == []
