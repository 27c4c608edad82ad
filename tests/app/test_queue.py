"""The review queue's logic (app/queue.py) against hand-made examples and naive reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from prodkg.app.queue import QueueModel, fit_queue_model, n_clusters_for, review_order, typicality


def test_clusters_for_a_review_round_change_once_per_batch():
    assert [n_clusters_for(5000, r, batch=100) for r in (0, 1, 99, 100, 250)] == [100, 100, 100, 200, 300]
    assert n_clusters_for(40, 0, batch=100) == 40  # never more clusters than products
    assert n_clusters_for(0, 0) == 0


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours_in_the_cluster():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 3)).astype(np.float32)
    cluster = np.array([0] * 10 + [1] * 12 + [2])
    got = typicality(x, cluster, k=4)
    # reference: scipy's distances, the 4 nearest others sorted out by hand, normalised per cluster
    want = np.zeros(len(x))
    for c in (0, 1):
        rows = np.flatnonzero(cluster == c)
        d = cdist(x[rows], x[rows])
        raw = np.array([1.0 / np.sort(np.delete(d[j], j))[:4].mean() for j in range(len(rows))])
        want[rows] = raw / raw.max()
    want[22] = 1.0  # a cluster of one
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_typicality_of_a_large_cluster_uses_a_sample_of_references():
    x = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    got = typicality(x, np.zeros(300, int), k=5, max_reference=100, chunk=64)
    assert got.shape == (300,) and got.max() == pytest.approx(1.0) and (got > 0).all()
    # the sample still ranks the centre of the cloud above its rim
    r = np.linalg.norm(x, axis=1)
    assert got[r < np.quantile(r, 0.2)].mean() > got[r > np.quantile(r, 0.8)].mean()


def test_the_model_finds_the_blobs_and_their_dense_cores():
    rng = np.random.default_rng(2)
    centres = np.eye(3, 8) * 10
    x, truth = [], []
    for c in range(3):
        core = centres[c] + 0.05 * rng.normal(size=(15, 8))  # a dense core
        rim = centres[c] + 1.5 * rng.normal(size=(5, 8))  # and a sparse rim
        x += [core, rim]
        truth += [c] * 20
    x = np.concatenate(x)
    model = fit_queue_model([f"p{i}" for i in range(60)], x, n_clusters=3)
    truth = np.array(truth)
    assert model.n_clusters == 3
    assert len({(int(a), int(b)) for a, b in zip(model.cluster, truth, strict=True)}) == 3  # one cluster per blob
    for c in range(3):
        rows = np.flatnonzero(truth == c)
        best = rows[np.argmax(model.typicality[rows])]
        assert best % 20 < 15  # the most typical product of each blob is one of its core
    order, _ = review_order(model, np.full(60, 0.5), np.zeros(60, bool), limit=3)
    assert sorted(truth[order]) == [0, 1, 2] and all(i % 20 < 15 for i in order)


def _reference_order(cluster, typ, conf, reviewed, limit):
    """The queue by its definition, recomputed from scratch at every step (no heap, no running sums)."""
    unc = 1.0 - conf
    value = typ * (0.5 + 0.5 * unc)
    picked: list[int] = []
    while len(picked) < limit:
        taken = reviewed.copy()
        taken[picked] = True
        best = None
        for c in np.unique(cluster):
            rows = [i for i in np.flatnonzero(cluster == c) if not taken[i]]
            if not rows:
                continue
            answered = int(((cluster == c) & taken).sum())
            priority = sum(unc[i] for i in rows) / (1 + answered) ** 2
            top = max(rows, key=lambda i: (value[i], -i))
            if best is None or priority > best[0] + 1e-12:
                best = (priority, top)
        if best is None:
            break
        picked.append(best[1])
    return picked


def test_the_order_matches_its_definition_on_a_hand_made_example():
    cluster = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    typ = np.array([1.0, 0.9, 0.5, 0.3, 0.2, 0.1, 1.0, 0.6, 0.4, 1.0, 0.7, 1.0])
    conf = np.array([0.9, 0.2, 0.3, 0.1, 0.45, 0.4, 0.1, 0.2, 0.3, 0.6, 0.5, 0.05])
    reviewed = np.zeros(12, bool)
    reviewed[6] = True  # cluster 1 already has an answer
    model = QueueModel([f"p{i}" for i in range(12)], cluster, typ, 4)
    order, scores = review_order(model, conf, reviewed, limit=11)
    assert list(order) == _reference_order(cluster, typ, conf, reviewed, 11)
    # by hand: cluster 0 holds the most uncertainty (3.65); its best product is 1 (0.9 × 0.9 = 0.81 beats 1.0 × 0.55);
    # then cluster 3 (0.95); then cluster 2 (0.9) before cluster 0 again (2.85 / 4) and cluster 1 (1.5 / 4), and in
    # cluster 2 product 9 (1.0 × 0.7 beats 0.7 × 0.75); then cluster 0's product 0 (0.7125) and cluster 1's product 7 (0.375)
    assert list(order[:5]) == [1, 11, 9, 0, 7]
    assert list(scores[:5]) == pytest.approx([3.65, 0.95, 0.9, 0.7125, 0.375])
    assert 6 not in order and list(scores) == sorted(scores, reverse=True)


def test_the_order_matches_its_definition_on_random_examples():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        cluster = rng.integers(0, 5, n)
        _, cluster = np.unique(cluster, return_inverse=True)
        typ, conf = rng.uniform(0.05, 1, n), rng.uniform(0, 1, n)
        reviewed = rng.uniform(size=n) < 0.2
        model = QueueModel([str(i) for i in range(n)], cluster, typ, int(cluster.max()) + 1)
        order, _ = review_order(model, conf, reviewed, limit=n)
        assert list(order) == _reference_order(cluster, typ, conf, reviewed, n)


def test_the_knn_graph_matches_a_dense_computation():
    from prodkg.knn import knn_affinity

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # by hand, all at once: each row's 10 most similar other rows, similarities clipped at 0, symmetric by the max
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    w = np.zeros_like(sims)
    for i in range(len(x)):
        near = np.argsort(-sims[i])[:10]
        w[i, near] = np.clip(sims[i, near], 0, None)
    w = np.maximum(w, w.T)
    d = w.sum(1)
    expected = w / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(knn_affinity(x, 10, chunk=64).toarray(), expected, atol=1e-5)


def _moons(n=150, seed=0):
    """Two interleaved half-moons, lifted onto the unit sphere (the queue compares directions): k-means on the
    vectors cuts them across, the neighbour graph follows each moon."""
    from sklearn.datasets import make_moons

    xy, moon = make_moons(n_samples=2 * n, noise=0.04, random_state=seed)
    x = np.c_[xy, np.full(len(xy), 8.0)]
    return x / np.linalg.norm(x, axis=1, keepdims=True), moon


def test_graph_clusters_are_the_regions_an_answer_spreads_over():
    x, moon = _moons()
    ids = [str(i) for i in range(len(x))]
    graph = fit_queue_model(ids, x, n_clusters=2, seed=0)
    assert graph.method == "graph"
    # reference: the moons themselves (the cluster numbering is arbitrary)
    agree = max((graph.cluster == moon).mean(), (graph.cluster != moon).mean())
    assert agree > 0.97
    plain = fit_queue_model(ids, x, n_clusters=2, seed=0, method="kmeans")
    assert plain.method == "kmeans" and max((plain.cluster == moon).mean(), (plain.cluster != moon).mean()) < 0.9
    # the same seed gives the same clusters
    assert (fit_queue_model(ids, x, n_clusters=2, seed=0).cluster == graph.cluster).all()


def test_the_queue_falls_back_to_kmeans_without_vectors_to_compare_and_refuses_an_unknown_method():
    model = fit_queue_model([f"p{i}" for i in range(30)], np.zeros((30, 4)), n_clusters=5)
    assert model.method == "kmeans" and len(model.cluster) == 30
    with pytest.raises(ValueError, match="valid: auto, graph, kmeans"):
        fit_queue_model(["a", "b"], np.eye(2), method="spectral")
