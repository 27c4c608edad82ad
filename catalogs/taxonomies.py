"""Taxonomy loaders: real category trees (Best Buy, Instacart) as (key, parent key, label) entries for a SKOS scheme."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from prodkg.catalogs.loaders import data_home
from prodkg.errors import DataLoadError

__all__ = ["BESTBUY_MERCHANDISE_ROOTS", "TaxonomyEntry", "bestbuy_taxonomy", "instacart_taxonomy", "read_taxonomy_csv"]

#: (key, parent key or None, label); the key is what products and predictions name.
TaxonomyEntry = tuple[str, "str | None", str]

#: Best Buy's root categories that hold merchandise. The other 30 roots are marketing and
#: navigation pages (Gift Ideas, Name Brands, Best Buy Outlet, test pages, ...), whose
#: children repeat merchandise categories under another parent.
BESTBUY_MERCHANDISE_ROOTS: tuple[str, ...] = (
    "abcat0100000",  # TV & Home Theater
    "abcat0200000",  # Audio
    "abcat0207000",  # Musical Instruments
    "abcat0300000",  # Car Electronics & GPS
    "abcat0400000",  # Cameras & Camcorders
    "abcat0500000",  # Computers & Tablets
    "abcat0600000",  # Movies & Music
    "abcat0700000",  # Video Games
    "abcat0800000",  # Cell Phones
    "abcat0900000",  # Appliances
    "pcmcat242800050021",  # Health, Fitness & Beauty
    "pcmcat252700050006",  # Toys, Games & Drones
    "pcmcat312300050015",  # Connected Home & Housewares
    "pcmcat332000050000",  # Wearable Technology
)


def _folder(name: str, home: str | os.PathLike | None) -> Path:
    base = data_home(home)
    if base is None:
        raise DataLoadError(f"no data home: set $PRODKG_DATA_HOME to the folder holding {name}/")
    folder = base / name
    if not folder.is_dir():
        raise DataLoadError(f"{folder} does not exist; expected the {name} mirror there")
    return folder


def bestbuy_taxonomy(
    home: str | os.PathLike | None = None, *, roots: tuple[str, ...] | None = BESTBUY_MERCHANDISE_ROOTS
) -> list[TaxonomyEntry]:
    """Best Buy's category tree from ``bestbuy-categories/categories.json``.

    Built from each category's ``path`` (root → self), not from its parent links: 363
    categories name a parent that is not itself listed, and the path holds every ancestor.
    Keys are Best Buy's stable ids; a node without a name is labelled with its id.

    Args:
        home: the dataset mirror (default ``$PRODKG_DATA_HOME``).
        roots: keep only categories under these root ids (default the merchandise roots);
            None keeps the whole tree, marketing pages included.
    """
    path = _folder("bestbuy-categories", home) / "categories.json"
    try:
        categories = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataLoadError(f"cannot read {path}: {exc}") from exc
    keep = set(roots) if roots is not None else None
    entries: dict[str, TaxonomyEntry] = {}
    for n, category in enumerate(categories):
        nodes = category.get("path") if isinstance(category, dict) else None
        if not nodes or not all(isinstance(node, dict) and node.get("id") for node in nodes):
            raise DataLoadError(f"{path}: category {n} has no usable 'path' of {{id, name}} nodes: {category!r:.200}")
        if keep is not None and nodes[0]["id"] not in keep:
            continue
        parent = None
        for node in nodes:
            key = node["id"]
            entries.setdefault(key, (key, parent, node.get("name") or key))
            parent = key
    return list(entries.values())


def instacart_taxonomy(home: str | os.PathLike | None = None) -> list[TaxonomyEntry]:
    """Instacart's department → aisle tree from ``instacart-products`` (21 departments, 134 aisles).

    Keys are ``department/<id>`` and ``aisle/<id>``: an aisle and a department are both named
    "missing" (and "other"), so labels cannot be keys. An aisle's department is the one its
    products are listed under (each aisle has exactly one).
    """
    folder = _folder("instacart-products", home)
    departments = _id_names(folder / "departments.csv", "department_id", "department")
    aisles = _id_names(folder / "aisles.csv", "aisle_id", "aisle")
    parent_of: dict[str, str] = {}
    path = folder / "products.csv"
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                aisle, department = row["aisle_id"], row["department_id"]
                known = parent_of.setdefault(aisle, department)
                if known != department:
                    raise DataLoadError(f"{path}: aisle {aisle} is listed under departments {known} and {department}")
    except (OSError, KeyError) as exc:
        raise DataLoadError(f"cannot read {path}: {exc}") from exc
    entries: list[TaxonomyEntry] = [(f"department/{d}", None, name) for d, name in departments.items()]
    for aisle, name in aisles.items():
        if aisle not in parent_of:
            raise DataLoadError(f"aisle {aisle} ({name!r}) has no products, so no department")
        if parent_of[aisle] not in departments:
            raise DataLoadError(f"aisle {aisle} names department {parent_of[aisle]}, which departments.csv lacks")
        entries.append((f"aisle/{aisle}", f"department/{parent_of[aisle]}", name))
    return entries


def _id_names(path: Path, id_column: str, name_column: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return {row[id_column]: row[name_column] for row in csv.DictReader(fh)}
    except (OSError, KeyError) as exc:
        raise DataLoadError(f"cannot read {path} (columns {id_column}, {name_column}): {exc}") from exc


def read_taxonomy_csv(path: str | os.PathLike) -> list[TaxonomyEntry]:
    """A taxonomy file with columns ``concept,parent`` and optionally ``label`` (an empty parent is a root)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataLoadError(f"cannot read taxonomy file {path}: {exc}") from exc
    if rows and not {"concept", "parent"} <= set(rows[0]):
        raise DataLoadError(f"taxonomy file {path} needs columns concept,parent[,label]; got {', '.join(rows[0])}")
    return [(r["concept"], r["parent"] or None, r.get("label") or r["concept"]) for r in rows if r["concept"]]
