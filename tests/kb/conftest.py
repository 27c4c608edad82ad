"""Fixtures of the kb tests: the golden data (kb_golden.py), a store holding it, the expected dataset, a Virtuoso."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from kb_golden import GOLDEN_TRIG, Golden, make_golden
from rdflib import Dataset
from virtuoso import VirtuosoServer, start_or_skip

from prodkg.kb.store import OxigraphStore


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


@pytest.fixture(scope="session")
def virtuoso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtuosoServer]:
    """A real Virtuoso on free loopback ports for the session, stopped by pid at the end (skipped when not installed)."""
    server = start_or_skip(tmp_path_factory.mktemp("virtuoso"))
    try:
        yield server
    finally:
        server.stop()
