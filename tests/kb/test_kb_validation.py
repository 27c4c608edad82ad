"""The shipped SHACL shapes: the golden graph conforms; each kind of broken statement is reported."""

from __future__ import annotations

import pytest
from rdflib import Literal, URIRef

from prodkg.kb.iri import mint
from prodkg.kb.triples import double_literal
from prodkg.kb.vocab import PKG, SDO, XSD
from prodkg.kb.validation import validate_quads

MUG = mint("product", "shop", "mug #1 / blue")
PRED = mint("prediction", "run-1", "kettle>2", "category")


def test_golden_graph_conforms(golden):
    report = validate_quads(golden.quads())
    assert report.conforms, report.summary()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((MUG, SDO.productID, Literal("second id")), "productID"),
        ((MUG, SDO.category, URIRef("urn:not-a-concept")), "category"),
        ((PRED, PKG.confidence, double_literal(1.5)), "confidence"),
        ((MUG, PKG.contentHash, Literal("not-hex")), "contentHash"),
        ((MUG, SDO.image, Literal("img.jpg", datatype=XSD.string)), "image"),
    ],
    ids=["two-ids", "category-not-concept", "confidence-over-1", "bad-hash", "image-not-anyURI"],
)
def test_broken_statements_are_reported(golden, extra, expected):
    report = validate_quads([*golden.quads(), extra])
    assert not report.conforms
    assert any(expected in v for v in report.violations), report.violations
