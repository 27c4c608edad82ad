"""The kb layer on real catalogs: Best Buy's category tree and the Grocery Store dataset (need $PRODKG_DATA_HOME)."""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd
import pytest

from prodkg.kb.queries import run_query
from prodkg.kb.store import OxigraphStore
from prodkg.kb.triples import RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads

pytestmark = pytest.mark.dataset


def _bestbuy_concepts(data_home):
    path = data_home / "bestbuy-categories" / "categories.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    # labels repeat across the tree ("Latin" under "Latin"), so ids are the keys; some parents
    # appear only inside other categories' paths, so every path node is a concept
    entries: dict[tuple[str, str | None], str] = {}
    for category in json.loads(path.read_text(encoding="utf-8")):
        parent = None
        for node in category["path"]:
            entries[(node["id"], parent)] = node["name"] or node["id"]
            parent = node["id"]
    return [(key, parent, label) for (key, parent), label in entries.items()]


def test_bestbuy_tree_rolls_up_through_broader(data_home):
    concepts = _bestbuy_concepts(data_home)
    children = defaultdict(set)
    for key, parent, _ in concepts:
        if parent is not None:
            children[parent].add(key)

    def descendants(key):
        out = {key}
        for child in children[key]:
            out |= descendants(child)
        return out

    store = OxigraphStore(None)
    store.add_quads(taxonomy_quads("bestbuy", concepts))
    keys = {key for key, _, _ in concepts}
    assert store.query("SELECT (COUNT(?c) AS ?n) WHERE { ?c a skos:Concept }").column("n") == [len(keys)]
    tops = {key for key, parent, _ in concepts if parent is None}
    assert len(store.query("SELECT ?c WHERE { ?c skos:topConceptOf ?s }")) == len(tops)
    # the largest subtree, counted by SPARQL property path and by Python
    root = max(tops, key=lambda k: len(descendants(k)))
    label = next(lbl for key, _, lbl in concepts if key == root)
    n = store.query(
        "SELECT ?label (COUNT(DISTINCT ?c) AS ?n) WHERE { ?r skos:prefLabel ?label ; skos:topConceptOf ?s . "
        "?c skos:broader* ?r } GROUP BY ?label",
        {"label": label},
    ).column("n")
    assert n == [len(descendants(root))]


def test_grocery_catalog_products_in_category_matches_pandas(data_home):
    from prodkg.catalogs import load_dataset

    source = load_dataset("grocery-store-dataset", data_home, download=False)
    products = source.frame[source.frame["domain"] == "iconic"].drop(columns=["_split"])
    # predictions equal to the catalog labels, every other one below the threshold
    predictions = pd.DataFrame(
        {
            "product_id": products["product_id"],
            "task": "category",
            "value": products["category"],
            "confidence": [0.9 if i % 2 == 0 else 0.2 for i in range(len(products))],
            "model": "head",
        }
    )
    run = RunInfo("r", pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime(), None, source.name, "source_only")
    store = OxigraphStore(None)
    store.add_quads(
        taxonomy_quads(source.name, source.taxonomy)
        + catalog_quads(products, catalog=source.name, scheme=source.name)
        + run_quads(run)
        + prediction_quads(predictions, run, catalog=source.name, scheme=source.name)
    )
    parent = dict(source.taxonomy)

    def top_of(label):
        while parent[label] is not None:
            label = parent[label]
        return label

    accepted = products[predictions["confidence"].to_numpy() >= 0.5]
    for top in sorted({top_of(c) for c in products["category"]}):
        expected = sorted(accepted.loc[[top_of(c) == top for c in accepted["category"]], "product_id"])
        found = run_query(store, "products_in_category", category=top).column("product_id")
        assert found == expected, top
    counts = run_query(store, "products_per_category").to_frame()
    assert counts["products"].sum() == len(accepted)
