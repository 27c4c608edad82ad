"""The review queue: target products ordered by how much a reviewer's answer would teach the model.

A reviewer's answer teaches the model most about the products most like the one reviewed: the
category head learns from it and :mod:`prediction.propagation` spreads it to the product's
neighbours. With a review budget far below the catalog's size, what pays is covering the target's
dense regions, one answer each, before a second answer anywhere (TypiClust: Hacohen, Dekel and
Weinshall, "Active learning on a budget: opposite strategies suit high and low budgets", ICML 2022).
So:

1. the target products' vectors (``embeddings.parquet``) are clustered into as many clusters as
   there will be answers by the end of the next batch (``reviewed + batch``, batch 100 by default:
   :func:`n_clusters_for`). The clusters are those of the graph an answer spreads over: the
   products' 10-nearest-neighbour graph, the one :mod:`prediction.propagation` spreads reviewers'
   labels on, cut by spectral clustering (Ng, Jordan and Weiss, NIPS 2001: k-means on the rows of
   its leading eigenvectors, at most 128), so each cluster is a region one answer reaches. On
   grocery in-store photos 100 queue-chosen answers gained 2.1 points of fine accuracy more than
   with k-means on the vectors (1.0 to 3.0 on each of 3 seeds); on office-caltech-10 webcam, where
   both reach 99 % by 30 answers, 1.6 points less at 10 answers and 0.4 at 30 (docs/BENCHMARKS.md,
   "Review loop"). Above
   :data:`MAX_GRAPH_PRODUCTS` products k-means on the (randomly projected) vectors stands in;
2. a product's typicality is its inverse mean distance to its 20 nearest neighbours within its
   cluster (TypiClust), scaled to [0, 1] within the cluster: the most typical product stands for
   its cluster best, an outlier teaches little about its neighbours;
3. a product's value is ``typicality × (0.5 + 0.5 × uncertainty)``, uncertainty being ``1 -
   confidence`` of its category prediction: within a cluster the typical products come first, the
   uncertain ones among them first;
4. the queue takes clusters in turn, each time the one with the highest ``mean uncertainty of its
   unreviewed products × their number / (1 + answers already in it)²``: uncertainty weighted by
   density, with fast diminishing returns per cluster, so the first pass gives each uncovered
   cluster its most typical product, the largest and least certain clusters first, and later passes
   go on by uncertainty and unreviewed share, however large the budget.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from prodkg.knn import knn_affinity

__all__ = ["BATCH", "QueueModel", "fit_queue_model", "n_clusters_for", "review_order", "spectral_embedding", "typicality"]

#: answers a review round is planned for: the clustering has one cluster per answer expected by the end of it
BATCH = 100
NEIGHBOURS = 20  # TypiClust's k for typicality
#: the neighbours of the graph the queue cuts: those of the label spreading (prediction.propagation.blend_with_reviews)
GRAPH_NEIGHBOURS = 10
#: the spectral embedding's dimensions at most: the clusters may be more (k-means on it)
SPECTRAL_DIMS = 128
#: above this many products the graph's spectrum costs too much for a review round: k-means on the vectors
MAX_GRAPH_PRODUCTS = 30_000
METHODS = ("auto", "graph", "kmeans")


@dataclass
class QueueModel:
    """The clustering of one run's target products (fitted once per run and review round)."""

    product_ids: list[str]
    cluster: np.ndarray  # cluster index per product
    typicality: np.ndarray  # within the cluster, in [0, 1]: 1 for its most typical product
    n_clusters: int
    method: str = "kmeans"  # "graph" (spectral clusters of the k-NN graph) or "kmeans" (on the vectors)


def n_clusters_for(n_products: int, n_reviewed: int, *, batch: int = BATCH) -> int:
    """Clusters for a review round: one per answer expected by its end (TypiClust's ``|L| + B``).

    ``n_reviewed`` is rounded down to a multiple of ``batch``, so the clustering changes once per
    ``batch`` answers, not with every answer.
    """
    if n_products <= 0:
        return 0
    return int(min(n_products, batch * (1 + max(0, n_reviewed) // batch)))


def typicality(x: np.ndarray, cluster: np.ndarray, *, k: int = NEIGHBOURS, chunk: int = 2048, max_reference: int = 4096,
               seed: int = 0) -> np.ndarray:
    """Per row, ``1 / mean Euclidean distance to its k nearest neighbours in its cluster`` (TypiClust's typicality),
    divided by the cluster's largest, so the most typical product of every cluster has 1.

    A cluster larger than ``max_reference`` measures the distances to a random ``max_reference`` of its rows.
    A cluster of one product: typicality 1.
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros(len(x))
    sq = (x * x).sum(1)
    rng = np.random.default_rng(seed)
    for c in np.unique(cluster):
        rows = np.flatnonzero(cluster == c)
        if len(rows) == 1:
            out[rows] = 1.0
            continue
        ref = rows if len(rows) <= max_reference else np.sort(rng.choice(rows, max_reference, replace=False))
        kk = min(k, len(ref) - 1)
        raw = np.empty(len(rows))
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            d2 = sq[part][:, None] + sq[ref][None, :] - 2.0 * (x[part] @ x[ref].T)
            d2[part[:, None] == ref[None, :]] = np.inf  # a product is not its own neighbour
            near = np.sqrt(np.clip(np.partition(d2, kk - 1, axis=1)[:, :kk], 0.0, None))
            raw[start:start + chunk] = 1.0 / (near.mean(1) + 1e-12)
        out[rows] = raw / raw.max()
    return out


def spectral_embedding(x: np.ndarray, dims: int, *, seed: int = 0, k: int = GRAPH_NEIGHBOURS) -> np.ndarray:
    """Rows of the ``dims`` leading eigenvectors of :func:`knn_affinity`, each scaled to unit length (Ng, Jordan and
    Weiss): products the graph joins closely get nearby rows. The eigen-solver starts from a vector drawn with
    ``seed``, so the result is reproducible."""
    from scipy.sparse.linalg import eigsh

    s = knn_affinity(x, k)
    n = s.shape[0]
    dims = int(min(dims, n - 2))
    v0 = np.random.default_rng(seed).uniform(0.5, 1.0, n)
    _, vecs = eigsh(s, k=dims, which="LA", v0=v0)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)


def fit_queue_model(product_ids: list[str], vectors: np.ndarray, *, n_clusters: int | None = None, seed: int = 0,
                    dims: int = 512, method: str = "auto") -> QueueModel:
    """Cluster the products' vectors (L2-normalised) into ``n_clusters`` (default :func:`n_clusters_for` with
    nothing reviewed) and measure each one's typicality.

    ``method``: ``graph`` cuts the k-nearest-neighbour graph (:func:`spectral_embedding`, then k-means on it);
    ``kmeans`` runs k-means on the vectors, randomly projected to ``dims`` dimensions when wider; ``auto`` (default)
    is ``graph`` up to :data:`MAX_GRAPH_PRODUCTS` products with more products than clusters and vectors to compare,
    else ``kmeans``.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if method not in METHODS:
        raise ValueError(f"unknown queue clustering {method!r}; valid: {', '.join(METHODS)}")
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        return QueueModel([], np.zeros(0, int), np.zeros(0), 0)
    if x.ndim != 2:
        x = x.reshape(n, -1)
    k = int(min(n, n_clusters if n_clusters is not None else n_clusters_for(n, 0)))
    unit = _unit(x)
    if method == "auto":
        usable = int((np.abs(unit).sum(1) > 0).sum())
        method = "graph" if n <= MAX_GRAPH_PRODUCTS and 1 < k and n > k + 2 and usable > k else "kmeans"
    if method == "graph" and 1 < k < n - 2:
        embedding = spectral_embedding(unit, min(k, SPECTRAL_DIMS), seed=seed)
        labels = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(embedding).labels_.astype(int)
        _, labels = np.unique(labels, return_inverse=True)  # no empty cluster indices
        return QueueModel(list(product_ids), labels, typicality(unit, labels, seed=seed), int(labels.max()) + 1, "graph")
    if x.shape[1] > dims:
        rng = np.random.default_rng(seed)
        x = _unit(x @ (rng.standard_normal((x.shape[1], dims)).astype(np.float32) / np.sqrt(dims)))
    else:
        x = unit
    if k <= 1:
        labels = np.zeros(n, dtype=int)
    elif n * k <= 2_000_000:  # full k-means up to 20 000 products in 100 clusters (about 10 s on one core); mini-batch beyond
        labels = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(x).labels_.astype(int)
    else:
        labels = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=4096).fit(x).labels_.astype(int)
    _, labels = np.unique(labels, return_inverse=True)  # no empty cluster indices
    return QueueModel(list(product_ids), labels, typicality(x, labels, seed=seed), int(labels.max()) + 1, "kmeans")


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def review_order(model: QueueModel, confidence: np.ndarray, reviewed: np.ndarray, *, limit: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to ``limit`` unreviewed products in queue order, and each one's score (non-increasing).

    ``confidence`` is the category prediction's confidence per product (NaN: no prediction,
    treated as 0); ``reviewed`` marks products with a decision in force.
    """
    n = len(model.product_ids)
    if n == 0:
        return np.zeros(0, int), np.zeros(0)
    conf = np.nan_to_num(np.asarray(confidence, dtype=float), nan=0.0)
    uncertainty = 1.0 - np.clip(conf, 0.0, 1.0)
    value = model.typicality * (0.5 + 0.5 * uncertainty) + 1e-9
    reviewed = np.asarray(reviewed, dtype=bool)
    members: list[list[int]] = [[] for _ in range(model.n_clusters)]
    for i in np.argsort(-value, kind="stable"):
        if not reviewed[i]:
            members[model.cluster[i]].append(int(i))
    answered = np.bincount(model.cluster[reviewed], minlength=model.n_clusters) if reviewed.any() else np.zeros(model.n_clusters, int)
    # the uncertainty left in each cluster: summed over its unreviewed products, less each one queued
    left = np.zeros(model.n_clusters)
    np.add.at(left, model.cluster[~reviewed], uncertainty[~reviewed] + 1e-9)
    heap = [(-_priority(left[c], answered[c]), c) for c, rows in enumerate(members) if rows]
    heapq.heapify(heap)
    order, scores, taken = [], [], np.zeros(model.n_clusters, int)
    while heap and len(order) < limit:
        neg, c = heapq.heappop(heap)
        i = members[c][taken[c]]
        order.append(i)
        scores.append(-neg)
        taken[c] += 1
        left[c] -= uncertainty[i] + 1e-9
        remaining = len(members[c]) - taken[c]
        if remaining:
            heapq.heappush(heap, (-_priority(left[c], answered[c] + taken[c]), c))
    return np.array(order, dtype=int), np.array(scores, dtype=float)


def _priority(uncertainty_left: float, answered: int) -> float:
    """Mean uncertainty × unreviewed products (the uncertainty left in the cluster), with diminishing returns per answer."""
    return float(max(uncertainty_left, 0.0) / (1.0 + answered) ** 2)
