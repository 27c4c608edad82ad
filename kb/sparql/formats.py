"""Content negotiation of the SPARQL 1.1 Protocol: which media types each query form is answered in."""

from __future__ import annotations

#: SELECT and ASK results: media type -> rdflib result serialiser
RESULT_FORMATS = {
    "application/sparql-results+json": "json",
    "application/json": "json",
    "text/json": "json",
    "application/sparql-results+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/sparql-results+csv": "csv",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",  # SPARQL 1.1 Query Results TSV (terms in their Turtle/N-Triples form)
}
#: HTTP status of a result over --max-rows: a valid query whose answer is too large (not a malformed one, 400)
ROW_CAP_STATUS = 422
#: CONSTRUCT and DESCRIBE results: media type -> rdflib graph serialiser
GRAPH_FORMATS = {
    "application/rdf+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/ld+json": "json-ld",
    "application/json": "json-ld",
    "text/json": "json-ld",
    "text/turtle": "ttl",
    "text/n3": "n3",
    "application/n-triples": "nt",
    "text/plain": "nt",
    "application/trig": "trig",
    "application/trix": "trix",
    "application/n-quads": "nquads",
    "text/csv": "ttl",
}
DEFAULT_RESULT_TYPE = "application/sparql-results+xml"
DEFAULT_GRAPH_TYPE = "application/rdf+xml"


def parse_accept(accept: str) -> list[str]:
    """Media types of an Accept header, most preferred first (ties keep their order)."""
    ranked = []
    for position, item in enumerate(accept.split(",")[:64]):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            continue
        q = 1.0
        for part in parts[1:]:
            if part.startswith("q="):
                try:
                    q = float(part[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, position, parts[0].lower()))
    return [media for _, _, media in sorted(ranked)]


def negotiate(accept: str | None, graph: bool) -> tuple[str, str]:
    """(media type, rdflib format) for a query's results; unknown or missing Accept gets the default."""
    table = GRAPH_FORMATS if graph else RESULT_FORMATS
    default = DEFAULT_GRAPH_TYPE if graph else DEFAULT_RESULT_TYPE
    for media in parse_accept(accept or ""):
        if media in table:
            return media, table[media]
    return default, table[default]


def tsv_results(names: list[str], rows: list[dict]) -> bytes:
    """SELECT results as SPARQL 1.1 TSV: a header of ``?var`` names, then one line per solution, each term in
    N-Triples form (IRIs in ``<>``, literals quoted with their language or datatype), an unbound one empty."""
    from rdflib.plugins.serializers.nt import _quoteLiteral
    from rdflib.term import BNode, Literal, URIRef, Variable

    def term(value) -> str:
        if value is None:
            return ""
        if isinstance(value, URIRef):
            return f"<{value}>"
        if isinstance(value, BNode):
            return f"_:{value}"
        if isinstance(value, Literal):
            return _quoteLiteral(value).replace("\t", "\\t")
        return str(value)

    lines = ["\t".join(f"?{n}" for n in names)]
    lines += ["\t".join(term(row.get(Variable(n))) for n in names) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")
