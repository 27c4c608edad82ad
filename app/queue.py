"""The review queue: target products ordered by how much a reviewer's answer would teach the model.

An answer helps most where the model is unsure *and* where many similar products are still
unreviewed (the head learns the whole neighbourhood from it), and a queue should not spend ten
answers on ten near-copies of one product. So:

1. the target products' vectors (``embeddings.parquet``) are projected to a few dimensions and
   clustered (k-means, about one cluster per 50 products, at most 256);
2. a product's value is ``uncertainty × typicality``: uncertainty is ``1 - confidence`` of its
   category prediction, typicality its cosine similarity to its cluster's centre (an outlier
   teaches little about its neighbours);
3. the queue takes clusters in turn, each time the cluster whose best unreviewed product has the
   highest ``value × unreviewed products in the cluster / (1 + answers already in it)²``:
   uncertainty weighted by density, with fast diminishing returns per cluster, so the first answers
   go to the most typical products of the largest uncertain clusters (as TypiClust does for a cold
   start) and none is spent on a second near-copy while a large cluster has none.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

__all__ = ["QueueModel", "fit_queue_model", "review_order"]


@dataclass
class QueueModel:
    """The clustering of one run's target products (fitted once per run)."""

    product_ids: list[str]
    cluster: np.ndarray  # cluster index per product
    typicality: np.ndarray  # cosine similarity to the cluster centre, in [0, 1]
    n_clusters: int


def fit_queue_model(product_ids: list[str], vectors: np.ndarray, *, seed: int = 0, max_clusters: int = 256, dims: int = 512) -> QueueModel:
    """Cluster the products' vectors (L2-normalised; randomly projected to ``dims`` dimensions when wider)."""
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        return QueueModel([], np.zeros(0, int), np.zeros(0), 0)
    if x.ndim != 2:
        x = x.reshape(n, -1)
    if x.shape[1] > dims:
        rng = np.random.default_rng(seed)
        x = x @ (rng.standard_normal((x.shape[1], dims)).astype(np.float32) / np.sqrt(dims))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    k = int(min(max_clusters, max(1, n // 50)))  # about 50 products a cluster: a first pass of the queue covers the catalog coarsely
    if k <= 1:
        labels = np.zeros(n, dtype=int)
        centres = x.mean(0, keepdims=True)
    else:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=min(n, 4096)).fit(x)
        labels, centres = km.labels_.astype(int), km.cluster_centers_
    cn = np.linalg.norm(centres, axis=1, keepdims=True)
    centres = np.divide(centres, cn, out=np.zeros_like(centres), where=cn > 0)
    typicality = np.clip((x * centres[labels]).sum(1), 0.0, 1.0)
    return QueueModel(list(product_ids), labels, typicality, int(labels.max()) + 1)


def review_order(model: QueueModel, confidence: np.ndarray, reviewed: np.ndarray, *, limit: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to ``limit`` unreviewed products in queue order, and each one's score.

    ``confidence`` is the category prediction's confidence per product (NaN: no prediction,
    treated as 0); ``reviewed`` marks products with a decision in force.
    """
    n = len(model.product_ids)
    if n == 0:
        return np.zeros(0, int), np.zeros(0)
    conf = np.nan_to_num(np.asarray(confidence, dtype=float), nan=0.0)
    value = (1.0 - np.clip(conf, 0.0, 1.0)) * (0.1 + 0.9 * model.typicality) + 1e-9
    reviewed = np.asarray(reviewed, dtype=bool)
    members: list[list[int]] = [[] for _ in range(model.n_clusters)]
    for i in np.argsort(-value, kind="stable"):
        if not reviewed[i]:
            members[model.cluster[i]].append(int(i))
    answered = np.bincount(model.cluster[reviewed], minlength=model.n_clusters) if reviewed.any() else np.zeros(model.n_clusters, int)
    heap = []
    for c, rows in enumerate(members):
        if rows:
            heap.append((-_priority(value[rows[0]], len(rows), answered[c]), c))
    heapq.heapify(heap)
    order, scores, taken = [], [], np.zeros(model.n_clusters, int)
    while heap and len(order) < limit:
        neg, c = heapq.heappop(heap)
        i = members[c][taken[c]]
        order.append(i)
        scores.append(-neg)
        taken[c] += 1
        left = len(members[c]) - taken[c]
        if left:
            heapq.heappush(heap, (-_priority(value[members[c][taken[c]]], left, answered[c] + taken[c]), c))
    return np.array(order, dtype=int), np.array(scores, dtype=float)


def _priority(value: float, unreviewed: int, answered: int) -> float:
    return float(value * unreviewed / (1.0 + answered) ** 2)
