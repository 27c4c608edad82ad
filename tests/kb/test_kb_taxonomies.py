"""Real taxonomies as SKOS schemes: Best Buy's category tree and Instacart's departments and aisles (need $PRODKG_DATA_HOME)."""

from __future__ import annotations

import pytest

from prodkg.catalogs.taxonomies import BESTBUY_MERCHANDISE_ROOTS, bestbuy_taxonomy, instacart_taxonomy, read_taxonomy_csv
from prodkg.kb.store import OxigraphStore
from prodkg.kb.triples import taxonomy_quads
from prodkg.errors import DataLoadError


def test_taxonomy_csv_with_and_without_labels(tmp_path):
    path = tmp_path / "tax.csv"
    path.write_text("concept,parent,label\na,,Alpha\nb,a,\n", encoding="utf-8")
    assert read_taxonomy_csv(path) == [("a", None, "Alpha"), ("b", "a", "b")]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,up\nx,\n", encoding="utf-8")
    with pytest.raises(DataLoadError, match="needs columns concept,parent"):
        read_taxonomy_csv(bad)


def test_missing_mirror_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(DataLoadError, match="instacart-products"):
        instacart_taxonomy(tmp_path)


@pytest.mark.dataset
def test_instacart_departments_and_aisles_roll_up(data_home):
    entries = instacart_taxonomy(data_home)
    assert sum(parent is None for _, parent, _ in entries) == 21
    assert sum(parent is not None for _, parent, _ in entries) == 134
    store = OxigraphStore(None)
    store.add_quads(taxonomy_quads("instacart", entries))  # "missing" is both an aisle and a department
    n = store.query(
        "SELECT ?label (COUNT(?aisle) AS ?n) WHERE { ?d skos:prefLabel ?label ; skos:topConceptOf ?s . "
        "?aisle skos:broader ?d } GROUP BY ?label",
        {"label": "missing"},
    ).column("n")
    assert n == [1]


@pytest.mark.dataset
def test_bestbuy_merchandise_tree(data_home):
    entries = bestbuy_taxonomy(data_home)
    keys = {k for k, _, _ in entries}
    assert {k for k, parent, _ in entries if parent is None} == set(BESTBUY_MERCHANDISE_ROOTS)
    assert all(parent is None or parent in keys for _, parent, _ in entries)
    assert "pcmcat128500050004" not in keys  # Name Brands, a marketing root
    full = bestbuy_taxonomy(data_home, roots=None)
    assert len(full) > len(entries)
    store = OxigraphStore(None)
    store.add_quads(taxonomy_quads("bestbuy", entries))
    tvs = store.query(
        "SELECT ?label (COUNT(DISTINCT ?c) AS ?n) WHERE { ?r skos:prefLabel ?label . ?c skos:broader* ?r } GROUP BY ?label",
        {"label": "TV & Home Theater"},
    )
    assert tvs.column("n")[0] == 1 + sum(1 for _ in _descendants(entries, "abcat0100000"))


def _descendants(entries, root):
    children = {}
    for key, parent, _ in entries:
        children.setdefault(parent, []).append(key)
    stack = list(children.get(root, []))
    while stack:
        key = stack.pop()
        yield key
        stack += children.get(key, [])
