"""Column-wise N-Quads of the catalog and predictions: the same graph as the rdflib builders, hostile text included."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyoxigraph as ox
import pytest
from kb_golden import ATTRIBUTES, CONCEPTS, make_golden
from rdflib import Dataset, Graph, URIRef
from rdflib.compare import graph_diff, isomorphic, to_isomorphic

from prodkg.errors import StageError
from prodkg.kb.curation import without_predicted_categories
from prodkg.kb.frame_nquads import catalog_nquads, prediction_nquads
from prodkg.kb.incremental import product_hashes
from prodkg.kb.iri import mint
from prodkg.kb.nquads import encode_quads
from prodkg.kb.triples import ModelInfo, RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads
from prodkg.kb.vocab import SDO

HOSTILE = [
    'a"b', "back\\slash", "line\nbreak", "cr\rlf\r\n", "tab\there", "nul\x00del\x7f", "bell\x07esc\x1b",
    "<script>alert(1)</script>", "} ; DROP ALL #", "' OR 1=1 --", "%2E%2E", ".", "..", "a/b?c#d", "spaces  inside ",
    "zürich-3", "日本語の商品", "emoji 🍵☕", "rtl \u202eevil", "combining e\u0301", "\u2028sep\u2029", '"""', "\\u0022", "x^^<y>",
    "@en", "_:b0", "ends with backslash\\",
]
RUN = RunInfo(run_id="run/α 1", started=datetime(2024, 5, 1, 12, tzinfo=UTC), ended=datetime(2024, 5, 1, 13, tzinfo=UTC),
              catalog="shop", method="dann", models=[ModelInfo("head v1", "head", "head")])


def _rdflib_graphs(data: bytes) -> dict[str, Graph]:
    """Graph name -> graph, parsed by rdflib (a parser independent of the one the store uses)."""
    ds = Dataset()
    ds.parse(data=data.decode("utf-8"), format="nquads")
    out: dict[str, Graph] = {}
    for s, p, o, g in ds.quads((None, None, None, None)):
        out.setdefault(str(g), Graph()).add((s, p, o))
    return out


def _term_graphs(quads) -> dict[str, Graph]:
    out: dict[str, Graph] = {}
    for s, p, o, g in quads:
        out.setdefault(str(g), Graph()).add((s, p, o))
    return out


def _assert_isomorphic(data: bytes, quads) -> None:
    built, expected = _rdflib_graphs(data), _term_graphs(quads)
    assert sorted(built) == sorted(expected)
    for name, graph in expected.items():
        if not isomorphic(built[name], graph):
            _, only_built, only_expected = graph_diff(to_isomorphic(built[name]), to_isomorphic(graph))
            pytest.fail(f"graph {name} differs\nonly column-wise:\n{only_built.serialize(format='nt')}"
                        f"\nonly rdflib builder:\n{only_expected.serialize(format='nt')}")


def _store_set(chunks) -> set:
    store = ox.Store()
    store.load(input=b"".join(chunks), format=ox.RdfFormat.N_QUADS)
    return set(store)


def _hostile_products() -> pd.DataFrame:
    n = len(HOSTILE)
    return pd.DataFrame({
        "product_id": [f"id {v}" for v in HOSTILE],
        "title": [f"Title {v}" for v in HOSTILE],
        "description": [v if i % 3 else None for i, v in enumerate(HOSTILE)],
        "image": [f"img/{v}.jpg" if i % 2 else "" for i, v in enumerate(HOSTILE)],
        "domain": ["shop" if i % 2 else "feed" for i in range(n)],
        "category": [HOSTILE[(i + 1) % n] if i % 4 else None for i in range(n)],
        "brand": [v if i % 2 else None for i, v in enumerate(HOSTILE)],
        "volume": ["2 l" if i % 3 == 0 else v for i, v in enumerate(HOSTILE)],
        "note": HOSTILE,
    })


def _hostile_predictions(products: pd.DataFrame) -> pd.DataFrame:
    ids = products["product_id"].tolist()
    n = len(ids)
    rng = np.random.default_rng(3)
    rows = [{"product_id": pid, "task": "category", "value": HOSTILE[(i + 5) % n], "confidence": float(rng.uniform()),
             "model": "head v1" if i % 2 else 'head "2"', "level": pd.NA, "kind": "class", "published": bool(i % 3)}
            for i, pid in enumerate(ids)]
    rows += [{"product_id": pid, "task": "category", "value": HOSTILE[i % n], "confidence": 0.25, "model": "head v1",
              "level": 1, "kind": "class", "published": False} for i, pid in enumerate(ids[:8])]
    rows += [{"product_id": pid, "task": "category", "value": None, "confidence": 0.0, "model": "head v1",
              "level": pd.NA, "kind": "unknown", "published": False} for pid in ids[8:12]]
    rows += [{"product_id": pid, "task": task, "value": HOSTILE[i], "confidence": 0.9, "model": "head v1",
              "level": pd.NA, "kind": "class", "published": True} for i, (pid, task) in enumerate(zip(ids[:4], ["brand", "volume", "note", "colour"]))]
    frame = pd.DataFrame(rows)
    frame["level"] = frame["level"].astype("Int64")
    return frame


def test_golden_catalog_and_predictions_match_the_hand_written_trig(expected_dataset):
    golden = make_golden()
    catalog = catalog_nquads(golden.products, catalog="shop", attributes=ATTRIBUTES, scheme="kitchen")
    preds = prediction_nquads(golden.predictions, golden.run, catalog="shop", scheme="kitchen", threshold=0.5)
    assert not catalog.fallback and not preds.fallback
    rest = taxonomy_quads("kitchen", CONCEPTS) + run_quads(golden.run)
    data = b"".join([*catalog, *preds, *encode_quads(rest)])
    built = _rdflib_graphs(data)
    expected: dict[str, Graph] = {}
    for s, p, o, g in expected_dataset.quads((None, None, None, None)):
        expected.setdefault(str(g), Graph()).add((s, p, o))
    assert sorted(built) == sorted(expected)
    for name, graph in expected.items():
        assert isomorphic(built[name], graph), name


@pytest.mark.parametrize("content_hash", [False, True])
def test_hostile_catalog_is_the_graph_the_rdflib_builder_makes(content_hash):
    products = _hostile_products()
    built = catalog_nquads(products, catalog="shop/β", attributes=["brand", "volume", "note"], scheme="s c", content_hash=content_hash)
    assert not built.fallback
    quads = catalog_quads(products, catalog="shop/β", attributes=["brand", "volume", "note"], scheme="s c", content_hash=content_hash)
    data = b"".join(built)
    _assert_isomorphic(data, quads)
    assert _store_set(built) == _store_set(encode_quads(quads))
    assert built.count == len(quads) == data.count(b"\n")
    # the text comes back exactly as it went in, read by rdflib's parser
    names = {str(o) for g in _rdflib_graphs(data).values() for o in g.objects(None, SDO.name)}
    assert {f"Title {v}" for v in HOSTILE} <= names
    if content_hash:
        assert built.hashes == product_hashes(quads)
        assert len(built.hashes) == len(products)


def test_hostile_predictions_are_the_graph_the_rdflib_builder_makes():
    products = _hostile_products()
    preds = _hostile_predictions(products)
    for run in (RUN, RUN.run_id):
        built = prediction_nquads(preds, run, catalog="shop/β", scheme="s c", threshold=None, min_precision=0.9)
        assert not built.fallback
        quads = prediction_quads(preds, run, catalog="shop/β", scheme="s c", threshold=None, min_precision=0.9)
        _assert_isomorphic(b"".join(built), quads)
        assert _store_set(built) == _store_set(encode_quads(quads))


def test_threshold_rule_and_a_missing_published_column():
    golden = make_golden()
    for threshold in (0.0, 0.4, 0.75, 1.0):
        built = prediction_nquads(golden.predictions, golden.run, catalog="shop", scheme="kitchen", threshold=threshold)
        quads = prediction_quads(golden.predictions, golden.run, catalog="shop", scheme="kitchen", threshold=threshold)
        assert _store_set(built) == _store_set(encode_quads(quads)), threshold


def test_real_catalog_sample_matches_the_rdflib_builder(data_home):
    from prodkg.catalogs import load_dataset

    src = load_dataset("instacart-products", data_home)
    frame = src.frame.iloc[::97].copy()  # about 500 products from across the file
    frame["category"] = frame["category"].replace("", None)
    aisles = sorted({t[0] for t in src.taxonomy if t[1] is not None})
    rng = np.random.default_rng(0)
    preds = pd.DataFrame({"product_id": frame["product_id"], "task": "category", "value": rng.choice(aisles, len(frame)),
                          "confidence": rng.uniform(0, 1, len(frame)), "model": "category/dann/x"})
    built = catalog_nquads(frame, catalog=src.name, scheme=src.name, content_hash=True)
    quads = catalog_quads(frame, catalog=src.name, scheme=src.name, content_hash=True)
    assert not built.fallback
    _assert_isomorphic(b"".join(built), quads)
    assert built.hashes == product_hashes(quads)
    built = prediction_nquads(preds, RUN, catalog=src.name, scheme=src.name, threshold=0.5)
    quads = prediction_quads(preds, RUN, catalog=src.name, scheme=src.name, threshold=0.5)
    _assert_isomorphic(b"".join(built), quads)


def test_chunks_split_rows_without_changing_the_graph(monkeypatch):
    import prodkg.kb.frame_nquads as fq

    products = _hostile_products()
    preds = _hostile_predictions(products)
    whole_c = _store_set(catalog_nquads(products, catalog="c", attributes=["note"], scheme="s", content_hash=True))
    whole_p = _store_set(prediction_nquads(preds, RUN, catalog="c", scheme="s", threshold=None))
    monkeypatch.setattr(fq, "CHUNK_ROWS", 4)
    built = catalog_nquads(products, catalog="c", attributes=["note"], scheme="s", content_hash=True)
    assert len(built.chunks) == -(-len(products) // 4)
    assert _store_set(built) == whole_c
    assert _store_set(prediction_nquads(preds, RUN, catalog="c", scheme="s", threshold=None)) == whole_p


def test_decided_products_get_no_predicted_category_fact():
    golden = make_golden()
    decided = [golden.products["product_id"][0]]
    built = prediction_nquads(golden.predictions, golden.run, catalog="shop", scheme="kitchen", threshold=0.5, no_category_fact=decided)
    quads = prediction_quads(golden.predictions, golden.run, catalog="shop", scheme="kitchen", threshold=0.5)
    kept = without_predicted_categories(quads, dict.fromkeys(decided), catalog="shop")
    assert len(kept) == len(quads) - 1
    assert _store_set(built) == _store_set(encode_quads(kept))


def test_numeric_ids_and_odd_cells_take_the_rdflib_path_with_the_same_graph():
    products = pd.DataFrame({"product_id": [7, 8, 9], "title": ["a", 1.5, None], "category": ["x", None, "y"]})
    built = catalog_nquads(products, catalog="c", scheme="s", content_hash=True)
    quads = catalog_quads(products, catalog="c", scheme="s", content_hash=True)
    assert built.fallback
    assert _store_set(built) == _store_set(encode_quads(quads))
    assert built.hashes == product_hashes(quads)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.assign(product_id=["a", "a", "b"]), "duplicate product_id"),
    (lambda f: f.assign(product_id=["a", None, "b"]), "product_id"),
    (lambda f: f.assign(product_id=["a", "", "b"]), "product_id"),
    (lambda f: f.assign(title=["x", object(), "z"]), "title"),
    (lambda f: f.drop(columns=["title"]), "missing column"),
    # pandas' own str columns cannot hold a lone surrogate; an object column can
    (lambda f: f.assign(product_id=pd.Series(["a", "b\ud800", "c"], dtype=object)), "UTF-8"),
])
def test_a_bad_catalog_is_refused_as_the_rdflib_builder_refuses_it(change, message):
    products = change(pd.DataFrame({"product_id": ["a", "b", "c"], "title": ["x", "y", "z"]}))
    with pytest.raises((StageError, ValueError), match=message) as new:
        catalog_nquads(products, catalog="c", scheme="s")
    with pytest.raises((StageError, ValueError)) as old:
        catalog_quads(products, catalog="c", scheme="s")
    assert type(new.value) is type(old.value) and str(new.value) == str(old.value)


def test_a_title_no_encoding_can_carry_fails_as_serialising_the_rdflib_terms_fails():
    products = pd.DataFrame({"product_id": ["a", "b"], "title": pd.Series(["x", "y\udc80"], dtype=object)})
    with pytest.raises(UnicodeEncodeError):
        list(encode_quads(catalog_quads(products, catalog="c", scheme="s")))
    with pytest.raises(UnicodeEncodeError):
        catalog_nquads(products, catalog="c", scheme="s")


@pytest.mark.parametrize("change", [
    lambda f: f.assign(confidence=[0.5, 1.5]),
    lambda f: f.assign(confidence=[0.5, float("nan")]),
    lambda f: f.assign(confidence=[True, False]),
    lambda f: f.assign(product_id=["a", "a"]),
    lambda f: f.assign(model=["m", ""]),
    lambda f: f.assign(value=["x", None]),
    lambda f: f.assign(kind=["class", "other"]),
    lambda f: f.assign(kind=["class", "unknown"], published=[False, True]),
    lambda f: f.assign(level=[0, -1]),
    lambda f: f.assign(level=[0.5, 1.0]),
    lambda f: f.assign(published=["yes", "no"]),
])
def test_bad_predictions_are_refused_as_the_rdflib_builder_refuses_them(change):
    preds = change(pd.DataFrame({"product_id": ["a", "b"], "task": "category", "value": ["x", "y"], "confidence": [0.5, 0.7], "model": "m"}))
    with pytest.raises(StageError) as old:
        prediction_quads(preds, RUN, catalog="c", scheme="s")
    with pytest.raises(StageError) as new:
        prediction_nquads(preds, RUN, catalog="c", scheme="s")
    assert str(new.value) == str(old.value)


def test_negative_zero_confidence_keeps_its_own_lexical_form():
    preds = pd.DataFrame({"product_id": ["a", "b"], "task": "category", "value": ["x", "y"], "confidence": [-0.0, 0.0], "model": "m"})
    built = prediction_nquads(preds, RUN, catalog="c", scheme="s")
    quads = prediction_quads(preds, RUN, catalog="c", scheme="s")
    assert _store_set(built) == _store_set(encode_quads(quads))


def test_content_hash_is_the_sha256_of_the_products_sorted_statements():
    products = pd.DataFrame({"product_id": ["p 1"], "title": ['say "hi"'], "category": ["c"]})
    built = catalog_nquads(products, catalog="c", scheme="s", content_hash=True)
    p = f"<{mint('product', 'c', 'p 1')}>"
    lines = sorted([f"{p} <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <https://schema.org/Product>",
                    f'{p} <https://schema.org/productID> "p 1"', f'{p} <https://schema.org/name> "say \\"hi\\""',
                    f"{p} <https://schema.org/category> <{mint('concept', 's', 'c')}>"])
    assert built.hashes == {URIRef(p[1:-1]): ("p 1", hashlib.sha256("\n".join(lines).encode()).hexdigest())}


def test_double_text_is_the_stored_form_of_double_literal():
    from rdflib import Literal

    from prodkg.kb.nquads import term_to_nt
    from prodkg.kb.triples import double_literal, double_text

    rng = np.random.default_rng(5)
    values = [*rng.uniform(0, 1, 500).tolist(), 0.0, -0.0, 1.0, 1e-300, 5e-324, 1e20, 0.1 + 0.2, 1.3601257419226798e-06,
              float("inf"), float("-inf"), float("nan")]
    double = "<http://www.w3.org/2001/XMLSchema#double>"
    fast = "".join(f'<http://x/{i}> <http://x/v> "{double_text(x)}"^^{double} .\n' for i, x in enumerate(values))
    slow = "".join(f"<http://x/{i}> <http://x/v> {term_to_nt(double_literal(x))} .\n" for i, x in enumerate(values))
    assert _store_set([fast.encode()]) == _store_set([slow.encode()])
    for x in values:
        if not math.isnan(x):  # NaN equals nothing, itself included
            assert Literal(double_text(x), datatype=double_literal(x).datatype) == double_literal(x), x


@pytest.mark.parametrize(("on_disk", "piece"), [(False, None), (True, None), (True, 300)])
def test_a_store_loaded_with_the_chunks_holds_what_a_strict_parse_reads(tmp_path, on_disk, piece, monkeypatch):
    import prodkg.kb.frame_nquads as fq
    import prodkg.kb.store as kb_store
    from prodkg.kb.store import OxigraphStore

    monkeypatch.setattr(fq, "CHUNK_ROWS", 5)
    if piece is not None:  # many bulk loads of a few chunks each, as a million-product spool is loaded
        monkeypatch.setattr(kb_store, "BULK_PIECE", piece)
    products = _hostile_products()
    catalog = catalog_nquads(products, catalog="c", attributes=["note"], scheme="s", content_hash=True)
    preds = prediction_nquads(_hostile_predictions(products), RUN, catalog="c", scheme="s", threshold=None)
    terms = run_quads(RUN)
    with OxigraphStore(tmp_path / "kg" if on_disk else None) as store:
        assert store.add_quads(terms, nquads=[*catalog, *preds]) == len(terms)
        loaded = set(store._open())
    assert loaded == _store_set([*catalog, *preds, *encode_quads(terms)])


def test_the_shacl_gate_of_a_large_catalog_sees_a_spread_sample_and_their_predictions(monkeypatch):
    from prodkg.kb import publish
    from prodkg.kb.triples import alt_label_quads
    from prodkg.kb.validation import validate_quads

    monkeypatch.setattr(publish, "SHACL_SAMPLE", 3)
    ids = [f"p{i}" for i in range(10)]
    products = pd.DataFrame({"product_id": ids, "title": ids, "category": "mug"})
    preds = pd.DataFrame({"product_id": ids, "task": "category", "value": "cup", "confidence": 0.9, "model": "head v1"})
    settings = publish.GraphSettings(threshold=0.5)
    sample = publish._shacl_sample(products, preds, RUN, settings, "shop", [], "kitchen", "https://example.org/prodkg/", ["p9"])
    subjects = {str(s) for s, p, o, g in sample if p == SDO.productID}
    assert subjects == {str(mint("product", "shop", pid)) for pid in ("p0", "p4", "p9")}  # first, middle, last (rounded)
    predicted = {str(o) for s, p, o, g in sample if str(p).endswith("#subject")}
    assert predicted == subjects
    facts = {str(s) for s, p, o, g in sample if p == SDO.category and str(g) == str(mint("graph", "run", RUN.run_id))}
    assert facts == {str(mint("product", "shop", pid)) for pid in ("p0", "p4")}  # p9 was decided by a reviewer
    concepts = [("mug", None), ("cup", None)]
    assert validate_quads(sample + taxonomy_quads("kitchen", concepts) + alt_label_quads("kitchen", concepts) + run_quads(RUN)).conforms


def test_bulk_pieces_join_whole_chunks_to_at_least_the_size():
    from prodkg.kb.store import _pieces

    chunks = [b"a\n" * k for k in (1, 2, 5, 1, 1, 9, 3)]
    pieces = list(_pieces(iter(chunks), 8))
    assert b"".join(pieces) == b"".join(chunks)  # nothing lost, order kept
    assert [len(p) for p in pieces] == [16, 22, 6]  # 2+4+10 | 2+2+18 | the last, shorter
    assert list(_pieces(iter([]), 8)) == []
