"""Synthetic catalogs of any size derived from real titles, for the scaling bench.

    PRODKG_DATA_HOME=../shared/datasets python bench/synth_catalog.py --products 200000 --out runs/scale/catalog-200k.parquet

Each product recombines a real Instacart title with perturbations drawn with a fixed seed:
a Best Buy category name, a pack size and a variant word, so that every title is distinct
(a product number makes a rare collision distinct too). The category is the Instacart aisle of the
title it came from, so the labels are as learnable as the real catalog's; 20 % of the products
go to the unlabelled "new" domain. ``--images 0.1`` gives 10 % of the products a photo drawn
from the bundled office-caltech-10 and grocery photo sets (by absolute path).

``changed(frame, fraction, seed)`` returns a copy where ``fraction`` of the titles are edited, as a
nightly feed with that share of products changed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = ["6 oz", "8 oz", "12 oz", "16 oz", "1 lb", "2 lb", "500 ml", "1 l", "2 l", "6 pack", "12 pack", "24 count", "Family Size", "Travel Size"]
VARIANTS = ["Original", "Classic", "Organic", "Reduced Sugar", "Extra", "Mini", "Value", "Premium", "Select", "Fresh", "Lite", "Bold",
            "Unscented", "Natural", "Deluxe", "Everyday", "Signature", "Kids", "Limited Edition", "Seasonal"]


def data_home() -> Path:
    home = os.environ.get("PRODKG_DATA_HOME")
    if not home:
        raise SystemExit("set PRODKG_DATA_HOME to the dataset mirror")
    return Path(home).resolve()


def _instacart(home: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    root = home / "instacart-products"

    def table(name: str, key: str, value: str) -> dict[str, str]:
        with open(root / name, encoding="utf-8", newline="") as fh:
            return {r[key]: r[value] for r in csv.DictReader(fh)}

    aisles, departments = table("aisles.csv", "aisle_id", "aisle"), table("departments.csv", "department_id", "department")
    titles, labels, parent = [], [], {}
    with open(root / "products.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            aisle, dept = aisles[r["aisle_id"]], departments[r["department_id"]]
            if aisle == "missing" or dept == "missing":
                continue
            titles.append(r["product_name"])
            labels.append(aisle)
            parent.setdefault(aisle, dept)
    taxonomy = [(f"department:{d}", "") for d in sorted(set(parent.values()))] + [(a, f"department:{d}") for a, d in sorted(parent.items())]
    return titles, labels, taxonomy


def _bestbuy(home: Path) -> list[str]:
    data = json.loads((home / "bestbuy-categories" / "categories.json").read_text(encoding="utf-8"))
    names = {c["name"] for c in data if c.get("name")}
    return sorted(n for n in names if len(n) < 40)


def _photos(home: Path) -> list[str]:
    exts = {".jpg", ".jpeg", ".png"}
    out = []
    for folder in ("office-caltech-10", "grocery-store-dataset"):
        for p in sorted((home / folder).rglob("*")):
            if p.suffix.lower() in exts:
                out.append(str(p))
    return out


def synth_catalog(n: int, *, seed: int = 0, images: float = 0.0, home: Path | None = None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``n`` distinct products and the department → aisle taxonomy (rows ``(concept, parent)``)."""
    home = home or data_home()
    titles, labels, taxonomy = _instacart(home)
    bestbuy = _bestbuy(home)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(titles), n)
    bb = rng.integers(0, len(bestbuy), n)
    size = rng.integers(0, len(SIZES), n)
    var = rng.integers(0, len(VARIANTS), n)
    t = np.asarray(titles, dtype=object)
    title = [f"{t[b]} {VARIANTS[v]} {SIZES[s]} for {bestbuy[c]}" for b, v, s, c in zip(base, var, size, bb)]
    ids = [f"p{i:08d}" for i in range(n)]
    domain = np.where(rng.random(n) < 0.2, "new", "catalog")
    frame = pd.DataFrame({"product_id": ids, "title": title, "description": "", "image": "", "domain": domain,
                          "category": np.asarray(labels, dtype=object)[base]})
    # a repeated (title, variant, size, category name) is rare but possible: the product number keeps it distinct
    dup = frame["title"].duplicated(keep="first")
    frame.loc[dup, "title"] = frame.loc[dup, "title"] + " #" + frame.loc[dup, "product_id"].str[1:].str.lstrip("0")
    if images > 0:
        photos = _photos(home)
        with_image = rng.random(n) < images
        frame.loc[with_image, "image"] = np.asarray(photos, dtype=object)[rng.integers(0, len(photos), int(with_image.sum()))]
    return frame, taxonomy


def changed(frame: pd.DataFrame, fraction: float, seed: int = 1) -> tuple[pd.DataFrame, int]:
    """A copy of ``frame`` with ``fraction`` of the titles edited (a nightly feed); returns it and the count."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    pick = rng.choice(len(out), int(round(fraction * len(out))), replace=False)
    col = out.columns.get_loc("title")
    out.iloc[pick, col] = out.iloc[pick, col] + " (new recipe)"
    return out, len(pick)


def changed_in(frame: pd.DataFrame, fraction: float, domain: str, seed: int = 1) -> tuple[pd.DataFrame, int]:
    """As :func:`changed`, with the ``fraction`` of the catalog's products all drawn from ``domain`` (a feed's own changes)."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    rows = np.flatnonzero((out["domain"] == domain).to_numpy())
    pick = rng.choice(rows, min(len(rows), int(round(fraction * len(out)))), replace=False)
    col = out.columns.get_loc("title")
    out.iloc[pick, col] = out.iloc[pick, col] + " (new recipe)"
    return out, len(pick)


def write(frame: pd.DataFrame, taxonomy: list[tuple[str, str]], path: Path) -> tuple[Path, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    tax = path.with_name(path.stem + ".taxonomy.csv")
    with open(tax, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["concept", "parent"])
        w.writerows(taxonomy)
    return path, tax


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=float, default=0.0, help="share of products with a photo (0.1 = 10 %%)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    frame, taxonomy = synth_catalog(a.products, seed=a.seed, images=a.images)
    print(*write(frame, taxonomy, Path(a.out)))


if __name__ == "__main__":
    main()
