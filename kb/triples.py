"""Turn pipeline tables (products, taxonomy, predictions, run info) into RDF quads in named graphs."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from rdflib.term import Literal, Node, URIRef

from prodkg.contracts import PREDICTIONS, PRODUCTS
from prodkg.kb.iri import DEFAULT_BASE, mint
from prodkg.kb.nquads import term_to_nt
from prodkg.kb.vocab import PKG, PROV, RDF, SDO, SKOS, XSD
from prodkg.errors import StageError

__all__ = [
    "CATEGORY_TASK",
    "DIRECT_ATTRIBUTES",
    "UNIT_CODES",
    "ModelInfo",
    "model_infos",
    "Quad",
    "RunInfo",
    "alt_label_quads",
    "catalog_graph",
    "catalog_quads",
    "datetime_literal",
    "double_literal",
    "parse_quantity",
    "prediction_quads",
    "run_graph",
    "run_quads",
    "taxonomy_graph",
    "taxonomy_quads",
]

Quad: TypeAlias = tuple[Node, URIRef, Node, URIRef]

CATEGORY_TASK = "category"

#: Attribute names (compared lower-case) written with a schema.org property of their own
#: instead of a schema:additionalProperty / schema:PropertyValue pair.
DIRECT_ATTRIBUTES: dict[str, URIRef] = {
    "brand": SDO.brand,
    "color": SDO.color,
    "colour": SDO.color,
    "gtin": SDO.gtin,
    "material": SDO.material,
    "mpn": SDO.mpn,
    "pattern": SDO.pattern,
    "size": SDO.size,
    "sku": SDO.sku,
    "manufacturer": SDO.manufacturer,
    "country_of_origin": SDO.countryOfOrigin,
    "countryoforigin": SDO.countryOfOrigin,
    "volume": PKG.volume,
    "weight": SDO.weight,
}

#: unit as written (lower-case) -> (UN/CEFACT common code, is it a mass). Mass quantities are
#: written as schema:weight, volumes as pkg:volume (schema.org has no volume of content).
UNIT_CODES: dict[str, tuple[str, bool]] = {
    "mg": ("MGM", True),
    "g": ("GRM", True),
    "kg": ("KGM", True),
    "ml": ("MLT", False),
    "cl": ("CLT", False),
    "dl": ("DLT", False),
    "l": ("LTR", False),
}
_QUANTITY = re.compile(r"^\s*(?:ca\.?\s*)?(\d+(?:[.,]\d+)?)\s*([A-Za-z]+)\s*$")

_XSD_DOUBLE = XSD.double
# attributes whose values are things of their own (mint kind, class), not literals
_NODE_KINDS: dict[URIRef | None, tuple[str, URIRef]] = {
    SDO.brand: ("brand", SDO.Brand),
    SDO.manufacturer: ("organization", SDO.Organization),
    SDO.countryOfOrigin: ("country", SDO.Country),
}
_PRODUCT_COLUMNS = tuple(c for c in PRODUCTS.columns if c != "source_row")
# the contract's level, kind and published columns are optional here: prediction_quads reads them when present
_PREDICTION_COLUMNS = tuple(c for c in PREDICTIONS.columns if c not in ("level", "kind", "published"))


# ----------------------------------------------------------------------------- literals


def double_literal(value: float) -> Literal:
    """An xsd:double literal in the lexical form Oxigraph stores it in.

    Oxigraph canonicalises numbers on the way in (``1.0`` comes back as ``"1"``); writing that
    form ourselves keeps a graph identical, not merely equal in value, after a store round trip.
    """
    return Literal(double_text(value), datatype=_XSD_DOUBLE)


def double_text(value: float) -> str:
    """Oxigraph's lexical form of an xsd:double, without making an rdflib term.

    rdflib re-normalises a double literal's text to Python's ``repr`` (``"1.0"``), which Oxigraph
    reads back as ``"1"``: the text here and :func:`double_literal` give the same stored term.
    """
    x = float(value)
    text = repr(x)
    if "e" in text or "n" in text:  # exponent, inf or nan: rare, so the slow exact path
        if math.isnan(x):
            text = "NaN"
        elif math.isinf(x):
            text = "INF" if x > 0 else "-INF"
        else:
            text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def parse_quantity(text: str) -> tuple[float, str] | None:
    """``(value, unit)`` of a quantity such as ``"2 l"``, ``"ca 1.05kg"`` or ``"1,5 dl"``; None otherwise.

    The unit comes back lower-case and is one of :data:`UNIT_CODES`; a decimal comma is read
    as a point. "ca" (circa) is dropped: the value is the nominal one the catalog states.
    """
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if match is None or match.group(2).lower() not in UNIT_CODES:
        return None
    return float(match.group(1).replace(",", ".")), match.group(2).lower()


def datetime_literal(value: datetime) -> Literal:
    """An xsd:dateTime literal of an aware datetime, converted to UTC.

    rdflib gives dateTime literals one lexical form (``...+00:00``) whichever form they are read
    from, and Oxigraph one of its own (``...Z``), so values compare equal on both sides.
    """
    if not isinstance(value, datetime):
        raise StageError(f"expected a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise StageError(f"expected a timezone-aware datetime (UTC), got naive {value.isoformat()}")
    return Literal(value.astimezone(timezone.utc).isoformat(), datatype=XSD.dateTime)


# concepts, models, brands and attributes repeat across thousands of rows
_mint_repeating = lru_cache(maxsize=65536)(mint)


def _missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value == ""


def _text(value: object, what: str) -> str | None:
    """A cell as text, or None when it is missing; numbers are accepted and written as text."""
    if _missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, numbers.Integral)):
        return str(value)
    if isinstance(value, numbers.Real):
        return repr(float(value))
    raise StageError(f"{what}: expected text, got {type(value).__name__} {value!r}")


def _identifier(value: object, what: str) -> str:
    """A required identifier cell: a non-empty str or an integer (never a float, never missing)."""
    if isinstance(value, str) and value != "":
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    raise StageError(f"{what}: expected a non-empty str identifier, got {type(value).__name__} {value!r}")


def _require_columns(frame: object, required: Sequence[str], table: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise StageError(f"{table}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise StageError(f"{table}: missing column(s) {missing}; expected {list(required)}, got {list(frame.columns)}")
    return frame


def _label(value: object, what: str) -> str:
    if not isinstance(value, str) or value == "":
        raise StageError(f"{what}: expected a non-empty str, got {type(value).__name__} {value!r}")
    return value


# ----------------------------------------------------------------------------- graph names


def catalog_graph(catalog: str, *, base: str = DEFAULT_BASE) -> URIRef:
    """Name of the graph holding what the catalog asserts about its products."""
    return mint("graph", "catalog", catalog, base=base)


def taxonomy_graph(scheme: str, *, base: str = DEFAULT_BASE) -> URIRef:
    """Name of the graph holding one SKOS concept scheme."""
    return mint("graph", "taxonomy", scheme, base=base)


def run_graph(run_id: str, *, base: str = DEFAULT_BASE) -> URIRef:
    """Name of the graph holding one run's provenance, predictions and accepted facts."""
    return mint("graph", "run", run_id, base=base)


# ----------------------------------------------------------------------------- run info


@dataclass
class ModelInfo:
    """One model a run used: a pretrained encoder, an adapter or a head.

    ``details`` holds JSON-serialisable settings (weights name, input size, dims, ...).
    """

    model_id: str
    name: str
    kind: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _label(self.model_id, "ModelInfo.model_id")
        _label(self.name, "ModelInfo.name")
        _label(self.kind, "ModelInfo.kind")
        if not isinstance(self.details, Mapping):
            raise StageError(f"ModelInfo.details: expected a dict, got {type(self.details).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "name": self.name, "kind": self.kind, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        return cls(data["model_id"], data["name"], data["kind"], dict(data.get("details") or {}))


def model_infos(encoders: dict[str, dict], heads: list[dict]) -> list[ModelInfo]:
    """The models a run used, from its extract stage's per-modality stats (``encoder_id``, ``encoder``, ``dim``)
    and its predict stage's head records (``model_id``, ``task``, ``method``, ``temperature``, ``classes``):
    what :class:`RunInfo` records, for a full run and for a re-run that reuses the previous run's records."""
    models = [ModelInfo(model_id=s["encoder_id"], name=s["encoder"], kind=f"{m}-encoder", details={"dim": s["dim"]})
              for m, s in encoders.items()]
    models += [ModelInfo(model_id=h["model_id"], name=f"{h['task']} head ({h['method']})", kind="head",
                         details={"method": h["method"], "temperature": h["temperature"], "classes": len(h["classes"])}) for h in heads]
    return models


@dataclass
class RunInfo:
    """What the graph records about one pipeline run (its PROV-O activity).

    ``started`` and ``ended`` must be timezone-aware; they are written in UTC. ``ended`` may be
    None for a run that publishes before it finishes.
    """

    run_id: str
    started: datetime
    ended: datetime | None
    catalog: str
    method: str
    source_domains: list[str] = field(default_factory=list)
    target_domains: list[str] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)
    config_hash: str = ""

    def __post_init__(self) -> None:
        _label(self.run_id, "RunInfo.run_id")
        _label(self.catalog, "RunInfo.catalog")
        _label(self.method, "RunInfo.method")
        datetime_literal(self.started)
        if self.ended is not None:
            datetime_literal(self.ended)
            if self.ended < self.started:
                raise StageError(
                    f"RunInfo: ended {self.ended.isoformat()} is before started {self.started.isoformat()}"
                )
        for name in ("source_domains", "target_domains"):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
                raise StageError(f"RunInfo.{name}: expected a list of non-empty str, got {values!r}")
        for model in self.models:
            if not isinstance(model, ModelInfo):
                raise StageError(f"RunInfo.models: expected ModelInfo items, got {type(model).__name__}")
        by_id: dict[str, ModelInfo] = {}
        for model in self.models:
            other = by_id.setdefault(model.model_id, model)
            if other.to_dict() != model.to_dict():
                raise StageError(
                    f"RunInfo.models: model id {model.model_id!r} describes two different models: {other} and {model}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "catalog": self.catalog,
            "method": self.method,
            "source_domains": list(self.source_domains),
            "target_domains": list(self.target_domains),
            "models": [m.to_dict() for m in self.models],
            "config_hash": self.config_hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunInfo:
        return cls(
            run_id=data["run_id"],
            started=datetime.fromisoformat(data["started"]),
            ended=datetime.fromisoformat(data["ended"]) if data.get("ended") else None,
            catalog=data["catalog"],
            method=data["method"],
            source_domains=list(data.get("source_domains", [])),
            target_domains=list(data.get("target_domains", [])),
            models=[ModelInfo.from_dict(m) for m in data.get("models", [])],
            config_hash=data.get("config_hash", ""),
        )


# ----------------------------------------------------------------------------- builders


def _attribute_quads(
    product: URIRef,
    name: str,
    value: str,
    value_node_parts: tuple[str, ...],
    g: URIRef,
    base: str,
) -> list[Quad]:
    """The plain fact 'product has attribute name = value', as schema.org writes it.

    ``value_node_parts`` are the :func:`mint` parts of the PropertyValue node, used only for
    attributes without a schema.org property of their own.
    """
    prop = DIRECT_ATTRIBUTES.get(name.strip().lower())
    if prop == SDO.brand:
        brand = _mint_repeating("brand", value, base=base)
        return [(product, SDO.brand, brand, g), (brand, RDF.type, SDO.Brand, g), (brand, SDO.name, Literal(value), g)]
    if prop == SDO.manufacturer:
        org = _mint_repeating("organization", value, base=base)
        return [(product, prop, org, g), (org, RDF.type, SDO.Organization, g), (org, SDO.name, Literal(value), g)]
    if prop == SDO.countryOfOrigin:
        country = _mint_repeating("country", value, base=base)
        return [(product, prop, country, g), (country, RDF.type, SDO.Country, g), (country, SDO.name, Literal(value), g)]
    node = mint("property-value", *value_node_parts, base=base)
    if prop in (PKG.volume, SDO.weight):
        quantity = parse_quantity(value)
        if quantity is not None:
            number, unit = quantity
            code, is_mass = UNIT_CODES[unit]
            return [
                (product, SDO.weight if is_mass else PKG.volume, node, g),
                (node, RDF.type, SDO.QuantitativeValue, g),
                (node, SDO.value, double_literal(number), g),
                (node, SDO.unitCode, Literal(code), g),
                (node, SDO.unitText, Literal(unit), g),
            ]
        prop = None  # not a number with a known unit: keep the text as a PropertyValue
    if prop is not None:
        return [(product, prop, Literal(value), g)]
    return [
        (product, SDO.additionalProperty, node, g),
        (node, RDF.type, SDO.PropertyValue, g),
        (node, SDO.propertyID, Literal(name), g),
        (node, SDO.value, Literal(value), g),
    ]


def catalog_quads(
    products: pd.DataFrame,
    *,
    catalog: str,
    attributes: Sequence[str] = (),
    scheme: str,
    base: str = DEFAULT_BASE,
    content_hash: bool = False,
) -> list[Quad]:
    """Quads of what a catalog asserts, in the graph ``mint("graph", "catalog", catalog)``.

    Each product becomes a ``schema:Product`` with ``schema:productID``, ``schema:name``
    (title), ``schema:description``, ``schema:image`` (an xsd:anyURI literal, so local paths
    with spaces stay valid), ``pkg:domain``, ``schema:category`` (the SKOS concept of the
    asserted label in ``scheme``) and its attributes: brand, color, material, size, pattern,
    sku, gtin and mpn with their own schema.org property, manufacturer as a
    ``schema:Organization``, country_of_origin as a ``schema:Country``, volume/weight as a
    ``schema:QuantitativeValue`` (value, unitCode, unitText), others as
    ``schema:additionalProperty`` / ``schema:PropertyValue``. Missing cells (None, NaN, "")
    write nothing. With ``content_hash`` each product also gets ``pkg:contentHash``: the
    SHA-256 of its other quads as sorted N-Triples, which incremental runs compare.

    Args:
        products: one row per product; columns ``product_id`` and ``title`` are required,
            ``description``, ``image``, ``domain``, ``category`` and the ``attributes`` optional.
        catalog: catalog name, part of every product IRI.
        attributes: names of the attribute columns to write.
        scheme: taxonomy scheme the ``category`` labels belong to.

    Raises:
        StageError: a missing column, a bad or duplicate ``product_id``, a bad cell.
    """
    _label(catalog, "catalog_quads(catalog=...)")
    _label(scheme, "catalog_quads(scheme=...)")
    if isinstance(attributes, str):
        raise StageError(f"catalog_quads(attributes=...): expected a list of column names, got the str {attributes!r}")
    attributes = list(attributes)
    frame = _require_columns(products, ["product_id", "title", *attributes], "products")
    if len(set(attributes)) != len(attributes):
        raise StageError(f"catalog_quads(attributes=...): duplicate names in {attributes}")
    reserved = sorted(set(attributes) & set(_PRODUCT_COLUMNS))
    if reserved:
        raise StageError(f"catalog_quads(attributes=...): {reserved} are product columns, not attributes")

    g = catalog_graph(catalog, base=base)
    columns = {c: (frame[c].tolist() if c in frame.columns else [None] * len(frame)) for c in _PRODUCT_COLUMNS}
    attribute_values = [frame[a].tolist() for a in attributes]
    quads: list[Quad] = []
    seen: set[str] = set()
    concepts: dict[str, URIRef] = {}
    # closed-namespace lookups cost a Python call each; this loop runs once per product
    rdf_type, product_class, product_id, category_ = RDF.type, SDO.Product, SDO.productID, SDO.category
    image_, any_uri = SDO.image, XSD.anyURI
    texts = (("title", SDO.name), ("description", SDO.description), ("domain", PKG.domain))
    for i in range(len(frame)):
        start = len(quads)
        pid = _identifier(columns["product_id"][i], f"products row {i} product_id")
        if pid in seen:
            raise StageError(f"products: duplicate product_id {pid!r} (row {i}); ids must be unique per catalog")
        seen.add(pid)
        p = mint("product", catalog, pid, base=base)
        quads.append((p, rdf_type, product_class, g))
        quads.append((p, product_id, Literal(pid), g))
        for column, prop in texts:
            text = _text(columns[column][i], f"products row {i} {column}")
            if text is not None:
                quads.append((p, prop, Literal(text), g))
        image = _text(columns["image"][i], f"products row {i} image")
        if image is not None:
            quads.append((p, image_, Literal(image, datatype=any_uri), g))
        category = _text(columns["category"][i], f"products row {i} category")
        if category is not None:
            if category not in concepts:
                concepts[category] = mint("concept", scheme, category, base=base)
            quads.append((p, category_, concepts[category], g))
        for name, values in zip(attributes, attribute_values, strict=False):
            value = _text(values[i], f"products row {i} attribute {name!r}")
            if value is not None:
                quads.extend(_attribute_quads(p, name, value, (catalog, pid, name), g, base))
        if content_hash:
            quads.append((p, PKG.contentHash, Literal(_content_hash(quads, start)), g))
    return quads


def _content_hash(quads: list[Quad], start: int) -> str:
    lines = sorted({f"{term_to_nt(s)} {term_to_nt(p)} {term_to_nt(o)}" for s, p, o, _ in quads[start:]})
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def taxonomy_quads(
    scheme: str,
    concepts: Iterable[tuple[str, str | None] | tuple[str, str | None, str]],
    *,
    base: str = DEFAULT_BASE,
) -> list[Quad]:
    """Quads of a SKOS concept scheme, in the graph ``mint("graph", "taxonomy", scheme)``.

    Writes the ``skos:ConceptScheme`` and, per concept, ``skos:Concept``, ``skos:prefLabel``,
    ``skos:inScheme`` and either ``skos:broader`` / ``skos:narrower`` to its parent or
    ``skos:topConceptOf`` / ``skos:hasTopConcept``. A concept listed with several parents gets
    several broader concepts (SKOS allows polyhierarchy); repeating a pair is harmless.

    Args:
        scheme: scheme name, e.g. ``"office-caltech-10"``.
        concepts: ``(label, parent_label_or_None)`` pairs, flat or multi-level; the label
            identifies the concept (its IRI is ``mint("concept", scheme, label)``). Where labels
            repeat across the tree (Best Buy has "Latin" under "Latin"), give
            ``(key, parent_key_or_None, label)`` triples instead: the key identifies the
            concept and is what category predictions must name, the label is its prefLabel.

    Raises:
        StageError: an empty key, a parent that is not itself listed, a concept that is both a
            top concept and a child, one key with two labels, or a cycle of broader links.
    """
    _label(scheme, "taxonomy_quads(scheme=...)")
    parents: dict[str, list[str | None]] = {}
    labels: dict[str, str] = {}
    for n, entry in enumerate(concepts):
        if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
            raise StageError(
                f"taxonomy concept {n}: expected (label, parent_or_None) or (key, parent_or_None, label), got {entry!r}"
            )
        key = _label(entry[0], f"taxonomy concept {n} key")
        parent = None if _missing(entry[1]) else _label(entry[1], f"taxonomy concept {n} ({key!r}) parent")
        label = _label(entry[2], f"taxonomy concept {n} ({key!r}) label") if len(entry) == 3 else key
        if labels.setdefault(key, label) != label:
            raise StageError(f"taxonomy concept {key!r} has two labels: {labels[key]!r} and {label!r}")
        if parent == key:
            raise StageError(f"taxonomy concept {key!r} is its own parent")
        known = parents.setdefault(key, [])
        if parent not in known:
            known.append(parent)
    if not parents:
        raise StageError(f"taxonomy {scheme!r}: no concepts given")
    for key, known in parents.items():
        if None in known and len(known) > 1:
            others = [p for p in known if p is not None]
            raise StageError(f"taxonomy concept {key!r} is listed both as a top concept and under {others}")
        undeclared = [p for p in known if p is not None and p not in parents]
        if undeclared:
            raise StageError(f"taxonomy concept {key!r} has parent(s) {undeclared} that are not listed as concepts")
    _check_acyclic(parents)

    g = taxonomy_graph(scheme, base=base)
    s = mint("scheme", scheme, base=base)
    iri = {key: mint("concept", scheme, key, base=base) for key in parents}
    quads: list[Quad] = [(s, RDF.type, SKOS.ConceptScheme, g), (s, SKOS.prefLabel, Literal(scheme), g)]
    for key, known in parents.items():
        c = iri[key]
        quads.append((c, RDF.type, SKOS.Concept, g))
        quads.append((c, SKOS.prefLabel, Literal(labels[key]), g))
        quads.append((c, SKOS.inScheme, s, g))
        for parent in known:
            if parent is None:
                quads += [(c, SKOS.topConceptOf, s, g), (s, SKOS.hasTopConcept, c, g)]
            else:
                quads += [(c, SKOS.broader, iri[parent], g), (iri[parent], SKOS.narrower, c, g)]
    return quads


def alt_label_quads(
    scheme: str,
    concepts: Iterable[tuple[str, str | None] | tuple[str, str | None, str]],
    *,
    base: str = DEFAULT_BASE,
) -> list[Quad]:
    """``skos:altLabel`` spellings of each concept's label that search users type.

    Dataset labels join words with hyphens or underscores ("Golden-Delicious"); the spaced
    form ("Golden Delicious") becomes an alternative label in the taxonomy graph.
    Entries are those given to :func:`taxonomy_quads`.
    """
    g = taxonomy_graph(scheme, base=base)
    quads: list[Quad] = []
    seen: set[str] = set()
    for entry in concepts:
        key = entry[0]
        label = entry[2] if len(entry) == 3 else key
        if key in seen or not isinstance(label, str):
            continue
        seen.add(key)
        spaced = " ".join(label.replace("_", " ").replace("-", " ").split())
        if spaced and spaced != label:
            quads.append((mint("concept", scheme, key, base=base), SKOS.altLabel, Literal(spaced), g))
    return quads


def _check_acyclic(parents: Mapping[str, list[str | None]]) -> None:
    done: set[str] = set()
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        # iterative DFS: taxonomies such as Best Buy's are deep enough to make recursion fragile
        while stack:
            node, i = stack.pop()
            if i == 0:
                if node in done:
                    continue
                path.append(node)
                on_path.add(node)
            ups = [p for p in parents[node] if p is not None]
            if i < len(ups):
                stack.append((node, i + 1))
                nxt = ups[i]
                if nxt in on_path:
                    cycle = [*path[path.index(nxt):], nxt]
                    raise StageError(f"taxonomy has a cycle of broader links: {' -> '.join(cycle)}")
                if nxt not in done:
                    stack.append((nxt, 0))
            else:
                path.pop()
                on_path.discard(node)
                done.add(node)


def _run_id(run: RunInfo | str) -> str:
    if isinstance(run, RunInfo):
        return run.run_id
    return _label(run, "run (RunInfo or run id)")


def _run_node_quads(run_id: str, g: URIRef, base: str) -> list[Quad]:
    r = mint("run", run_id, base=base)
    return [(r, RDF.type, PKG.Run, g), (r, RDF.type, PROV.Activity, g), (r, PKG.runId, Literal(run_id), g)]


def _model_node_quads(model_id: str, g: URIRef, base: str) -> list[Quad]:
    m = mint("model", model_id, base=base)
    return [
        (m, RDF.type, PKG.Model, g),
        (m, RDF.type, PROV.SoftwareAgent, g),
        (m, RDF.type, PROV.Entity, g),
        (m, PKG.modelId, Literal(model_id), g),
    ]


def run_quads(run: RunInfo, *, base: str = DEFAULT_BASE) -> list[Quad]:
    """PROV-O provenance of a run, in the graph ``mint("graph", "run", run_id)``.

    The run is a ``prov:Activity`` and ``pkg:Run`` with start/end times (xsd:dateTime, UTC),
    catalog, adaptation method, source/target domains and config hash. Each model is a
    ``prov:SoftwareAgent`` (and ``prov:Entity``) that the run ``prov:used`` and
    ``prov:wasAssociatedWith``, with its name, kind and details (an rdf:JSON literal).
    """
    if not isinstance(run, RunInfo):
        raise StageError(f"run_quads: expected RunInfo, got {type(run).__name__}")
    g = run_graph(run.run_id, base=base)
    r = mint("run", run.run_id, base=base)
    quads = _run_node_quads(run.run_id, g, base)
    quads.append((r, PROV.startedAtTime, datetime_literal(run.started), g))
    if run.ended is not None:
        quads.append((r, PROV.endedAtTime, datetime_literal(run.ended), g))
    quads.append((r, PKG.catalog, Literal(run.catalog), g))
    quads.append((r, PKG.method, Literal(run.method), g))
    quads += [(r, PKG.sourceDomain, Literal(d), g) for d in run.source_domains]
    quads += [(r, PKG.targetDomain, Literal(d), g) for d in run.target_domains]
    if run.config_hash:
        quads.append((r, PKG.configHash, Literal(run.config_hash), g))
    described: set[str] = set()
    for model in run.models:
        if model.model_id in described:  # RunInfo allows an identical model listed twice
            continue
        described.add(model.model_id)
        m = mint("model", model.model_id, base=base)
        quads += _model_node_quads(model.model_id, g, base)
        quads.append((m, SDO.name, Literal(model.name), g))
        quads.append((m, PKG.modelKind, Literal(model.kind), g))
        if model.details:
            try:
                details = json.dumps(dict(model.details), sort_keys=True, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise StageError(f"ModelInfo {model.model_id!r} details are not JSON-serialisable: {exc}") from None
            quads.append((m, PKG.details, Literal(details, datatype=RDF.JSON), g))
        quads.append((r, PROV.used, m, g))
        quads.append((r, PROV.wasAssociatedWith, m, g))
    return quads


def prediction_quads(
    predictions: pd.DataFrame,
    run: RunInfo | str,
    *,
    catalog: str,
    scheme: str,
    threshold: float | None = 0.5,
    base: str = DEFAULT_BASE,
    min_precision: float | None = None,
) -> list[Quad]:
    """Quads of a run's predictions, in the graph ``mint("graph", "run", run_id)``.

    Every row becomes a ``pkg:Prediction`` (subject, task, predicate, object, confidence as
    xsd:double, model, ``prov:wasGeneratedBy`` the run). A prediction whose confidence is at
    least ``threshold`` also writes the plain fact in the run graph: ``schema:category`` to
    the SKOS concept for the category task, the attribute as :func:`catalog_quads` writes it
    otherwise. Below the threshold it stays a candidate only. The run records the threshold
    as ``pkg:threshold``.

    Args:
        predictions: columns ``product_id``, ``task`` ("category" or an attribute name),
            ``value`` (label), ``confidence`` (float in [0, 1]), ``model`` (model id); at most
            one row per (product_id, task).
        run: the run (or its id) that made the predictions.
        catalog: catalog the products belong to (part of product IRIs).
        scheme: taxonomy scheme of the category labels.
        threshold: confidence in [0, 1] at or above which a prediction becomes a fact; None when the
            frame's ``published`` column decides (then no ``pkg:threshold`` is written).
        min_precision: the precision target the run chose its thresholds for, written as ``pkg:minPrecision``.

    Optional columns (a run with taxonomy back-off and unknown products writes them):

    * ``published`` (bool): whether the row becomes a plain fact, instead of ``confidence >= threshold``;
      every such prediction also gets ``pkg:published``.
    * ``level`` (int or missing): the taxonomy depth of a category prediction (``pkg:level``); one product
      can then have one category prediction per level.
    * ``kind`` (``"class"`` or ``"unknown"``): an unknown prediction says the product fits no concept; its
      object is ``pkg:OutOfTaxonomy``, its confidence the unknown score, and it is never a fact.

    Raises:
        StageError: a missing column, a bad cell, a confidence outside [0, 1] or a repeated
            (product_id, task) pair.
    """
    run_id = _run_id(run)
    _label(catalog, "prediction_quads(catalog=...)")
    _label(scheme, "prediction_quads(scheme=...)")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0):
        raise StageError(f"prediction_quads(threshold=...): expected a number in [0, 1], got {threshold!r}")
    if min_precision is not None and (isinstance(min_precision, bool) or not isinstance(min_precision, numbers.Real)
                                      or not 0.0 < float(min_precision) <= 1.0):
        raise StageError(f"prediction_quads(min_precision=...): expected a number in (0, 1], got {min_precision!r}")
    frame = _require_columns(predictions, _PREDICTION_COLUMNS, "predictions")
    if threshold is None and "published" not in frame.columns:
        raise StageError("prediction_quads: give a threshold or a 'published' column")
    n_rows = len(frame)
    published_col = frame["published"].tolist() if "published" in frame.columns else [None] * n_rows
    level_col = frame["level"].tolist() if "level" in frame.columns else [None] * n_rows
    kind_col = frame["kind"].tolist() if "kind" in frame.columns else [None] * n_rows

    g = run_graph(run_id, base=base)
    r = mint("run", run_id, base=base)
    quads = _run_node_quads(run_id, g, base)
    if threshold is not None:
        quads.append((r, PKG.threshold, double_literal(threshold), g))
    if min_precision is not None:
        quads.append((r, PKG.minPrecision, double_literal(min_precision), g))
    generated_at = None
    if isinstance(run, RunInfo):
        generated_at = datetime_literal(run.ended or run.started)
    models: dict[str, URIRef] = {}
    seen: set[tuple] = set()
    cols = [frame[c].tolist() for c in _PREDICTION_COLUMNS]
    # closed-namespace lookups cost a Python call each; this loop runs once per prediction
    rdf_type, category, prediction_class = RDF.type, SDO.category, PKG.Prediction
    subject_, task_, predicate_, object_ = PKG.subject, PKG.task, PKG.predicate, PKG.object
    confidence_, model_, generated_by = PKG.confidence, PKG.model, PROV.wasGeneratedBy
    for i, (pid_cell, task_cell, value_cell, conf_cell, model_cell) in enumerate(zip(*cols, strict=False)):
        where = f"predictions row {i}"
        pid = _identifier(pid_cell, f"{where} product_id")
        task = _label(task_cell, f"{where} task")
        value = _text(value_cell, f"{where} value")
        if value is None and kind_col[i] != "unknown":
            raise StageError(f"{where} value: expected a non-empty label, got {value_cell!r}")
        if isinstance(conf_cell, bool) or not isinstance(conf_cell, numbers.Real):
            got = f"{type(conf_cell).__name__} {conf_cell!r}"
            raise StageError(f"{where} confidence: expected a float in [0, 1], got {got}")
        confidence = float(conf_cell)
        if not 0.0 <= confidence <= 1.0:  # also rejects NaN
            raise StageError(f"{where} confidence: expected a float in [0, 1], got {confidence!r}")
        model_id = _label(model_cell, f"{where} model")
        kind = "class" if _missing(kind_cell := kind_col[i]) else kind_cell
        if kind not in ("class", "unknown"):
            raise StageError(f"{where} kind: expected 'class' or 'unknown', got {kind_cell!r}")
        level = None if _missing(level_col[i]) else level_col[i]
        if level is not None and (isinstance(level, bool) or not isinstance(level, numbers.Integral | float) or int(level) != level or level < 0):
            raise StageError(f"{where} level: expected an integer >= 0, got {level!r}")
        level = None if level is None else int(level)
        if (pid, task, level, kind) in seen:
            what = f" at level {level}" if level is not None else ""
            kind_word = "unknown " if kind == "unknown" else ""
            raise StageError(f"{where}: second {kind_word}prediction for product {pid!r} and task {task!r}{what} in run {run_id!r}")
        seen.add((pid, task, level, kind))
        flag = published_col[i]
        if flag is not None and not isinstance(flag, bool | np.bool_):
            raise StageError(f"{where} published: expected true or false, got {flag!r}")
        publish = bool(flag) if flag is not None else confidence >= threshold
        if kind == "unknown" and publish:
            raise StageError(f"{where}: an unknown prediction cannot be published")
        if model_id not in models:
            models[model_id] = mint("model", model_id, base=base)
            quads += _model_node_quads(model_id, g, base)

        product = mint("product", catalog, pid, base=base)
        variant = "unknown" if kind == "unknown" else f"level-{level}" if level is not None else None
        pred = mint("prediction", run_id, pid, task, *([variant] if variant else []), base=base)
        obj: Node
        if kind == "unknown":
            prop = category if task == CATEGORY_TASK else _mint_repeating("attribute", task, base=base)
            obj = PKG.OutOfTaxonomy
        elif task == CATEGORY_TASK:
            prop = category
            obj = _mint_repeating("concept", scheme, value, base=base)
        else:
            direct = DIRECT_ATTRIBUTES.get(task.strip().lower())
            prop = direct if direct is not None else _mint_repeating("attribute", task, base=base)
            node_kind = _NODE_KINDS.get(direct)
            if node_kind is not None:
                obj = _mint_repeating(node_kind[0], value, base=base)
                quads += [(obj, rdf_type, node_kind[1], g), (obj, SDO.name, Literal(value), g)]
            else:
                obj = Literal(value)
        quads += [
            (pred, rdf_type, prediction_class, g),
            (pred, subject_, product, g),
            (pred, task_, Literal(task), g),
            (pred, predicate_, prop, g),
            (pred, object_, obj, g),
            (pred, confidence_, double_literal(confidence), g),
            (pred, model_, models[model_id], g),
            (pred, generated_by, r, g),
        ]
        if generated_at is not None:
            quads.append((pred, PROV.generatedAtTime, generated_at, g))
        if kind == "unknown":
            quads.append((pred, PKG.kind, Literal("unknown"), g))
        if level is not None:
            quads.append((pred, PKG.level, Literal(level, datatype=XSD.integer), g))
        if flag is not None:
            quads.append((pred, PKG.published, Literal(publish), g))
        if publish:
            if task == CATEGORY_TASK:
                quads.append((product, category, obj, g))
            else:
                quads += _attribute_quads(product, task, value, (catalog, pid, task, run_id), g, base)
    return quads

