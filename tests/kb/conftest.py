"""Fixtures of the kb tests: the golden data (kb_golden.py), a store holding it, the expected dataset."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from kb_golden import GOLDEN_TRIG, Golden, make_golden
from rdflib import Dataset

from kb.store import OxigraphStore


@pytest.fixture
def golden() -> Golden:
    return make_golden()


@pytest.fixture
def golden_store(golden: Golden) -> Iterator[OxigraphStore]:
    store = OxigraphStore(None)
    store.add_quads(golden.quads())
    yield store
    store.close()


@pytest.fixture(scope="session")
def expected_dataset() -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():
        # rdflib's own TriG parser still uses its deprecated ConjunctiveGraph internally
        warnings.simplefilter("ignore", DeprecationWarning)
        ds.parse(GOLDEN_TRIG, format="trig")
    return ds
