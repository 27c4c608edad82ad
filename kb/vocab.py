"""Closed vocabularies of the graph: the schema.org, SKOS, PROV-O, XSD and prodkg terms prodkg writes."""

from __future__ import annotations

from rdflib.namespace import PROV, RDF, RDFS, SKOS, DefinedNamespace, Namespace
from rdflib.term import URIRef

__all__ = ["PKG", "PKG_NAMESPACE", "PREFIXES", "compact", "PROV", "RDF", "RDFS", "SDO", "SKOS", "XSD"]

#: Namespace of prodkg's own terms. It is fixed, unlike the base of minted instance IRIs
#: (:data:`kb.iri.DEFAULT_BASE`), so that graphs built under different bases share one vocabulary.
PKG_NAMESPACE = "https://example.org/prodkg/vocab#"


class SDO(DefinedNamespace):
    """The schema.org terms prodkg uses (https://schema.org/).

    Closed on purpose: ``SDO.nmae`` raises AttributeError instead of minting a new IRI.
    Add a term here before using it anywhere else.
    """

    _fail = True
    _NS = Namespace("https://schema.org/")

    # classes
    Brand: URIRef
    Country: URIRef
    Organization: URIRef
    Product: URIRef
    PropertyValue: URIRef
    QuantitativeValue: URIRef

    # product properties
    additionalProperty: URIRef
    brand: URIRef
    category: URIRef
    color: URIRef
    countryOfOrigin: URIRef
    description: URIRef
    gtin: URIRef
    identifier: URIRef
    image: URIRef
    manufacturer: URIRef
    material: URIRef
    mpn: URIRef
    name: URIRef
    pattern: URIRef
    productID: URIRef
    size: URIRef
    sku: URIRef
    url: URIRef
    weight: URIRef  # a QuantitativeValue: net weight of a product sold by mass (e.g. 1 kg yoghurt)

    # PropertyValue / QuantitativeValue properties
    propertyID: URIRef
    unitCode: URIRef
    unitText: URIRef
    value: URIRef


class PKG(DefinedNamespace):
    """prodkg's own terms, for what schema.org, SKOS and PROV-O do not say.

    A ``pkg:Prediction`` reifies one model output: ``pkg:subject`` (the product), ``pkg:task``
    (``"category"`` or an attribute name), ``pkg:predicate`` (the property the prediction
    would assert, e.g. ``schema:category``), ``pkg:object`` (a SKOS concept, brand node or
    literal value), ``pkg:confidence`` and ``pkg:model``; it is ``prov:wasGeneratedBy`` a
    ``pkg:Run``. Closed like :class:`SDO`.
    """

    _fail = True
    _NS = Namespace(PKG_NAMESPACE)

    # classes
    Model: URIRef  # a pretrained encoder, adapter or head; also a prov:SoftwareAgent
    Prediction: URIRef  # one model output about one product and one task
    OutOfTaxonomy: URIRef  # the object of an "unknown" prediction: the product is unlike every source category
    Run: URIRef  # one pipeline run; also a prov:Activity

    # prediction properties
    confidence: URIRef  # xsd:double in [0, 1]
    model: URIRef  # the pkg:Model that produced the prediction
    object: URIRef  # the predicted value: concept, brand node or literal
    predicate: URIRef  # the property the prediction asserts when accepted
    subject: URIRef  # the product the prediction is about
    task: URIRef  # "category" or the attribute name, as a literal
    kind: URIRef  # "class" (a concept or value) or "unknown" (no concept fits; pkg:confidence is then the unknown score)
    level: URIRef  # xsd:integer taxonomy depth of the predicted concept (0 = a root); on back-off predictions
    published: URIRef  # xsd:boolean: the prediction cleared the run's bar and is also written as a plain fact

    # product properties
    contentHash: URIRef  # sha256 of the product's asserted facts; what incremental runs compare
    domain: URIRef  # the catalog domain a product comes from (e.g. "amazon", "webcam")
    volume: URIRef  # a schema:QuantitativeValue: content volume (schema.org has none for products)

    # change records: what one run added, changed or removed compared with the graph before it
    Change: URIRef
    changeType: URIRef  # "added", "changed" or "removed"
    changedProduct: URIRef  # the product IRI (a removed one is no longer described)
    productId: URIRef  # the product id, kept on the change so removed products stay nameable

    # curation: a reviewer's decision about a product, in the curation graph (prov:wasAttributedTo the person)
    Decision: URIRef
    verdict: URIRef  # "accept" (the prediction), "relabel" (another category) or "outside" (not in the taxonomy)
    outsideTaxonomy: URIRef  # xsd:boolean on a product a reviewer marked as belonging to no concept of the taxonomy

    # run properties
    catalog: URIRef
    configHash: URIRef
    inputDigest: URIRef  # sha256 of everything the graph was built from; an equal digest means an unchanged graph
    method: URIRef  # the domain-adaptation method (e.g. "dann")
    runId: URIRef
    sourceDomain: URIRef
    targetDomain: URIRef
    threshold: URIRef  # confidence at or above which a prediction became a plain fact (a fixed-threshold run)
    minPrecision: URIRef  # the precision target the run's thresholds were chosen for (a min-precision run)

    # model properties
    details: URIRef  # model settings as an rdf:JSON literal
    modelId: URIRef
    modelKind: URIRef  # "image-encoder", "text-encoder", "adapter", "head", ...


class XSD(DefinedNamespace):
    """The XML Schema datatypes prodkg writes (rdflib's own XSD namespace is open)."""

    _fail = True
    _NS = Namespace("http://www.w3.org/2001/XMLSchema#")

    anyURI: URIRef
    boolean: URIRef
    dateTime: URIRef
    decimal: URIRef
    double: URIRef
    integer: URIRef
    string: URIRef


#: Prefixes used in serialisations and offered to ad-hoc SPARQL queries.
PREFIXES: dict[str, str] = {
    "schema": str(SDO._NS),
    "skos": str(SKOS._NS),
    "prov": str(PROV._NS),
    "pkg": PKG_NAMESPACE,
    "rdf": str(RDF._NS),
    "rdfs": str(RDFS._NS),
    "xsd": str(XSD._NS),
}

_BY_LENGTH = sorted(PREFIXES.items(), key=lambda item: -len(item[1]))


def compact(iri: str) -> str:
    """``schema:name`` for ``https://schema.org/name``; other IRIs unchanged (the longest namespace wins)."""
    for prefix, namespace in _BY_LENGTH:
        if iri.startswith(namespace) and len(iri) > len(namespace):
            return f"{prefix}:{iri[len(namespace):]}"
    return iri
