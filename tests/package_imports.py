"""Every module of the package folders and what it imports, read from the source with ``ast`` (nothing is imported).

Shared by tests/test_import_graph.py and tests/test_dependencies.py. A *module-level* import runs
when its module is imported: at the top, in a class body, or under a module-level
``if``/``try``/``with``; imports under ``if TYPE_CHECKING:`` never run and are left out. A
*function-level* (lazy) import runs when its function is called. An import names the deepest
prodkg module it reaches: ``from prodkg.kb import store`` is an import of ``prodkg.kb.store``,
``from prodkg.kb import KnowledgeGraph`` one of ``prodkg.kb``.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    top: set[str] = field(default_factory=set)  # module-level imports (absolute names, any package)
    lazy: set[str] = field(default_factory=set)  # function-level imports


def package_dirs() -> dict[str, Path]:
    config = PYPROJECT["tool"]["setuptools"]
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


def read_modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            is_package = path.name == "__init__.py"
            name = package if is_package else f"{package}.{path.stem}"
            found[name] = Module(name, path, is_package)
    known = set(found)
    for module in found.values():
        _imports(module, ast.parse(module.path.read_text(), str(module.path)), known)
    return found


MODULES = read_modules()


def own(names: set[str]) -> set[str]:
    """The prodkg modules among imported names (``prodkg.kb.store.X`` is not a module: its module is)."""
    out = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def top_level(name: str) -> str:
    return name.split(".", 1)[0]
