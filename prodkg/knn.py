"""The k-nearest-neighbour similarity graph of products: what reviewers' labels spread over and the review queue cuts.

One definition for both users, so the queue's clusters are the regions label spreading reaches:
:mod:`prediction.propagation` spreads labels over it, :mod:`app.queue` embeds it spectrally. Kept
out of both packages so the app does not load the heads' libraries.
"""

from __future__ import annotations

import numpy as np

__all__ = ["knn_affinity"]


#: Similarities held at once by :func:`knn_affinity` when no ``chunk`` is given (``chunk x N`` of them, float32,
#: plus the int64 positions ``argpartition`` returns): about 400 MB in all, whatever N.
SIMILARITY_BUDGET = 1 << 25


def knn_affinity(x: np.ndarray, k: int = 10, *, chunk: int | None = None):
    """The normalised affinity ``D^-1/2 W D^-1/2`` of the k-nearest-neighbour graph of the rows of ``x`` (unit
    vectors): ``W`` holds each row's k most similar other rows' cosine similarity, clipped at 0, made symmetric
    by the larger of ``W`` and ``W^T``; a row with no positive similarity keeps a zero row. Computed ``chunk``
    rows at a time (default: at most 2,048 and :data:`SIMILARITY_BUDGET` similarities), so memory is
    ``chunk x N``. Returns a sparse (N, N) matrix."""
    from scipy import sparse

    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    k = min(k, n - 1)
    if chunk is None:
        chunk = max(1, min(2048, SIMILARITY_BUDGET // max(n, 1)))
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        sims[np.arange(sims.shape[0]), start + np.arange(sims.shape[0])] = -np.inf  # a product is not its own neighbour
        np.negative(sims, out=sims)  # in place: argpartition finds the k smallest, with no negated copy
        idx = np.argpartition(sims, k, axis=1)[:, :k]
        np.negative(sims, out=sims)
        rows.append(np.repeat(np.arange(start, start + sims.shape[0]), k))
        cols.append(idx.ravel())
        vals.append(np.clip(np.take_along_axis(sims, idx, axis=1).ravel(), 0.0, None))
    w = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    w = w.maximum(w.T)
    d = np.asarray(w.sum(1)).ravel()
    d = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    return sparse.diags(d) @ w @ sparse.diags(d)
