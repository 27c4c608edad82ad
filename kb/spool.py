"""A run's catalog, prediction and change N-Quads written batch by batch to a spool file that the store's loader reads.

Nearly all of a run's statements are its catalog's and its predictions'. Built for the whole
catalog at once they stay in memory until the store has loaded them, so memory grows with the
catalog. :func:`build_spool` builds them :data:`BATCH_PRODUCTS` products at a time (each batch
with the predictions of its products) with the same builders
(:func:`prodkg.kb.frame_nquads.catalog_nquads`, :func:`~prodkg.kb.frame_nquads.prediction_nquads`)
and appends each batch to a file beside the store as soon as it is made. What stays in memory
per product is its IRI, id and content hash (:attr:`Spool.index`): the change records need all
of them before the load. :func:`change_nquads` writes those records column-wise too.

The statements are those of one call of the builders on the whole frames (the store holds a
set, so a run node or model node written by every batch is one statement), and so are the
errors: a batch the builders refuse makes the whole frame go through them once more, which
raises their error about the whole frame (row numbers included).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rdflib.term import URIRef

from prodkg.kb.frame_nquads import _arrow, _join, _literals, _nt, _part, _parts, _text_bytes, catalog_nquads, prediction_nquads
from prodkg.kb.iri import DEFAULT_BASE, _check_base, mint
from prodkg.kb.triples import RunInfo, run_graph
from prodkg.kb.vocab import PKG, PROV, RDF

__all__ = ["BATCH_PRODUCTS", "INDEX_COLUMNS", "Spool", "build_spool", "change_nquads", "empty_index"]

#: products per batch: each batch's N-Quads (about 3 kB per product with its prediction) are
#: written out before the next is built, so this bounds the memory the statements take
BATCH_PRODUCTS = 50_000

#: the columns of :attr:`Spool.index`, one row per product: what change records and incremental updates compare
INDEX_COLUMNS = ["product", "product_id", "content_hash"]


@dataclass
class Spool:
    """N-Quads in a file, appended batch by batch, and the per-product index of the products written."""

    path: Path
    count: int = 0  #: statements (lines) written, repeats included
    batches: int = 0
    fallback: bool = False  #: whether any batch went through the rdflib builders
    index: pd.DataFrame = field(default_factory=lambda: empty_index())

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed by close(), the spool outlives this call

    def write(self, chunks, count: int) -> None:
        if self._handle.closed:
            self._handle = open(self.path, "ab")  # noqa: SIM115
        for chunk in chunks:
            self._handle.write(chunk)
        self.count += count

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def chunks(self, size: int = 1 << 24) -> Iterator[bytes]:
        """The file's bytes in pieces of about ``size`` that end at a line end (a loader may parse each alone)."""
        self.close()
        with open(self.path, "rb") as handle:
            while True:
                piece = handle.read(size)
                if not piece:
                    return
                if not piece.endswith(b"\n"):
                    piece += handle.readline()
                yield piece

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def hashes(self) -> dict[URIRef, tuple[str, str]]:
        """The index as :func:`prodkg.kb.incremental.product_hashes` gives it (product IRI -> (id, content hash))."""
        return {URIRef(p): (i, h) for p, i, h in self.index[INDEX_COLUMNS].itertuples(index=False)}


def _batches(products: pd.DataFrame, predictions: pd.DataFrame, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(product rows, prediction rows) per batch; the predictions of a product are in its product's batch.

    Predictions of products the catalog lacks form one batch of their own at the end. When the
    frames cannot be split this way (no id column, repeated ids) the whole frames are one batch,
    so the builders see them as a single call would.
    """
    n = len(products) if isinstance(products, pd.DataFrame) else 0
    whole = [(np.arange(n), np.arange(len(predictions)) if isinstance(predictions, pd.DataFrame) else np.arange(0))]
    if (n <= batch or not isinstance(predictions, pd.DataFrame) or "product_id" not in products.columns
            or "product_id" not in predictions.columns):
        return whole
    ids = pd.Index(products["product_id"].astype(str))
    if not ids.is_unique:
        return whole
    position = ids.get_indexer(predictions["product_id"].astype(str))
    n_batches = -(-n // batch)
    group = np.where(position >= 0, position // batch, n_batches)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(n_batches + 2))
    out = []
    for b in range(n_batches + 1):
        rows = order[bounds[b]:bounds[b + 1]]
        if b == n_batches and len(rows) == 0:
            break
        out.append((np.arange(b * batch, min(n, (b + 1) * batch)) if b < n_batches else np.arange(0), rows))
    return out


def build_spool(
    path: str | os.PathLike[str],
    products: pd.DataFrame,
    predictions: pd.DataFrame,
    run: RunInfo | str,
    *,
    catalog: str,
    attributes: Sequence[str] = (),
    scheme: str,
    base: str = DEFAULT_BASE,
    threshold: float | None = 0.5,
    min_precision: float | None = None,
    no_category_fact: Sequence[str] = (),
    batch: int | None = None,
) -> Spool:
    """Write the catalog's quads (with content hashes) and the predictions' quads to ``path``, batch by batch.

    The statements and the errors are those of ``catalog_nquads(products, content_hash=True)`` and
    ``prediction_nquads(predictions, ...)`` called once each on the whole frames. The file is
    removed when building fails.
    """
    batch = batch or BATCH_PRODUCTS
    batches = _batches(products, predictions, batch)
    spool = Spool(Path(path))
    pieces: dict[str, list] = {c: [] for c in INDEX_COLUMNS}
    try:
        for b, (product_rows, prediction_rows) in enumerate(batches):
            if len(product_rows):
                rows = products if len(product_rows) == len(products) else products.iloc[product_rows]
                built = catalog_nquads(rows, catalog=catalog, attributes=attributes, scheme=scheme, base=base, content_hash=True)
                spool.write(built.chunks, built.count)
                spool.fallback |= built.fallback
                for iri, (pid, digest) in built.hashes.items():
                    pieces["product"].append(str(iri))
                    pieces["product_id"].append(pid)
                    pieces["content_hash"].append(digest)
                del built
            if b == 0 or len(prediction_rows):  # the first batch always: it writes the run's header, predictions or not
                rows = predictions if len(prediction_rows) == len(predictions) else predictions.iloc[prediction_rows]
                built = prediction_nquads(rows, run, catalog=catalog, scheme=scheme, threshold=threshold, base=base,
                                          min_precision=min_precision, no_category_fact=no_category_fact)
                spool.write(built.chunks, built.count)
                spool.fallback |= built.fallback
                del built
            spool.batches += 1
    except Exception:
        spool.remove()
        if len(batches) == 1:
            raise  # the batch was the whole frames: its error is theirs
        # a batch was refused: the whole frames raise the builders' own error about them (row numbers included)
        catalog_nquads(products, catalog=catalog, attributes=attributes, scheme=scheme, base=base, content_hash=True)
        prediction_nquads(predictions, run, catalog=catalog, scheme=scheme, threshold=threshold, base=base,
                          min_precision=min_precision, no_category_fact=no_category_fact)
        raise
    spool.index = pd.DataFrame(pieces, columns=INDEX_COLUMNS)
    spool.close()
    return spool


def change_nquads(run_id: str, records: pd.DataFrame, *, base: str = DEFAULT_BASE) -> tuple[list[bytes], int]:
    """The statements of :func:`prodkg.kb.incremental.change_quads` for ``records``, as N-Quads chunks, and their count.

    ``records`` has one row per change: ``kind`` (``added``, ``changed``, ``removed``), ``product``
    (its IRI), ``product_id`` and ``catalog`` (the catalog the product IRI names).
    """
    base = _check_base(base)
    g = run_graph(run_id, base=base)
    tail = f" {_nt(g)} .\n"
    run_t = _nt(mint("run", run_id, base=base))
    prefix = f"<{base}change/{_part(run_id)}/"
    type_p, change_c = _nt(RDF.type), _nt(PKG.Change)
    kind_p, product_p, id_p, by_p = _nt(PKG.changeType), _nt(PKG.changedProduct), _nt(PKG.productId), _nt(PROV.wasGeneratedBy)
    chunks, count = [], 0
    for start in range(0, len(records), 65_536):
        rows = records.iloc[start:start + 65_536]
        kind, pid = _arrow(rows["kind"].astype(str)), _arrow(rows["product_id"].astype(str))
        node = _join(prefix, _parts(kind), "/", _parts(_arrow(rows["catalog"].astype(str))), "/", _parts(pid), ">")
        lines = [
            _join(node, f" {type_p} {change_c}{tail}"),
            _join(node, f" {kind_p} ", _literals(kind), tail),
            _join(node, f" {product_p} <", _arrow(rows["product"].astype(str)), ">", tail),
            _join(node, f" {id_p} ", _literals(pid), tail),
            _join(node, f" {by_p} {run_t}{tail}"),
        ]
        chunks.append(_text_bytes(lines))
        count += 5 * len(rows)
    return chunks, count


def empty_index() -> pd.DataFrame:
    """An index of no products."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})

