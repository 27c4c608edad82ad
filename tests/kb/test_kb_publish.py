"""KnowledgeGraph.publish: a new graph replaces the live one atomically; a failed publish changes nothing."""

from __future__ import annotations

import pytest
from rdflib import Literal

from prodkg.kb.iri import mint
from prodkg.kb.store import KnowledgeGraph, open_store
from prodkg.kb.vocab import SDO
from prodkg.errors import StoreError

G = mint("graph", "catalog", "t")
NAMES = "SELECT ?name WHERE { ?p schema:name ?name } ORDER BY ?name"


def _quads(*names: str):
    for name in names:
        yield (mint("product", "t", name), SDO.name, Literal(name), G)


def _names(kg: KnowledgeGraph) -> list[str]:
    with kg.open() as store:
        return store.query(NAMES).column("name")


def test_nothing_published_yet(tmp_path):
    kg = KnowledgeGraph(tmp_path / "kg")
    assert kg.current_path() is None
    with pytest.raises(StoreError, match="nothing has been published"):
        kg.open()


def test_second_publish_swaps_and_keeps_one_previous_generation(tmp_path):
    kg = KnowledgeGraph(tmp_path / "kg")
    first = kg.publish(_quads("a", "b"), "run 1/x")
    assert kg.current_path() == first and first.parent == kg.stores_dir
    assert (kg.root / "CURRENT").read_text().strip() == f"stores/{first.name}"
    assert _names(kg) == ["a", "b"]

    second = kg.publish(_quads("c"), "run-2")
    assert kg.current_path() == second
    assert _names(kg) == ["c"]
    assert first.is_dir()  # the previous graph stays for readers that opened it before the swap

    third = kg.publish(_quads("d"), "run-3")
    assert _names(kg) == ["d"]
    assert not first.exists() and second.is_dir() and third.is_dir()
    assert sorted(p.name for p in kg.stores_dir.iterdir()) == sorted([second.name, third.name])


def test_a_publish_that_fails_half_way_leaves_the_previous_graph_live(tmp_path):
    kg = KnowledgeGraph(tmp_path / "kg")
    good = kg.publish(_quads("a", "b"), "good")

    def broken():
        yield from _quads(*[f"n{i}" for i in range(5000)])
        raise ValueError("extractor crashed")

    with pytest.raises(ValueError, match="extractor crashed"):
        kg.publish(broken(), "bad")
    assert kg.current_path() == good
    assert _names(kg) == ["a", "b"]
    assert [p.name for p in kg.stores_dir.iterdir()] == [good.name]  # no partial store left

    with pytest.raises(StoreError, match="no quads"):
        kg.publish(iter(()), "empty")
    assert kg.current_path() == good and _names(kg) == ["a", "b"]


def test_republishing_a_run_id_gets_a_new_generation(tmp_path):
    kg = KnowledgeGraph(tmp_path / "kg")
    first = kg.publish(_quads("a"), "r")
    second = kg.publish(_quads("b"), "r")
    assert second != first and second.name == "r.1"
    assert _names(kg) == ["b"]


def test_open_store_on_a_root_opens_the_live_graph(tmp_path):
    kg = KnowledgeGraph(tmp_path / "kg")
    kg.publish(_quads("x"), "r")
    with open_store(tmp_path / "kg", read_only=True) as store:
        assert store.query(NAMES).column("name") == ["x"]


def test_a_corrupt_pointer_is_reported(tmp_path):
    kg = KnowledgeGraph(tmp_path / "kg")
    kg.publish(_quads("x"), "r")
    (kg.root / "CURRENT").write_text("../../etc\n")
    with pytest.raises(StoreError, match="expected 'stores/<name>'"):
        kg.open()
    (kg.root / "CURRENT").write_text("stores/gone\n")
    with pytest.raises(StoreError, match="does not exist"):
        kg.open()
