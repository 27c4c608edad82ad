"""Centroid refinement against a manual spherical k-means, the head it yields, and ensembles of trained networks."""

from __future__ import annotations

import numpy as np
import torch

from prodkg.adaptation import AdaptedModel, MultiModal, TrainConfig, train
from prodkg.adaptation.model import EnsembleNetwork
from prodkg.adaptation.refine import TEMPERATURE, CentroidHead, centred_inputs, centroid_refine


def test_centroid_refine_matches_a_manual_spherical_kmeans() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 3))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    probs = rng.dirichlet(np.ones(2), size=12)
    c = np.stack([(probs[:, k:k + 1] * z).sum(0) for k in range(2)])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    lab = np.array([np.argmax([z[i] @ c[k] for k in range(2)]) for i in range(12)])
    c2 = np.stack([z[lab == k].sum(0) for k in range(2)])
    c2 /= np.linalg.norm(c2, axis=1, keepdims=True)
    lab2 = np.array([np.argmax([z[i] @ c2[k] for k in range(2)]) for i in range(12)])
    centroids, labels = centroid_refine(z, probs, iterations=2)
    np.testing.assert_allclose(centroids, c2, atol=1e-12)
    np.testing.assert_array_equal(labels, lab2)


def test_centroid_refine_runs_lloyd_to_a_fixed_point_by_default() -> None:
    rng = np.random.default_rng(3)
    # four loose clusters on the sphere and a poor seeding classifier, so two steps are not enough to settle
    centres = rng.normal(size=(4, 6))
    y = rng.integers(0, 4, 200)
    z = centres[y] + rng.normal(scale=0.9, size=(200, 6))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    probs = rng.dirichlet(np.ones(4), size=200) * 0.6 + 0.4 * np.eye(4)[(y + (rng.random(200) < 0.4)) % 4]

    def manual(steps):  # Lloyd's spherical k-means by hand, seeded by the soft probabilities
        c = probs.T @ z
        for step in range(steps):
            c = c / np.linalg.norm(c, axis=1, keepdims=True)
            lab = (z @ c.T).argmax(1)
            c = np.stack([z[lab == k].sum(0) if (lab == k).any() else c[k] for k in range(4)])
        return lab

    two = manual(2)
    _, labels = centroid_refine(z, probs)
    assert not np.array_equal(labels, two), "the data should need more than two steps"
    # a fixed point: every product is nearest to the normalised mean of the products sharing its label
    c = np.stack([z[labels == k].sum(0) for k in range(4)])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    np.testing.assert_array_equal((z @ c.T).argmax(1), labels)
    np.testing.assert_array_equal(labels, manual(50))
    np.testing.assert_array_equal(centroid_refine(z, probs, iterations=2)[1], two)


def test_refinement_fixes_predictions_that_are_off_by_a_shift() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = rng.normal(scale=0.3, size=(300, 3)) + 3 * np.eye(3)[y]
    noisy = np.where(rng.random(300) < 0.3, (y + 1) % 3, y)  # a classifier 70% right
    probs = 0.2 + 0.6 * np.eye(3)[noisy]
    z = centred_inputs(MultiModal.complete(image=x), {"image": x.mean(0)})
    _, labels = centroid_refine(z, probs / probs.sum(1, keepdims=True))
    assert (labels == y).mean() > 0.95


def test_centroid_head_logits_are_scaled_cosines_and_ignore_missing_blocks() -> None:
    class Base(torch.nn.Module):
        def forward(self, blocks, present):
            return blocks["image"] * 2, torch.zeros(len(blocks["image"]), 2)

    head = CentroidHead(Base(), {"image": 2, "text": 1}, 2)
    head.set_state({"image": np.array([1.0, 0.0]), "text": np.array([0.5])}, np.array([[1.0, 0, 0], [0, 0, 1.0]]))
    blocks = {"image": torch.tensor([[2.0, 0.0], [1.0, 1.0]]), "text": torch.tensor([[1.5], [float("nan")]])}
    present = {"image": torch.tensor([True, True]), "text": torch.tensor([True, False])}
    features, logits = head(blocks, present)
    assert torch.equal(features, blocks["image"] * 2)
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(logits.numpy(), np.array([[r, r], [0.0, 0.0]]) / TEMPERATURE, atol=1e-5)


def test_ensemble_averages_member_probabilities_and_round_trips(make_shifted, tmp_path) -> None:
    xs, ys, xt, _ = make_shifted(seed=2, n=90, dim=5)
    a = train(xs, ys, xt, 3, TrainConfig(method="source_only", hidden=8, epochs=2, seed=0))
    b = train(xs, ys, xt, 3, TrainConfig(method="dann", hidden=8, epochs=2, seed=1))
    ens = AdaptedModel(EnsembleNetwork([a.network, b.network]), a.config, 3, a.dims)
    expected = (a.predict_proba(xt).astype(np.float64) + b.predict_proba(xt)) / 2
    np.testing.assert_allclose(ens.predict_proba(xt), expected, atol=1e-5)
    np.testing.assert_array_equal(ens.embed(xt), a.embed(xt))
    again = AdaptedModel.load(ens.save(tmp_path / "ens"))
    np.testing.assert_allclose(again.predict_proba(xt), ens.predict_proba(xt), atol=1e-6)
    assert [c["method"] for c in again.describe()["ensemble"]] == ["source_only", "dann"]


def test_refinement_gives_no_products_to_classes_a_partial_target_lacks() -> None:
    from prodkg.adaptation.refine import MIN_CLASS_SHARE, centroid_refine, target_class_prior

    rng = np.random.default_rng(0)
    # three source classes in equal shares; the target holds classes 0 and 1 only, in tight clusters,
    # and the classifier puts a little stray mass on class 2 everywhere
    centres = np.eye(3, 8) * 4.0
    y = np.repeat([0, 1], 60)
    z = centres[y] + rng.normal(scale=0.3, size=(120, 8))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    probs = np.full((120, 3), 0.04)
    probs[np.arange(120), y] = 0.92
    prior = target_class_prior(probs, np.ones(3) / 3)
    assert prior[2] < MIN_CLASS_SHARE / 3 and prior[:2].sum() > 0.99
    centroids, labels = centroid_refine(z, probs, source_prior=np.ones(3) / 3)
    assert not (labels == 2).any() and np.allclose(centroids[2], 0.0)
    assert (labels == y).mean() == 1.0
    # EM by hand on two rows: equal source shares, probabilities (0.8, 0.2) and (0.6, 0.4) -> a fixed point
    p = np.array([[0.8, 0.2], [0.6, 0.4]])
    pi = target_class_prior(p, np.array([0.5, 0.5]))
    q = p * pi / 0.5
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(q.mean(0), pi, atol=1e-6)
