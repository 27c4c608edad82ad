"""N-Quads bytes of the catalog and prediction quads built straight from the stage frames, column by column.

:func:`catalog_nquads` and :func:`prediction_nquads` write the same statements as
:func:`prodkg.kb.triples.catalog_quads` and :func:`prodkg.kb.triples.prediction_quads` (the graph
is isomorphic: the same IRIs and literals, an xsd:double written in the form Oxigraph stores it
in), without making an rdflib term per statement: IRIs are minted and literals escaped once per
column with Arrow string kernels (only values that need percent-encoding or escaping go through
Python), and the lines of each statement kind are taken straight from the Arrow buffers as
N-Quads text that Oxigraph's loader parses in Rust.

A frame the column-wise path cannot take as it is (a cell of an unexpected type, a missing
identifier, a repeated id, an out-of-range confidence, ids that are numbers) is handed to the
rdflib builders, which either raise the error they always raised or build it cell by cell;
so both paths accept and refuse the same frames. Catalog attributes (a few columns, each
with its own schema.org mapping) and predictions of attribute tasks are built by the rdflib
builders too, per cell, and serialised into the same bytes.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rdflib.term import Literal, URIRef

from prodkg.kb.curation import without_predicted_categories
from prodkg.kb.iri import _DOTS_ONLY, DEFAULT_BASE, _check_base, _encode, mint
from prodkg.kb.nquads import _ESCAPES, encode_quads, term_to_nt
from prodkg.kb.triples import (
    _PRODUCT_COLUMNS,
    CATEGORY_TASK,
    RunInfo,
    _attribute_quads,
    _model_node_quads,
    _run_id,
    _run_node_quads,
    catalog_graph,
    catalog_quads,
    datetime_literal,
    double_literal,
    double_text,
    prediction_quads,
    run_graph,
)
from prodkg.kb.vocab import PKG, PROV, RDF, SDO, XSD

__all__ = ["FrameQuads", "catalog_nquads", "prediction_nquads"]

#: rows per N-Quads chunk: large enough that pandas' per-call overhead vanishes, small enough
#: that one chunk's intermediate columns stay a few tens of megabytes
CHUNK_ROWS = 65_536

_SAFE_PART = r"^[A-Za-z0-9_.~\-]+$"  # what quote(safe="") leaves as it is
_NEEDS_ESCAPE = r'[\x00-\x1f\x7f"\\]'
_EMPTY = pa.scalar("", pa.large_string())


@dataclass
class FrameQuads:
    """N-Quads of one frame, as UTF-8 chunks a loader reads in turn.

    ``count`` is the number of statements (lines) written; ``hashes`` (catalog with
    ``content_hash=True``) maps each product IRI to ``(product id, content hash)`` as
    :func:`prodkg.kb.incremental.product_hashes` reads them from the quads; ``fallback`` says
    whether the rdflib builders made them instead of the column-wise path.
    """

    chunks: list[bytes] = field(default_factory=list)
    count: int = 0
    hashes: dict[URIRef, tuple[str, str]] | None = None
    fallback: bool = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    def add_terms(self, quads: list[tuple]) -> None:
        """Append quads of rdflib terms, serialised as :func:`prodkg.kb.nquads.encode_quads` does."""
        counter = [0]
        self.chunks.extend(encode_quads(quads, counter, batch=1 << 16))
        self.count += counter[0]


class _Refused(Exception):
    """The frame needs the rdflib builders (to raise their error, or to read odd cells)."""


# ----------------------------------------------------------------------------- column helpers


_nt = term_to_nt


@lru_cache(maxsize=65536)
def _part(value: str) -> str:
    """One IRI part encoded by :func:`prodkg.kb.iri.mint`'s own encoder."""
    try:
        return _encode("part", 0, value)
    except ValueError:  # a lone surrogate: mint refuses it with its own error
        raise _Refused from None


def _arrow(values: pd.Series | list) -> pa.Array:
    """A str column (no missing) as an Arrow large_string array; refused when UTF-8 cannot carry it."""
    try:
        arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate: the rdflib path raises its own error
        raise _Refused from None
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _replace_where(arr: pa.Array, mask: pa.Array, fix) -> pa.Array:
    """``arr`` with each value where ``mask`` is true replaced by ``fix(value)`` (done in Python: such values are rare)."""
    rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    if len(rows) == 0:
        return arr
    fixed = [fix(v) for v in arr.take(pa.array(rows)).to_pylist()]
    return pc.replace_with_mask(arr, mask, pa.array(fixed, type=pa.large_string()))


def _parts(arr: pa.Array) -> pa.Array:
    """Each value of a str column (no missing, no empty) percent-encoded as mint encodes a part."""
    odd = pc.or_(pc.invert(pc.match_substring_regex(arr, _SAFE_PART)), pc.match_substring_regex(arr, _DOTS_ONLY.pattern))
    return _replace_where(arr, odd, _part)


def _literals(arr: pa.Array) -> pa.Array:
    """Each str value as an N-Triples plain literal, escaped as :func:`term_to_nt` escapes it."""
    escaped = _replace_where(arr, pc.match_substring_regex(arr, _NEEDS_ESCAPE), lambda v: v.translate(_ESCAPES))
    return _join('"', escaped, '"')


def _join(*pieces) -> pa.Array:
    """Element-wise concatenation of arrays and str constants."""
    return pc.binary_join_element_wise(*(pa.scalar(x, pa.large_string()) if isinstance(x, str) else x for x in pieces), _EMPTY)


def _text_bytes(lines: list[pa.Array]) -> bytes:
    """The text of arrays of complete lines, concatenated: the Arrow data buffers themselves, without a str per line."""
    views = []
    for arr in lines:
        if len(arr) == 0:
            continue
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
        views.append(memoryview(arr.buffers()[2])[offsets[0]: offsets[-1]])
    return b"".join(views)


def _text_column(frame: pd.DataFrame, column: str, *, required: bool = False) -> tuple[pd.Series, np.ndarray]:
    """(values with "" where missing, present mask) of a column of str cells or missing ones.

    A column of another kind (numbers, mixed cells, NaT) is refused: the rdflib builders read it cell by cell.
    """
    if column not in frame.columns:
        if required:
            raise _Refused
        return pd.Series([""] * len(frame), index=frame.index, dtype=object), np.zeros(len(frame), dtype=bool)
    col = frame[column]
    if isinstance(col.dtype, pd.StringDtype):
        col = col.astype(object)
    elif col.dtype != object:
        if pd.api.types.is_float_dtype(col.dtype) and col.isna().all():
            return pd.Series([""] * len(frame), index=frame.index, dtype=object), np.zeros(len(frame), dtype=bool)
        raise _Refused
    if pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
        raise _Refused
    missing = col.isna().to_numpy()
    if missing.any():
        # only None, NaN and pd.NA count as missing here; NaT and friends go the cell-by-cell way
        kinds = {type(v) for v in col[missing]}
        if not kinds <= {type(None), float, type(pd.NA)}:
            raise _Refused
        col = col.where(~missing, "")
    present = (col != "").to_numpy()
    return col, present


def _identifiers(frame: pd.DataFrame, column: str) -> pd.Series:
    values, present = _text_column(frame, column, required=True)
    if not present.all():
        raise _Refused
    return values


# ----------------------------------------------------------------------------- catalog


def catalog_nquads(
    products: pd.DataFrame,
    *,
    catalog: str,
    attributes: Sequence[str] = (),
    scheme: str,
    base: str = DEFAULT_BASE,
    content_hash: bool = False,
) -> FrameQuads:
    """The quads of :func:`prodkg.kb.triples.catalog_quads` as N-Quads bytes, built column-wise.

    Same arguments, same errors. With ``content_hash`` the result's ``hashes`` holds each
    product's ``(product id, content hash)``, as ``product_hashes`` reads them from the quads.
    """
    try:
        return _catalog_columnwise(products, catalog=catalog, attributes=attributes, scheme=scheme, base=base, content_hash=content_hash)
    except _Refused:
        pass
    quads = catalog_quads(products, catalog=catalog, attributes=attributes, scheme=scheme, base=base, content_hash=content_hash)
    out = FrameQuads(fallback=True)
    out.add_terms(quads)
    if content_hash:
        from prodkg.kb.incremental import product_hashes

        out.hashes = product_hashes(quads)
    return out


def _catalog_columnwise(products, *, catalog, attributes, scheme, base, content_hash) -> FrameQuads:
    if not isinstance(products, pd.DataFrame) or not isinstance(catalog, str) or not catalog or not isinstance(scheme, str) or not scheme:
        raise _Refused
    if isinstance(attributes, str):
        raise _Refused
    attributes = list(attributes)
    if any(c not in products.columns for c in ["product_id", "title", *attributes]) or len(set(attributes)) != len(attributes):
        raise _Refused
    if set(attributes) & set(_PRODUCT_COLUMNS):
        raise _Refused
    try:
        base = _check_base(base)
    except (TypeError, ValueError):
        raise _Refused from None

    ids = _identifiers(products, "product_id")
    if ids.duplicated().any():
        raise _Refused
    texts = {c: _text_column(products, c) for c in ("title", "description", "domain", "image", "category")}
    attribute_columns = {a: _text_column(products, a) for a in attributes}

    g = _nt(catalog_graph(catalog, base=base))
    tail = f" {g} .\n"
    out = FrameQuads(hashes={} if content_hash else None)
    product_prefix = f"<{base}product/{_part(catalog)}/"
    concept_prefix = f"<{base}concept/{_part(scheme)}/"
    type_p, product_c = _nt(RDF.type), _nt(SDO.Product)
    props = {"title": _nt(SDO.name), "description": _nt(SDO.description), "domain": _nt(PKG.domain)}
    image_p, any_uri, category_p = _nt(SDO.image), _nt(XSD.anyURI), _nt(SDO.category)
    id_p, hash_p = _nt(SDO.productID), _nt(PKG.contentHash)

    for start in range(0, len(products), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        pid = _arrow(ids.iloc[rows])
        p = _join(product_prefix, _parts(pid), ">")
        # (predicate, triple text, present mask or None when every row has it), one per statement a product can have
        triples: list[tuple[str, pa.Array, np.ndarray | None]] = [
            (type_p, _join(p, f" {type_p} {product_c}"), None),
            (id_p, _join(p, f" {id_p} ", _literals(pid)), None),
        ]
        for column in ("title", "description", "domain", "image", "category"):
            values, present = texts[column][0].iloc[rows], texts[column][1][rows]
            if not present.any():
                continue
            values = _arrow(values.where(present, "x"))
            if column == "image":
                triples.append((image_p, _join(p, f" {image_p} ", _literals(values), f"^^{any_uri}"), present))
            elif column == "category":
                triples.append((category_p, _join(p, f" {category_p} ", concept_prefix, _parts(values), ">"), present))
            else:
                triples.append((props[column], _join(p, f" {props[column]} ", _literals(values)), present))

        # attributes keep their schema.org mapping (brands, quantities, property values) in one place: the rdflib builder
        extra: dict[int, list[str]] = {}
        product_iris = pid_list = None  # per chunk, as Python lists: for attributes and content hashes
        if attribute_columns or content_hash:
            product_iris, pid_list = pc.utf8_slice_codeunits(p, 1, -1).to_pylist(), pid.to_pylist()
        if attribute_columns:
            for name, (values, present) in attribute_columns.items():
                vals, pres = values.iloc[rows].tolist(), present[rows]
                for i in np.flatnonzero(pres).tolist():
                    quads = _attribute_quads(URIRef(product_iris[i]), name, vals[i], (catalog, pid_list[i], name), None, base)
                    extra.setdefault(i, []).extend(f"{_nt(s)} {_nt(pp)} {_nt(o)}" for s, pp, o, _ in quads)

        lines = [_join(t, tail) if present is None else _join(t.filter(pa.array(present)), tail) for _, t, present in triples]
        n = sum(len(x) for x in lines)
        if extra:
            text = "".join(f"{t}{tail}" for e in extra.values() for t in e)
            lines.append(pa.array([text], type=pa.large_string()))
            n += sum(len(e) for e in extra.values())
        if content_hash:
            # a product's statements all share its subject, so sorting them is sorting by predicate (one each here);
            # a product with attribute statements is sorted and deduplicated in Python as the rdflib path does
            columns = [t if present is None else pc.if_else(pa.array(present), t, pa.scalar(None, pa.large_string()))
                       for _, t, present in sorted(triples, key=lambda item: item[0])]
            joined = pc.binary_join_element_wise(*columns, pa.scalar("\n", pa.large_string()), null_handling="skip").to_pylist()
            for i, e in extra.items():
                own = [t[i].as_py() for _, t, present in triples if present is None or present[i]]
                joined[i] = "\n".join(sorted(set(own) | set(e)))
            digests = [hashlib.sha256(x.encode("utf-8")).hexdigest() for x in joined]
            digest = pa.array(digests, type=pa.large_string())
            lines.append(_join(p, f" {hash_p} \"", digest, '"', tail))
            n += len(pid)
            out.hashes.update(zip(map(URIRef, product_iris), zip(pid_list, digests, strict=True), strict=True))
        out.chunks.append(_text_bytes(lines))
        out.count += n
    return out


# ----------------------------------------------------------------------------- predictions


def prediction_nquads(
    predictions: pd.DataFrame,
    run: RunInfo | str,
    *,
    catalog: str,
    scheme: str,
    threshold: float | None = 0.5,
    base: str = DEFAULT_BASE,
    min_precision: float | None = None,
    no_category_fact: Sequence[str] = (),
) -> FrameQuads:
    """The quads of :func:`prodkg.kb.triples.prediction_quads` as N-Quads bytes, built column-wise.

    Same arguments, same errors. ``no_category_fact`` lists product ids whose published category
    prediction writes no plain ``schema:category`` fact (a reviewer decided their category), as
    :func:`prodkg.kb.curation.without_predicted_categories` removes them from the rdflib quads.
    """
    try:
        return _predictions_columnwise(predictions, run, catalog=catalog, scheme=scheme, threshold=threshold, base=base,
                                       min_precision=min_precision, no_category_fact=no_category_fact)
    except _Refused:
        pass
    quads = prediction_quads(predictions, run, catalog=catalog, scheme=scheme, threshold=threshold, base=base, min_precision=min_precision)
    if len(no_category_fact):  # every prediction quad is in the run graph, which is all the curation filter asks
        quads = without_predicted_categories(quads, dict.fromkeys(map(str, no_category_fact)), catalog=catalog, base=base)
    out = FrameQuads(fallback=True)
    out.add_terms(quads)
    return out


def _predictions_columnwise(frame, run, *, catalog, scheme, threshold, base, min_precision, no_category_fact) -> FrameQuads:
    if not isinstance(frame, pd.DataFrame) or not isinstance(catalog, str) or not catalog or not isinstance(scheme, str) or not scheme:
        raise _Refused
    if not isinstance(run, RunInfo) and not (isinstance(run, str) and run):
        raise _Refused
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0):
        raise _Refused
    if min_precision is not None and (isinstance(min_precision, bool) or not isinstance(min_precision, numbers.Real)
                                      or not 0.0 < float(min_precision) <= 1.0):
        raise _Refused
    if any(c not in frame.columns for c in ("product_id", "task", "value", "confidence", "model")):
        raise _Refused
    if threshold is None and "published" not in frame.columns:
        raise _Refused
    try:
        base = _check_base(base)
    except (TypeError, ValueError):
        raise _Refused from None
    run_id = _run_id(run)
    n_rows = len(frame)

    pid = _identifiers(frame, "product_id")
    task = _identifiers(frame, "task")
    model = _identifiers(frame, "model")
    value, has_value = _text_column(frame, "value")
    conf_col = frame["confidence"]
    if not pd.api.types.is_numeric_dtype(conf_col.dtype) or pd.api.types.is_bool_dtype(conf_col.dtype):
        raise _Refused
    confidence = conf_col.to_numpy(dtype=float, na_value=np.nan)
    if not ((confidence >= 0.0) & (confidence <= 1.0)).all():  # NaN fails both
        raise _Refused
    if "kind" in frame.columns:
        kind_values, has_kind = _text_column(frame, "kind")
        kind = kind_values.where(has_kind, "class")
        if not kind.isin(("class", "unknown")).all():
            raise _Refused
    else:
        kind = pd.Series(["class"] * n_rows, index=frame.index, dtype=object)
    unknown = (kind == "unknown").to_numpy()
    if not (has_value | unknown).all():
        raise _Refused
    if "level" in frame.columns:
        level_col = frame["level"]
        if pd.api.types.is_bool_dtype(level_col.dtype) or not pd.api.types.is_numeric_dtype(level_col.dtype):
            raise _Refused
        level_f = level_col.to_numpy(dtype=float, na_value=np.nan)
        has_level = ~np.isnan(level_f)
        if not ((level_f[has_level] >= 0) & (np.floor(level_f[has_level]) == level_f[has_level])).all():
            raise _Refused
        level = np.where(has_level, level_f, -1).astype(np.int64)
    else:
        has_level, level = np.zeros(n_rows, dtype=bool), np.full(n_rows, -1, dtype=np.int64)
    keys = pd.DataFrame({"p": pid.to_numpy(), "t": task.to_numpy(), "l": level, "k": kind.to_numpy()})
    if keys.duplicated().any():
        raise _Refused
    if "published" in frame.columns:
        if not pd.api.types.is_bool_dtype(frame["published"].dtype) or frame["published"].isna().any():
            raise _Refused
        publish = frame["published"].to_numpy(dtype=bool)
        has_flag = True
    else:
        publish = confidence >= float(threshold)
        has_flag = False
    if (publish & unknown).any():
        raise _Refused
    category_rows = (task == CATEGORY_TASK).to_numpy()

    out = FrameQuads()
    g_iri = run_graph(run_id, base=base)
    r = mint("run", run_id, base=base)
    header = _run_node_quads(run_id, g_iri, base)
    if threshold is not None:
        header.append((r, PKG.threshold, double_literal(threshold), g_iri))
    if min_precision is not None:
        header.append((r, PKG.minPrecision, double_literal(min_precision), g_iri))
    models = list(dict.fromkeys(model.tolist()))
    for model_id in models:
        header += _model_node_quads(model_id, g_iri, base)
    out.add_terms(header)

    if not category_rows.all():
        # attribute tasks: their facts follow the attribute's schema.org mapping, which the rdflib builder owns
        others = frame.loc[~category_rows]
        out.add_terms(prediction_quads(others, run, catalog=catalog, scheme=scheme, threshold=threshold, base=base,
                                       min_precision=min_precision))

    g = _nt(g_iri)
    tail = f" {g} .\n"
    run_t = _nt(r)
    product_prefix = f"<{base}product/{_part(catalog)}/"
    concept_prefix = f"<{base}concept/{_part(scheme)}/"
    prediction_prefix = f"<{base}prediction/{_part(run_id)}/"
    model_text = {m: _nt(mint("model", m, base=base)) for m in models}
    generated = f" {_nt(PROV.generatedAtTime)} {_nt(datetime_literal(run.ended or run.started))}" if isinstance(run, RunInfo) else None
    c = {name: _nt(term) for name, term in (
        ("type", RDF.type), ("Prediction", PKG.Prediction), ("subject", PKG.subject), ("task", PKG.task),
        ("predicate", PKG.predicate), ("object", PKG.object), ("confidence", PKG.confidence), ("model", PKG.model),
        ("by", PROV.wasGeneratedBy), ("kind", PKG.kind), ("level", PKG.level), ("published", PKG.published),
        ("category", SDO.category), ("out", PKG.OutOfTaxonomy))}
    decided = set(map(str, no_category_fact))

    rows_all = np.flatnonzero(category_rows)
    model_index = {m: i for i, m in enumerate(models)}
    model_texts = pa.array([model_text[m] for m in models], type=pa.large_string())
    task_literal = _nt(Literal(CATEGORY_TASK))
    double_t = _nt(XSD.double)
    for start in range(0, len(rows_all), CHUNK_ROWS):
        idx = rows_all[start:start + CHUNK_ROWS]
        sub_unknown, sub_level, sub_has_level = unknown[idx], level[idx], has_level[idx]
        sub_publish = publish[idx]
        pid_values = pid.iloc[idx]
        enc_pid = _parts(_arrow(pid_values))
        product = _join(product_prefix, enc_pid, ">")
        variant = np.where(sub_unknown, "/unknown", "").astype(object)
        with_level = sub_has_level & ~sub_unknown
        if with_level.any():
            variant[with_level] = _by_value(sub_level[with_level], lambda x: f"/level-{int(x)}")
        pred = _join(prediction_prefix, enc_pid, f"/{_part(CATEGORY_TASK)}", _arrow(variant), ">")
        concept = _join(concept_prefix, _parts(_arrow(value.iloc[idx].where(~sub_unknown, "x"))), ">")
        obj = pc.if_else(pa.array(sub_unknown), pa.scalar(c["out"], pa.large_string()), concept)
        conf_text = _arrow(_by_value(confidence[idx], lambda x: f'"{double_text(x)}"^^{double_t}'))
        model_t = model_texts.take(pa.array(model.iloc[idx].map(model_index).to_numpy(dtype=np.int64)))

        lines = [
            _join(pred, f" {c['type']} {c['Prediction']}{tail}"),
            _join(pred, f" {c['subject']} ", product, tail),
            _join(pred, f" {c['task']} {task_literal}{tail}"),
            _join(pred, f" {c['predicate']} {c['category']}{tail}"),
            _join(pred, f" {c['object']} ", obj, tail),
            _join(pred, f" {c['confidence']} ", conf_text, tail),
            _join(pred, f" {c['model']} ", model_t, tail),
            _join(pred, f" {c['by']} {run_t}{tail}"),
        ]
        if generated is not None:
            lines.append(_join(pred, f"{generated}{tail}"))
        if sub_unknown.any():
            lines.append(_join(pred.filter(pa.array(sub_unknown)), f" {c['kind']} {_nt(Literal('unknown'))}{tail}"))
        if sub_has_level.any():
            mask = pa.array(sub_has_level)
            level_text = _arrow(_by_value(sub_level[sub_has_level], lambda x: _nt(Literal(int(x), datatype=XSD.integer))))
            lines.append(_join(pred.filter(mask), f" {c['level']} ", level_text, tail))
        if has_flag:
            flag_text = _arrow(np.where(sub_publish, _nt(Literal(True)), _nt(Literal(False))).astype(object))
            lines.append(_join(pred, f" {c['published']} ", flag_text, tail))
        fact = sub_publish & ~sub_unknown
        if decided:
            fact &= ~pid_values.isin(decided).to_numpy()
        if fact.any():
            mask = pa.array(fact)
            lines.append(_join(product.filter(mask), f" {c['category']} ", obj.filter(mask), tail))
        out.chunks.append(_text_bytes(lines))
        out.count += sum(len(x) for x in lines)
    return out


def _by_value(values: np.ndarray, text) -> np.ndarray:
    """``text(v)`` for each value, computed once per distinct value (floats by bit pattern: -0.0 is not 0.0)."""
    if values.dtype.kind == "f":
        bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
        unique, inverse = np.unique(bits, return_inverse=True)
        return np.asarray([text(v) for v in unique.view(np.float64).tolist()], dtype=object)[inverse]
    unique, inverse = np.unique(values, return_inverse=True)
    return np.asarray([text(v) for v in unique.tolist()], dtype=object)[inverse]
