"""Closed vocabularies and IRI minting: misspelt terms raise, any identifier gives a valid, reversible IRI."""

from __future__ import annotations

import pyoxigraph as ox
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdflib import Graph, URIRef

from prodkg.kb.iri import DEFAULT_BASE, mint, unmint
from prodkg.kb.vocab import PKG, PREFIXES, SDO, SKOS, XSD

HOSTILE = [
    "plain",
    "with space",
    "a/b",
    "a%2Fb",  # must not collide with "a/b"
    'quote"d',
    "angle>bracket<",
    "hash#frag",
    "curly}{",
    "new\nline",
    "tab\tand\rcr",
    "back\\slash",
    "pipe|caret^`tick",
    "zürich",
    "東京タワー",
    "emoji 🍵",
    ".",
    "..",
    "?query=1&x",
    "percent %",
    "~tilde",
]


def test_misspelt_terms_raise():
    with pytest.raises(AttributeError):
        SDO.nmae  # noqa: B018
    with pytest.raises(AttributeError):
        PKG.confidnce  # noqa: B018
    with pytest.raises(AttributeError):
        XSD.dobule  # noqa: B018
    with pytest.raises(AttributeError):
        SKOS.prefLable  # noqa: B018


def test_terms_have_their_published_iris():
    assert SDO.name == URIRef("https://schema.org/name")
    assert SDO.PropertyValue == URIRef("https://schema.org/PropertyValue")
    assert SKOS.broader == URIRef("http://www.w3.org/2004/02/skos/core#broader")
    assert str(PKG.Prediction).startswith(PREFIXES["pkg"])


def _parses_as_ntriples(iri: str) -> URIRef:
    g = Graph()
    g.parse(data=f'<{iri}> <http://example.org/p> "v" .\n', format="nt")
    (subject,) = set(g.subjects())
    return subject


@pytest.mark.parametrize("ident", HOSTILE)
def test_hostile_ids_give_valid_reversible_iris(ident):
    iri = mint("product", "my catalog/2", ident)
    assert iri.startswith(DEFAULT_BASE + "product/")
    assert _parses_as_ntriples(iri) == iri
    ox.NamedNode(str(iri))  # Oxigraph validates IRIs strictly
    assert unmint(iri) == ("product", ("my catalog/2", ident))


def test_dot_segments_are_encoded_so_no_resolver_collapses_them():
    assert mint("product", "c", "..").endswith("/c/%2E%2E")
    assert mint("product", "c", ".") != mint("product", "c", "..")


def test_distinct_ids_give_distinct_iris():
    iris = {mint("product", "c", ident) for ident in HOSTILE}
    assert len(iris) == len(HOSTILE)
    # a part boundary can never be forged with a slash
    assert mint("product", "a/b", "c") != mint("product", "a", "b/c")
    assert mint("prediction", "r", "p", "category") != mint("prediction", "r", "p/category", "x")


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1)


@settings(max_examples=150, deadline=None)
@given(_TEXT, _TEXT)
def test_any_text_round_trips(catalog, ident):
    iri = mint("product", catalog, ident)
    assert unmint(iri) == ("product", (catalog, ident))
    ox.NamedNode(str(iri))


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="unknown IRI kind 'produkt'"):
        mint("produkt", "c", "p")
    with pytest.raises(ValueError, match="empty"):
        mint("product", "c", "")
    with pytest.raises(TypeError, match="NoneType"):
        mint("product", "c", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        mint("product", "c", float("nan"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="takes parts"):
        mint("product", "only-one")
    with pytest.raises(ValueError, match="IRI base"):
        mint("run", "r", base="not an iri/")
    with pytest.raises(ValueError, match="IRI base"):
        mint("run", "r", base="https://example.org/no-separator")
    with pytest.raises(ValueError, match="not encodable"):
        mint("run", "lone \udcff surrogate")
    with pytest.raises(ValueError, match="does not start with base"):
        unmint("http://elsewhere.org/product/c/p")


def test_kinds_and_bases():
    assert mint("graph", "run", "r 1") == URIRef(DEFAULT_BASE + "graph/run/r%201")
    assert mint("property-value", "c", "p", "size") != mint("property-value", "c", "p", "size", "run-1")
    assert mint("run", "r", base="urn:shop:").startswith("urn:shop:run/")
    hash_base = "http://x.org/kg#"
    assert unmint(mint("concept", "s", "a b", base=hash_base), base=hash_base) == ("concept", ("s", "a b"))
