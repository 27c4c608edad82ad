"""The unknown scores stream over chunks of rows: they must equal a dense reference computed on whole arrays."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.prediction import unknown as unk


def _dense(blocks, present, src, labels, tgt):
    """The scores written out on whole float64 arrays: class prototypes per modality, the target's best class
    similarity averaged over its modalities, and each source row's leave-one-out similarity to its own class."""
    classes = sorted(set(labels))
    own = np.array([classes.index(v) for v in labels])
    k = len(classes)
    t_sum, t_cnt = np.zeros((len(tgt), k)), np.zeros((len(tgt), 1))
    s_sum, s_cnt = np.zeros(len(src)), np.zeros(len(src))
    protos_out = {}
    for m in sorted(blocks):
        x = blocks[m].astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        ok = present[m] & (norms > 0)
        unit = np.zeros_like(x)
        unit[norms > 0] = x[norms > 0] / norms[norms > 0, None]
        xs, ps, xt, pt = unit[src], ok[src], unit[tgt], ok[tgt]
        sums = np.stack([xs[(own == c) & ps].sum(0) for c in range(k)])
        counts = np.array([((own == c) & ps).sum() for c in range(k)])
        protos = np.array([s / np.linalg.norm(s) if np.linalg.norm(s) > 0 else s for s in sums])
        protos_out[m] = (protos, counts > 0)
        t_sum += np.where(pt[:, None] & (counts > 0)[None, :], xt @ protos.T, 0.0)
        t_cnt += pt[:, None]
        for i in range(len(src)):
            if not ps[i]:
                continue
            if counts[own[i]] > 1:
                rest = sums[own[i]] - xs[i]
                s_sum[i] += xs[i] @ (rest / np.linalg.norm(rest))
                s_cnt[i] += 1
            elif (counts > 0).sum() > 1:
                s_sum[i] += max(xs[i] @ protos[c] for c in range(k) if c != own[i])
                s_cnt[i] += 1
    t_mean = t_sum / np.maximum(t_cnt, 1)
    return t_mean.max(1), (s_sum / np.maximum(s_cnt, 1))[s_cnt > 0], protos_out, [classes[c] for c in t_mean.argmax(1)]


@pytest.mark.parametrize("rows, nbytes, packed", [
    (7, 10**9, False),  # many chunks by rows, the last one partial
    (10**6, 8 * 6 * 5, False),  # chunks of 5 rows by the bytes of the widest modality (6 float64 columns)
    (7, 10**9, True),  # the image block packed (its present rows only)
])
def test_chunked_scores_equal_the_dense_reference(monkeypatch, rows, nbytes, packed):
    from prodkg.blocks import PackedBlock

    monkeypatch.setattr(unk, "CHUNK_ROWS", rows)
    monkeypatch.setattr(unk, "CHUNK_BYTES", nbytes)
    rng = np.random.default_rng(5)
    n = 90
    blocks = {"image": rng.normal(size=(n, 6)).astype(np.float32), "text": rng.normal(size=(n, 4)).astype(np.float32)}
    present = {"image": rng.random(n) > 0.25, "text": rng.random(n) > 0.1}
    blocks["text"][3] = 0.0  # a zero row counts as absent
    dense = dict(blocks)  # the reference reads these
    if packed:
        blocks["image"] = PackedBlock.pack(blocks["image"], present["image"])
    src = rng.permutation(n)[:60]  # not in order: the rows are gathered, not sliced
    tgt = np.setdiff1d(np.arange(n), src)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)].astype(object)
    labels[11] = "lonely"  # a class with a single item: its nearest other class stands in
    unit = unk.fused_unit_features(blocks, present)
    scores = unk.score_unknown(unk.subset(unit, src), labels.astype(str), unk.subset(unit, tgt))
    want_t, want_s, want_p, want_class = _dense(dense, present, src, labels.astype(str).tolist(), tgt)
    np.testing.assert_allclose(scores.similarity, want_t, rtol=1e-10, atol=1e-12)
    assert scores.nearest.tolist() == want_class  # the nearest-prototype classifier the triplet estimate consults
    np.testing.assert_allclose(scores.source_similarity, want_s, rtol=1e-10, atol=1e-12)
    for m, (protos, has) in want_p.items():
        np.testing.assert_allclose(scores.prototypes[m][0], protos, rtol=1e-10, atol=1e-12)
        assert scores.prototypes[m][1].tolist() == has.tolist()
    # the saved prototypes score the target as the run did
    got = unk.nearest_prototype_similarity(unk.class_prototypes(unk.subset(unit, src), labels.astype(str)), unk.subset(unit, tgt))
    np.testing.assert_allclose(got, want_t, rtol=1e-10, atol=1e-12)
    # a subset of a subset is the composed rows
    np.testing.assert_allclose(unk.nearest_prototype_similarity(scores.prototypes, unk.subset(unk.subset(unit, tgt), np.arange(5, 12))),
                               want_t[5:12], rtol=1e-10, atol=1e-12)


def test_tempered_top_probabilities_in_chunks_equal_the_whole_array(monkeypatch):
    from prodkg.prediction import estimates

    rng = np.random.default_rng(2)
    logp = estimates.log_softmax(rng.normal(scale=4, size=(101, 7)))
    for tau in (0.05, 1.0, 7.3):
        whole = estimates.log_softmax(np.maximum(logp, -700.0) / tau).max(1)
        monkeypatch.setattr(estimates, "_ROWS", 8)
        np.testing.assert_array_equal(estimates._top_tempered(logp, tau), whole)
        # and by the definition: the top class's tempered softmax probability
        z = logp / tau
        p = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(np.exp(estimates._top_tempered(logp, tau)), (p / p.sum(1, keepdims=True)).max(1), rtol=1e-12)


def test_concept_log_probabilities_in_chunks_equal_the_sum_of_their_classes(monkeypatch):
    from prodkg.prediction import backoff, estimates

    classes = ["apple", "pear", "leek", "milk", "cheese"]
    taxonomy = [("food", None), ("fruit", "food"), ("veg", "food"), ("dairy", "food"), ("apple", "fruit"), ("pear", "fruit"),
                ("leek", "veg"), ("milk", "dairy"), ("cheese", "dairy")]
    tax = backoff.TaxonomyLevels(classes, taxonomy)
    rng = np.random.default_rng(4)
    logp = estimates.log_softmax(rng.normal(scale=3, size=(53, 5)))
    monkeypatch.setattr(backoff, "_ROWS", 6)
    for level in range(tax.n_levels):
        got, _ = tax.aggregate_log(logp, level)
        m, _ = tax.membership(level)
        np.testing.assert_allclose(np.exp(got), np.exp(logp) @ m, rtol=1e-12, atol=1e-15)  # each concept: its classes' sum
    monkeypatch.setattr(estimates, "_ROWS", 6)
    np.testing.assert_allclose(estimates.score(logp, "ne"), (np.exp(logp) * logp).sum(1), rtol=1e-14)


def test_a_heads_scores_in_chunks_equal_the_whole_matrix(monkeypatch):
    """fit_task scores the target and the source hold-out a chunk of rows at a time (a million-product run's peak was
    the whole-matrix temporaries): the probabilities, log-probabilities and metrics equal those of whole matrices."""
    from prodkg.adaptation import MultiModal, Rows, TrainConfig
    from prodkg.adaptation.model import softmax
    from prodkg.prediction import estimates
    from prodkg.prediction.heads import fit_task

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 12))
    y = rng.integers(0, 4, 300)
    x = (centres[y] + 0.6 * rng.normal(size=(300, 12))).astype(np.float32)
    feats = MultiModal(blocks={"text": x}, present={"text": np.ones(300, bool)})
    is_source = np.arange(300) < 200
    labels = [f"c{k}" for k in y]
    ids = [f"p{i}" for i in range(300)]
    cfg = TrainConfig(method="source_only", epochs=3, seed=0)
    monkeypatch.setattr(estimates, "_ROWS", 7)  # many chunks, the last one partial
    result = fit_task("category", feats, labels, is_source, ~is_source, ids, cfg)
    logits = result.model.logits(Rows(feats, np.flatnonzero(~is_source)))
    whole_logp = estimates.log_softmax(logits / result.temperature)  # one call over every row, as before the chunks
    np.testing.assert_array_equal(result.evidence["target_logp"], whole_logp)
    probs = softmax(logits, result.temperature)
    np.testing.assert_array_equal(result.predictions["confidence"].to_numpy(), probs.max(1).astype(float))
    assert result.predictions["value"].tolist() == [result.labels.classes[k] for k in probs.argmax(1)]
    # and by the definition: a softmax of the tempered logits (divided in float64 here, in float32 by the head)
    z = logits.astype(np.float64) / result.temperature
    ref = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(np.exp(result.evidence["target_logp"]), ref / ref.sum(1, keepdims=True), rtol=1e-5)


def test_label_lists_share_one_string_per_distinct_value():
    import pandas as pd

    from prodkg.prediction.stage import _label_list

    values = ["mug", None, "", "tee", "mug", float("nan"), "tee"]
    for column in (pd.Series(values, dtype="str"), pd.Series(values, dtype=object), pd.Series([1, None, 3])):
        # a non-empty string or None per row, as the predict stage has always read a label column
        want = [v if isinstance(v, str) and v else None for v in column.astype(object).where(column.notna(), None).tolist()]
        got = _label_list(column)
        assert got == want
        mugs = [v for v in got if v == "mug"]
        assert all(v is mugs[0] for v in mugs)  # one object per distinct value, however many rows carry it


def test_log_probabilities_are_told_from_probabilities_without_a_mask_of_the_matrix():
    from prodkg.prediction.estimates import _as_logp

    probs = np.array([[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(_as_logp(probs), np.log(np.clip(probs, 1e-300, 1.0)))
    logp = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    assert _as_logp(logp) is not None and np.array_equal(_as_logp(logp), logp)
    with_nan = logp.copy()
    with_nan[0, 0] = np.nan  # a NaN does not hide the negative entries
    np.testing.assert_array_equal(_as_logp(with_nan)[1], logp[1])
