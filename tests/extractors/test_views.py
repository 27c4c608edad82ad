"""Shelf-style views: seeded augmentation, cached view features, hold-outs that keep a product's views together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prodkg.adaptation import MultiModal, TrainConfig
from prodkg.adaptation.holdout import grouped_holdout
from prodkg.extractors import FeatureCache, extract_features
from prodkg.extractors.augment import ShelfAugment, pick_others
from prodkg.extractors.base import decode_image
from prodkg.extractors.views import background_pool, extract_views


def _packshot(size: int = 120, colour=(200, 30, 30)) -> torch.Tensor:
    """A disc of ``colour`` on a white studio backdrop."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    img = torch.full((3, size, size), 255, dtype=torch.uint8)
    for c, v in enumerate(colour):
        img[c][disc] = v
    return img


def test_a_view_depends_on_its_seed_alone():
    aug, shot, other = ShelfAugment(), _packshot(), _packshot(colour=(20, 160, 40))
    torch.manual_seed(123)
    a = aug.view(shot, 7, [other, other, other])
    torch.manual_seed(999)  # another global state: the view must not read it
    b = aug.view(shot, 7, [other, other, other])
    assert torch.equal(a, b)
    torch.manual_seed(999)
    aug.view(shot, 7, [other])
    assert torch.equal(torch.get_rng_state(), _state_after_seed(999))  # the caller's generator is untouched
    assert not torch.equal(a, aug.view(shot, 8, [other, other, other]))
    assert a.shape == (3, aug.size, aug.size) and a.dtype == torch.uint8


def _state_after_seed(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.get_rng_state()


def test_views_differ_from_the_packshot_and_keep_the_product():
    from torchvision.transforms.v2 import functional as F

    aug, shot = ShelfAugment(), _packshot()
    plain = F.resize(shot, [aug.size, aug.size], antialias=True).float()
    views = [aug.view(shot, s, [_packshot(colour=(20, 40, 200))] * 3).float() for s in range(8)]
    # no view is the packshot resized, and the views differ among themselves
    assert min((v - plain).abs().mean().item() for v in views) > 10
    assert min((views[i] - views[j]).abs().mean().item() for i in range(8) for j in range(i)) > 5
    # the product (red, much more red than green) is still in every view: jitter moves hue by at most 0.05
    assert all(((v[0] > v[1] + 60) & (v[0] > v[2] + 60)).float().mean() > 0.03 for v in views)


def test_the_backdrop_is_not_pasted():
    # a canvas of noise background only (no photo background, no clutter), product scale 1 and no later
    # distortion: every pixel left white would be the packshot's white backdrop
    aug = ShelfAugment(background_p=1.0, photo_background_p=1.0, clutter=0, perspective_p=0, crop_scale=(1.0, 1.0),
                       brightness=0, contrast=0, saturation=0, hue=0, blur_p=0, product_scale=(1.0, 1.0))
    black = torch.zeros((3, 64, 64), dtype=torch.uint8)
    view = aug.view(_packshot(), 3, [black])
    white = (view >= 250).all(0).float().mean().item()
    red = ((view[0] > 150) & (view[1] < 80)).float().mean().item()
    assert white < 0.01  # the disc's white surround was left out
    assert 0.2 < red < 0.5  # the disc is there: pi/9 of the square is ~0.35


def test_other_products_are_picked_by_rendezvous():
    pool = [f"h{i}" for i in range(40)]
    picked = pick_others("h3", pool, seed=11, n=3)
    assert len(picked) == 3 and "h3" not in picked and len(set(picked)) == 3
    assert pick_others("h3", pool, seed=11, n=3) == picked
    # removing an image that was not picked changes nothing; adding one changes at most one pick
    spare = next(h for h in pool if h not in picked and h != "h3")
    assert pick_others("h3", [h for h in pool if h != spare], seed=11, n=3) == picked
    assert len(set(pick_others("h3", [*pool, "new"], seed=11, n=3)) ^ set(picked)) in (0, 2)
    assert background_pool(pool, 10) == background_pool(list(reversed(pool)), 10)


@pytest.mark.slow
def test_view_features_are_cached_and_deterministic(lite0, image_set, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    items = [*image_set, None]
    first = extract_views(items, lite0, 3, seed=5, cache=cache)
    assert (first.n_computed, first.n_cached) == (12, 0)
    assert first.of.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # the absent item gets none
    assert first.view.tolist() == [0, 1, 2] * 4
    again = extract_views(items, lite0, 3, seed=5, cache=cache)
    assert (again.n_computed, again.n_cached) == (0, 12)
    np.testing.assert_array_equal(first.features, again.features)
    # computed afresh in an empty cache: the same vectors (up to float summation order)
    fresh = extract_views(items, lite0, 3, seed=5, cache=FeatureCache(tmp_path / "other"))
    np.testing.assert_allclose(first.features, fresh.features, rtol=1e-4, atol=1e-4)
    # another seed: other views, a cache miss
    other = extract_views(items, lite0, 3, seed=6, cache=cache)
    assert other.n_computed == 12 and not np.allclose(other.features, first.features)
    # more views per image reuses the first ones
    more = extract_views(items, lite0, 4, seed=5, cache=cache)
    assert (more.n_computed, more.n_cached) == (4, 12)


def test_view_features_differ_from_the_photo_features(lite0, image_set):
    plain = extract_features(image_set, lite0, progress=False).features
    views = extract_views(image_set, lite0, 2, seed=0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = (unit(views.features) * unit(plain[views.of])).sum(1)
    assert cos.max() < 0.99
    # the prepared input is the encoder's own preprocessing: a view with no distortion encodes like the file
    flat = ShelfAugment(background_p=0, perspective_p=0, crop_scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue=0,
                        blur_p=0, size=96)
    red = extract_views(image_set[:1], lite0, 1, spec=flat)
    assert float((unit(red.features) * unit(plain[:1])).sum()) > 0.99
    assert decode_image(image_set[0]).shape[1:] == (96, 96)


def test_grouped_holdout_keeps_each_product_whole():
    rng = np.random.default_rng(0)
    n_products = 60
    product_class = rng.integers(0, 5, n_products)
    product_class[:2] = 5  # class 5 has 2 products: too few to hold one out
    product_class[2] = 6  # class 6 has 1
    groups = np.concatenate([np.arange(n_products), np.repeat(np.arange(n_products), 4)])  # each product and 4 views
    y = product_class[groups]
    held = grouped_holdout(y, groups, 0.1, seed=3)
    for g in range(n_products):
        assert held[groups == g].all() or not held[groups == g].any()  # a product is held out whole or not at all
    held_products = {int(g) for g in groups[held]}
    for cls in range(7):
        members = np.flatnonzero(product_class == cls)
        k = len(held_products & set(members.tolist()))
        assert k == (0 if len(members) < 3 else min(max(1, round(0.1 * len(members))), len(members) - 2))
    np.testing.assert_array_equal(held, grouped_holdout(y, groups, 0.1, seed=3))


def _toy(n_classes: int, per_class: int, views: int, seed: int = 0):
    """Products of ``n_classes`` Gaussian classes, each with ``views`` noisy copies as its views."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16)) * 3
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] + rng.normal(size=(len(y), 16))
    of = np.repeat(np.arange(len(y)), views)
    xv = x[of] + rng.normal(size=(len(of), 16)) * 0.3
    return x.astype(np.float32), y, xv.astype(np.float32), of, centres


def test_fit_task_holds_out_products_with_their_views_and_scores_photos_only():
    from prodkg.prediction.heads import fit_task

    x, y, xv, of, centres = _toy(4, 10, 3)
    rng = np.random.default_rng(1)
    yt = np.repeat(np.arange(4), 5)
    xt = (centres[yt] + rng.normal(size=(len(yt), 16))).astype(np.float32)
    feats = MultiModal.complete(image=np.concatenate([x, xv, xt]))
    names = [f"c{c}" for c in y]
    labels = names + [names[r] for r in of] + [f"c{c}" for c in yt]
    n, m = len(y), len(of)
    is_source = np.r_[np.ones(n + m, bool), np.zeros(len(yt), bool)]
    view_of = np.r_[np.full(n, -1), of, np.full(len(yt), -1)]
    ids = [f"p{i}" for i in range(n + m + len(yt))]
    res = fit_task("category", feats, labels, is_source, ~is_source, ids, TrainConfig(method="source_only", epochs=3), view_of=view_of)
    held = res.metrics["n_source_val"]
    assert held == 4  # one product of each class of 10: round(0.1 * 10)
    # a held-out product's 3 views are not trained on, and only its photo is scored
    assert res.metrics["n_source_train"] == (n - held) + (m - 3 * held)
    assert res.metrics["n_source_train_views"] == m - 3 * held
    assert len(res.evidence["source_labels"]) == held
    assert list(res.predictions["product_id"]) == ids[n + m:]  # views are never predicted


def test_auto_holds_out_nothing_when_each_class_has_one_product():
    from prodkg.adaptation import train

    x, y, xv, of, _ = _toy(5, 1, 6)
    src = MultiModal.complete(image=np.concatenate([x, xv]))
    ys = np.concatenate([y, y[of]])
    groups = np.concatenate([np.arange(len(y)), of])
    tgt = MultiModal.complete(image=xv[::2] + 0.5)
    model = train(src, ys, tgt, 5, TrainConfig(method="auto", epochs=1), groups=groups)
    assert model.selection["n_source_val"] == 0  # held-out views of trained products would be no hold-out
    assert model.selection["n_source_train"] == len(ys)
    rows = train(src, ys, tgt, 5, TrainConfig(method="auto", epochs=1))  # without groups any row may be held out
    assert rows.selection["n_source_val"] > 0


@pytest.mark.parametrize("k", [0, -1, True])
def test_bad_view_count_is_refused(lite0, image_set, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        extract_views(image_set, lite0, k)
