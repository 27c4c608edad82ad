"""Unknown products: target items unlike every source class get an explicit "unknown" outcome.

The score is the cosine similarity of an item's frozen features to the nearest source class prototype
(the class mean of the L2-normalised source features, per modality): the nearest-class-mean feature distance of
Mensink et al. (TPAMI 2013), the identity-covariance case of the Mahalanobis out-of-distribution score
(Lee et al., NeurIPS 2018). It reads the frozen encoder features, not the adapted head, because domain
adaptation pulls unknown target items towards the source classes (the negative transfer of open-set
adaptation, Busto & Gall ICCV 2017, Saito et al. ECCV 2018).

The bar is label-free (:func:`unknown_threshold`):

* the source's own spread: the ``quantile`` (default 1 %) of the similarity of each source item to its
  own class prototype computed without it (leave one out), less the distance from that quantile to the median;
* scaled by the domain shift, the ratio of the 90th percentiles of target and source similarities (never
  above 1: a target more compact than the source does not raise the bar);
* and, when the target has at least ``min_target`` items, no higher than Otsu's split of the target's
  similarities (Otsu, IEEE SMC 1979), which falls between the two modes when the target holds a group
  of unknown products; when the target's similarities clearly fall into two groups (Otsu's separability at
  least :data:`BIMODAL`), the split itself is the bar;
* with fewer target items than that the shift cannot be measured and is not applied.

Items below the bar are unknown; docs/BENCHMARKS.md measures the flags on the open-set protocols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BIMODAL", "UnitFeatures", "UnknownScores", "class_prototypes", "fused_unit_features", "nearest_prototype", "nearest_prototype_similarity", "otsu_threshold",
           "prototype_similarity", "score_unknown", "separability", "subset", "target_bar", "unknown_threshold"]


#: Rows per chunk: every function below works on this many rows at a time in float64, never on a float64 copy of
#: the whole catalog (at a million products of 384 dimensions such copies held 11 GiB at once).
CHUNK_ROWS = 8_192

#: ... and at most this many bytes per float64 chunk of the widest modality: 8,192 rows of 384 dimensions; a photo's
#: 1,280 dimensions get 2,457 rows (a chunk's five or six temporaries at 8,192 rows were 0.4 GiB)
CHUNK_BYTES = 8_192 * 384 * 8


class UnitFeatures:
    """Per-modality features read as L2-normalised float64 rows, a chunk at a time, without copying the blocks.

    ``blocks`` / ``present``: ``(N, D_m)`` arrays and ``(N,)`` masks per modality; ``rows`` (optional) the rows of
    them this object stands for, in order. With ``normalise`` a row is divided by its norm, and a row of norm 0
    counts as absent; without it the rows are taken as given (already unit vectors).
    """

    def __init__(self, blocks: dict[str, np.ndarray], present: dict[str, np.ndarray], rows: np.ndarray | None = None, *,
                 normalise: bool = True) -> None:
        self.blocks, self.present, self.normalise = blocks, present, normalise
        self.rows = None if rows is None else _as_indices(rows)
        self.modalities = sorted(blocks)

    def __len__(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        return len(next(iter(self.blocks.values()))) if self.blocks else 0

    def subset(self, rows: np.ndarray) -> UnitFeatures:
        """The rows ``rows`` (indices or a mask) of this object, still without a copy of the features."""
        rows = _as_indices(rows)
        return UnitFeatures(self.blocks, self.present, rows if self.rows is None else self.rows[rows], normalise=self.normalise)

    def chunks(self):
        """``(start, stop, {modality: (unit rows (n, D) float64, usable (n,) bool)})`` over consecutive chunks."""
        index = self.rows
        n = len(self)
        width = max((int(self.blocks[m].shape[1]) for m in self.modalities), default=1)
        step = max(1, min(CHUNK_ROWS, CHUNK_BYTES // (8 * max(width, 1))))
        for a in range(0, n, step):
            b = min(n, a + step)
            take = slice(a, b) if index is None else index[a:b]
            out = {}
            for m in self.modalities:
                x = np.asarray(self.blocks[m][take], dtype=np.float64)
                ok = np.asarray(self.present[m][take], dtype=bool)
                if self.normalise:
                    norm = np.linalg.norm(x, axis=1, keepdims=True)
                    ok = ok & (norm[:, 0] > 0)
                    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
                out[m] = (x, ok)
            yield a, b, out


def _as_indices(rows) -> np.ndarray:
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == np.bool_ else rows


def fused_unit_features(blocks: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> UnitFeatures:
    """Per modality: L2-normalised features and presence, the input of :func:`prototype_similarity` (read lazily)."""
    return UnitFeatures(blocks, present)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def _as_modalities(x) -> UnitFeatures:
    if isinstance(x, UnitFeatures):
        return x
    if isinstance(x, dict):  # {modality: (unit rows, mask)}
        return UnitFeatures({m: f for m, (f, _) in x.items()}, {m: p for m, (_, p) in x.items()}, normalise=False)
    x = np.asarray(x, np.float64)
    return UnitFeatures({"features": x}, {"features": np.ones(len(x), bool)}, normalise=False)


def _class_sums(src: UnitFeatures, own: np.ndarray, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality, the (K, D) sum of each class's usable unit rows and the (K,) count of them."""
    sums = {m: np.zeros((k, src.blocks[m].shape[1])) for m in src.modalities}
    counts = {m: np.zeros(k) for m in src.modalities}
    for a, b, chunk in src.chunks():
        for m, (x, ok) in chunk.items():
            onehot = np.zeros((b - a, k))
            onehot[np.flatnonzero(ok), own[a:b][ok]] = 1.0
            sums[m] += onehot.T @ x
            counts[m] += onehot.sum(0)
    return {m: (sums[m], counts[m]) for m in src.modalities}


def _nearest(prototypes: dict[str, tuple[np.ndarray, np.ndarray]], tgt: UnitFeatures, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each target row's best class similarity (per class the mean over the row's modalities, then the max), and
    that class's index: the nearest-prototype classifier, which the label-free estimate uses as a third opinion."""
    out, which = np.zeros(len(tgt)), np.zeros(len(tgt), np.int64)
    for a, b, chunk in tgt.chunks():
        t_sum, t_cnt = np.zeros((b - a, k)), np.zeros((b - a, 1))
        for m in sorted(prototypes):
            protos, has = prototypes[m]
            xt, pt = chunk[m]
            t_sum += np.where(pt[:, None] & has[None, :], xt @ protos.T, 0.0)
            t_cnt += pt[:, None]
        sims = t_sum / np.maximum(t_cnt, 1)
        which[a:b] = sims.argmax(axis=1)
        out[a:b] = sims[np.arange(b - a), which[a:b]]
    return out, which


def prototype_similarity(source, source_labels: np.ndarray, target) -> tuple[np.ndarray, np.ndarray]:
    """(target similarity to its nearest source prototype, each source item's leave-one-out similarity to its own).

    ``source`` / ``target``: an (N, D) array of L2-normalised rows, a dict ``{modality: (unit rows, mask)}``, or
    :func:`fused_unit_features` of several modalities. With several, an item's similarity to a class is the mean of
    its cosine similarities to the class's per-modality prototypes over the modalities it has (a product without a
    photo is judged on its text alone, not penalised for the missing photo). A class with a single source item has no
    leave-one-out prototype; its item's similarity to the nearest other class stands in.
    """
    return _similarities(_as_modalities(source), np.asarray(source_labels), _as_modalities(target))[:2]


def _similarities(src: UnitFeatures, labels: np.ndarray, tgt: UnitFeatures):
    """:func:`prototype_similarity`'s two arrays, the class prototypes of :func:`class_prototypes`, and each target
    item's nearest class (its label)."""
    classes, own = np.unique(labels, return_inverse=True)
    k, n_s = len(classes), len(labels)
    sums = _class_sums(src, own, k)
    prototypes = {m: (_unit(total), count > 0) for m, (total, count) in sums.items()}
    target_sim, nearest = _nearest(prototypes, tgt, k) if len(tgt) else (np.zeros(0), np.zeros(0, np.int64))
    s_sum, s_cnt = np.zeros(n_s), np.zeros(n_s)
    n_classes_with = {m: int(has.sum()) for m, (_, has) in prototypes.items()}
    for a, b, chunk in src.chunks():
        own_c = own[a:b]
        for m, (xs, ps) in chunk.items():
            total, counts = sums[m]
            protos = prototypes[m][0]
            loo_ok = ps & (counts[own_c] > 1)
            loo = _unit(total[own_c] - xs)
            # an item alone in its class: its similarity to the nearest other class stands in (how close the
            # source's own categories sit; grocery's catalog has one photo per class)
            single = ps & (counts[own_c] == 1) & (n_classes_with[m] > 1)
            nearest_other = np.where(np.arange(k)[None, :] == own_c[:, None], -np.inf, xs @ protos.T).max(1)
            s_sum[a:b] += np.where(loo_ok, (xs * loo).sum(1), np.where(single, nearest_other, 0.0))
            s_cnt[a:b] += loo_ok | single
    keep = s_cnt > 0
    return target_sim, (s_sum / np.maximum(s_cnt, 1))[keep], prototypes, classes[nearest]


def class_prototypes(source, source_labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality, the source class prototypes (K, D) -- unit class means, in the order of ``np.unique(labels)`` --
    and which classes have the modality at all (K,): what a saved model needs to score new items'
    similarity (:func:`nearest_prototype_similarity`) without the source rows."""
    labels = np.asarray(source_labels)
    classes, own = np.unique(labels, return_inverse=True)
    return {m: (_unit(total), count > 0) for m, (total, count) in _class_sums(_as_modalities(source), own, len(classes)).items()}


def nearest_prototype(prototypes: dict[str, tuple[np.ndarray, np.ndarray]], target) -> tuple[np.ndarray, np.ndarray]:
    """Each target item's similarity to its nearest prototype of :func:`class_prototypes` (the target half of
    :func:`prototype_similarity`, with the same arithmetic: the mean over the item's modalities, then the max) and that
    prototype's index into their classes (the sorted source labels): the third classifier's answer. One pass for both."""
    tgt = _as_modalities(target)
    if not len(tgt) or not prototypes:
        return np.zeros(len(tgt)), np.full(len(tgt), -1, np.int64)
    return _nearest(prototypes, tgt, len(next(iter(prototypes.values()))[1]))


def nearest_prototype_similarity(prototypes: dict[str, tuple[np.ndarray, np.ndarray]], target) -> np.ndarray:
    """The similarity half of :func:`nearest_prototype`."""
    return nearest_prototype(prototypes, target)[0]


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """The split of ``values`` that maximises the between-group variance (Otsu 1979)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or values.min() == values.max():
        return float("-inf")
    hist, edges = np.histogram(values, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w = hist / hist.sum()
    best, split = -1.0, float("-inf")
    for i in range(1, bins):
        w0, w1 = w[:i].sum(), w[i:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0, m1 = (w[:i] * centres[:i]).sum() / w0, (w[i:] * centres[i:]).sum() / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best:
            best, split = between, float(edges[i])
    return split


@dataclass
class UnknownScores:
    """Per-target-item similarity, the bar, and which items fall below it."""

    similarity: np.ndarray
    threshold: float
    unknown: np.ndarray
    details: dict
    source_similarity: np.ndarray | None = None  # each source item's leave-one-out similarity (the reference)
    prototypes: dict | None = None  # the source class prototypes (:func:`class_prototypes`), for scoring new rows later
    nearest: np.ndarray | None = None  # each target item's nearest prototype's class label (a third classifier, for the estimate)
    known_probability: np.ndarray | None = None  # each target item's probability of a known class (:func:`known_probability`)

    def manifest(self) -> dict:
        return {"method": "nearest source prototype (cosine, frozen features)", "threshold": round(float(self.threshold), 6),
                "n_unknown": int(self.unknown.sum()), "n_target": int(len(self.unknown)),
                **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.details.items()}}


#: Otsu's separability (between-group over total variance of the target similarities) above which the target is
#: taken to hold a group of unknown products. A unimodal normal distribution gives 2/pi = 0.64; on office-caltech-10
#: the 12 closed-set targets gave 0.63-0.71 and the 12 open-set ones 0.72-0.88; grocery 0.65 closed and 0.75 with
#: Packages left out of the source; instacart 0.63.
BIMODAL = 0.72


def separability(values: np.ndarray, split: float) -> float:
    """Otsu's separability of ``values`` split at ``split``: between-group variance over total variance, in [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    low, high = values[values < split], values[values >= split]
    if len(low) == 0 or len(high) == 0 or values.var() == 0:
        return 0.0
    w0, w1 = len(low) / len(values), len(high) / len(values)
    return float(w0 * w1 * (low.mean() - high.mean()) ** 2 / values.var())


def target_bar(target_sim: np.ndarray, shifted_bar: float, *, bimodal: float = BIMODAL) -> tuple[float, dict]:
    """The bar for a target large enough to have a distribution: Otsu's split when the target's similarities fall
    into two clear groups (separability >= ``bimodal``: some products are unlike the source), else the lower of
    ``shifted_bar`` (the source's bar, scaled by the domain shift) and that split."""
    split = otsu_threshold(target_sim)
    eta = separability(target_sim, split)
    details = {"otsu_split": split, "separability": eta}
    if eta >= bimodal:
        return split, {**details, "rule": "two groups in the target: Otsu's split"}
    return min(shifted_bar, split), {**details, "rule": "one group: the shift-scaled source bar (or Otsu's split if lower)"}


def unknown_threshold(target_sim: np.ndarray, source_sim: np.ndarray, *, quantile: float = 0.01, min_target: int = 50,
                      bimodal: float = BIMODAL) -> tuple[float, dict]:
    """The label-free bar below which a target item is unknown, and how it was reached (see the module docstring)."""
    target_sim, source_sim = np.asarray(target_sim, np.float64), np.asarray(source_sim, np.float64)
    if len(source_sim) == 0:
        return float("-inf"), {"reason": "the source has a single class with a single item"}
    base = float(np.quantile(source_sim, quantile))
    median = float(np.median(source_sim))
    # a margin as wide as the source's own spread (median to the quantile) below the quantile: without a group of
    # unknown products in sight, only a product that far from every category is called unknown
    margin_bar = base - (median - base)
    details: dict = {"source_quantile": quantile, "source_bar": base, "source_median": median}
    if len(target_sim) < min_target:  # too few target items to measure the shift
        return margin_bar, {**details, "rule": "small target: source bar minus the source's spread"}
    scale = float(min(1.0, np.quantile(target_sim, 0.9) / max(np.quantile(source_sim, 0.9), 1e-12)))
    bar, more = target_bar(target_sim, margin_bar * scale, bimodal=bimodal)
    return bar, {**details, "shift_scale": scale, **more}


def known_probability(target_sim: np.ndarray, bar: float, details: dict, *, iterations: int = 200) -> np.ndarray:
    """Each target item's probability of being of a known class, from its similarity alone.

    Where the target's similarities fall into two groups (the bar is Otsu's split, see :func:`target_bar`), a mixture
    of two normal distributions is fitted to them (EM, started from the two sides of the split) and an item's
    probability is the posterior of the upper group, made non-decreasing in the similarity (a wide lower group's tail
    must not make the most similar items look unknown). The flag is a hard cut at the bar; this says how sure it is
    above the bar, where unknown products that resemble a source category sit beside known ones: the publication rule
    weighs each item's estimated correctness by it. A single group: 1 for every item (no unknown products in sight)."""
    x = np.asarray(target_sim, np.float64)
    if not str(details.get("rule", "")).startswith("two groups") or len(x) < 4:
        return np.ones(len(x))
    lo, hi = x[x < bar], x[x >= bar]
    if len(lo) < 2 or len(hi) < 2:
        return np.ones(len(x))
    floor = 1e-6 * max(float(x.var()), 1e-12)
    w = np.array([len(lo), len(hi)], np.float64) / len(x)
    mu = np.array([lo.mean(), hi.mean()])
    var = np.array([lo.var(), hi.var()]) + floor
    for _ in range(iterations):
        logp = -0.5 * ((x[:, None] - mu) ** 2 / var + np.log(2 * np.pi * var)) + np.log(w)
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0)
        if (nk < 1e-9).any():
            return np.ones(len(x))
        w, mu = nk / len(x), (r * x[:, None]).sum(0) / nk
        var = (r * (x[:, None] - mu) ** 2).sum(0) / nk + floor
    upper = int(np.argmax(mu))
    post = r[:, upper]
    order = np.argsort(x, kind="stable")
    post[order] = np.maximum.accumulate(post[order])
    return post


def score_unknown(source, source_labels: np.ndarray, target, **kwargs) -> UnknownScores:
    """Similarities, the bar and the unknown flags (``source`` / ``target`` as :func:`prototype_similarity` takes them)."""
    target_sim, source_sim, prototypes, nearest = _similarities(_as_modalities(source), np.asarray(source_labels), _as_modalities(target))
    bar, details = unknown_threshold(target_sim, source_sim, **kwargs)
    kp = known_probability(target_sim, bar, details)
    details = {**details, "expected_unknown_unflagged": float((1.0 - kp[target_sim >= bar]).sum())}
    return UnknownScores(similarity=target_sim, threshold=bar, unknown=target_sim < bar, details=details, source_similarity=source_sim,
                         prototypes=prototypes, nearest=nearest, known_probability=kp)



def subset(modalities, rows: np.ndarray) -> UnitFeatures:
    """The rows ``rows`` of :func:`fused_unit_features` output (or of a ``{modality: (unit rows, mask)}`` dict)."""
    return _as_modalities(modalities).subset(np.asarray(rows))
