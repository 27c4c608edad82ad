"""Each named query's result on the golden data, through both ways of binding values."""

from __future__ import annotations

import pytest
from kb_golden import CUP, KETTLE, MUG

from prodkg.kb.queries import list_queries, load_query, query_spec, run_query
from prodkg.errors import QueryError, UnknownComponentError


def _records(result):
    return result.to_frame().to_dict("records")


def check_products_per_category(store):
    # the catalog asserts mug twice and kettle once; only the accepted predictions count
    assert _records(run_query(store, "products_per_category")) == [
        {"category": "cup", "products": 1, "run_id": "run-1"},
        {"category": "mug", "products": 1, "run_id": "run-1"},
    ]
    assert run_query(store, "products_per_category", run_id="other run").rows == []


def check_product_categories(store):
    result = run_query(store, "product_categories")
    assert result.variables == ["product_id", "title", "category", "confidence", "accepted", "run_id"]
    assert [tuple(r.values()) for r in _records(result)] == [
        (KETTLE, "Kettle", "kettle", 0.4, False, "run-1"),
        (MUG, "Blue mug", "mug", 0.9, True, "run-1"),
        (CUP, "Café cup", "cup", 0.75, True, "run-1"),
    ]
    assert run_query(store, "product_categories", product_id=CUP).column("category") == ["cup"]


def check_low_confidence(store):
    rows = _records(run_query(store, "low_confidence", threshold=0.5))
    assert [(r["product_id"], r["task"], r["value"], r["confidence"]) for r in rows] == [
        (MUG, "color", "navy", 0.3),
        (KETTLE, "category", "kettle", 0.4),
    ]
    assert {r["model_id"] for r in rows} == {"head-v1"}
    assert run_query(store, "low_confidence", threshold="0.35").column("task") == ["color"]  # text from a CLI
    assert run_query(store, "low_confidence", threshold=0.5, task="category").column("product_id") == [KETTLE]
    assert run_query(store, "low_confidence", threshold=0.0).rows == []


def check_products_in_category(store):
    def ids(label):
        return run_query(store, "products_in_category", category=label).column("product_id")

    # rolls up through skos:broader: drinkware > {mug, cup} and kitchenware > drinkware
    assert ids("drinkware") == [MUG, CUP]
    assert ids("kitchenware") == [MUG, CUP]
    assert ids("mug") == [MUG]  # the catalog's own "mug" label on the cup does not count
    assert ids("kettle") == []  # the kettle prediction stayed a candidate
    rows = _records(run_query(store, "products_in_category", category="drinkware"))
    assert [r["predicted_category"] for r in rows] == ["mug", "cup"]


def check_brand_in_category(store):
    rows = _records(run_query(store, "brand_in_category", brand="acme", category="kitchenware"))
    assert [(r["product_id"], r["maker"], r["product_category"], r["source"]) for r in rows] == [
        (KETTLE, "Acme", "kettle", "catalog")
    ]
    assert run_query(store, "brand_in_category", brand="Acme", category="drinkware").rows == []
    assert run_query(store, "brand_in_category", brand="Other", category="kitchenware").rows == []


def check_what_changed(store):
    from prodkg.kb.incremental import change_quads, diff_products
    from prodkg.kb.iri import mint

    def p(pid):
        return mint("product", "shop", pid)

    previous = {p(MUG): (MUG, "h1"), p(KETTLE): (KETTLE, "h2"), p("gone"): ("gone", "h9")}
    current = {p(MUG): (MUG, "h1-new"), p(KETTLE): (KETTLE, "h2"), p(CUP): (CUP, "h3")}
    changes = diff_products(previous, current)
    assert changes.counts() == {"added": 1, "changed": 1, "removed": 1, "unchanged": 1}
    assert run_query(store, "what_changed").rows == []
    store.add_quads(change_quads("run-1", "shop", changes, previous, current))
    assert [tuple(r.values()) for r in _records(run_query(store, "what_changed"))] == [
        (CUP, "added", "run-1"),
        (MUG, "changed", "run-1"),
        ("gone", "removed", "run-1"),
    ]
    assert run_query(store, "what_changed", change="removed").column("product_id") == ["gone"]


def check_unknown_products(store):
    assert run_query(store, "unknown_products").rows == []  # the golden run flagged nothing
    from test_kb_trust import trust_quads

    from prodkg.kb.store import OxigraphStore
    from kb_golden import make_golden

    # the answer on a run with unknown products, in a store of its own (the golden store is shared by every check)
    with OxigraphStore(None) as trust:
        trust.use_substitutions = getattr(store, "use_substitutions", True)
        trust.add_quads(trust_quads(make_golden()))
        assert _records(run_query(trust, "unknown_products")) == [
            {"product_id": KETTLE, "title": "Kettle", "score": 0.8, "candidate": "kettle", "run_id": "run-1"}]
        assert run_query(trust, "unknown_products", run_id="other run").rows == []


CHECKS = {
    "unknown_products": check_unknown_products,
    "brand_in_category": check_brand_in_category,
    "what_changed": check_what_changed,
    "products_per_category": check_products_per_category,
    "product_categories": check_product_categories,
    "low_confidence": check_low_confidence,
    "products_in_category": check_products_in_category,
}


def test_every_shipped_query_has_a_check():
    assert sorted(list_queries()) == sorted(CHECKS)


@pytest.mark.parametrize("use_substitutions", [True, False], ids=["substitution", "values-clause"])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_query_result_on_golden_data(golden_store, name, use_substitutions):
    golden_store.use_substitutions = use_substitutions
    CHECKS[name](golden_store)


def test_parameters_are_checked_before_the_store_sees_the_query(golden_store):
    with pytest.raises(QueryError, match=r"needs parameter\(s\) \['threshold'\]"):
        run_query(golden_store, "low_confidence")
    with pytest.raises(QueryError, match=r"has no parameter\(s\) \['treshold'\]"):
        run_query(golden_store, "low_confidence", treshold=0.5)
    with pytest.raises(QueryError, match="must be double"):
        run_query(golden_store, "low_confidence", threshold="half")
    with pytest.raises(UnknownComponentError, match="valid names: .*low_confidence"):
        run_query(golden_store, "no_such_query")
    # None means "not given" for an optional parameter
    assert len(run_query(golden_store, "products_per_category", run_id=None)) == 2


def test_specs_and_texts():
    spec = query_spec("low_confidence.rq")
    assert spec.required == ("threshold",) and spec.param_types["threshold"] == "double"
    assert "below ?threshold" in spec.description
    assert load_query("products_in_category").lstrip().startswith("#")
    assert "skos:broader*" in load_query("products_in_category")
