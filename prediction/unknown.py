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

__all__ = ["BIMODAL", "UnknownScores", "class_prototypes", "fused_unit_features", "nearest_prototype_similarity", "otsu_threshold",
           "prototype_similarity", "score_unknown", "separability", "subset", "target_bar", "unknown_threshold"]


def fused_unit_features(blocks: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality: (L2-normalised features, presence mask), the input of :func:`prototype_similarity`."""
    out = {}
    for modality in sorted(blocks):
        b = np.asarray(blocks[modality], dtype=np.float64)
        n = np.linalg.norm(b, axis=1, keepdims=True)
        ok = np.asarray(present[modality], dtype=bool) & (n[:, 0] > 0)
        out[modality] = (np.divide(b, n, out=np.zeros_like(b), where=n > 0), ok)
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def _as_modalities(x) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if isinstance(x, dict):
        return x
    x = np.asarray(x, np.float64)
    return {"features": (x, np.ones(len(x), bool))}


def _subset(m: dict, rows: np.ndarray) -> dict:
    return {k: (f[rows], p[rows]) for k, (f, p) in m.items()}


def prototype_similarity(source, source_labels: np.ndarray, target) -> tuple[np.ndarray, np.ndarray]:
    """(target similarity to its nearest source prototype, each source item's leave-one-out similarity to its own).

    ``source`` / ``target``: an (N, D) array of L2-normalised rows, or :func:`fused_unit_features` of several
    modalities. With several, an item's similarity to a class is the mean of its cosine similarities to the
    class's per-modality prototypes over the modalities it has (a product without a photo is judged on its
    text alone, not penalised for the missing photo). A class with a single source item has no
    leave-one-out prototype; its item's similarity to the nearest other class stands in.
    """
    src, tgt = _as_modalities(source), _as_modalities(target)
    labels = np.asarray(source_labels)
    classes, own = np.unique(labels, return_inverse=True)
    n_t = len(next(iter(tgt.values()))[0]) if tgt else 0
    n_s = len(labels)
    t_sum, t_cnt = np.zeros((n_t, len(classes))), np.zeros((n_t, 1))
    s_sum, s_cnt = np.zeros(n_s), np.zeros(n_s)
    for modality, (xs, ps) in src.items():
        xt, pt = tgt[modality]
        onehot = np.zeros((n_s, len(classes)))
        onehot[np.flatnonzero(ps), own[ps]] = 1.0
        sums = onehot.T @ xs  # (K, D): per class, the sum of its items that have this modality
        counts = onehot.sum(0)
        has = counts > 0
        prototypes = _unit(sums)
        sim = xt @ prototypes.T  # (N_t, K)
        t_sum += np.where(pt[:, None] & has[None, :], sim, 0.0)
        t_cnt += pt[:, None]
        loo_ok = ps & (counts[own] > 1)
        loo = _unit(sums[own] - xs)
        # an item alone in its class: its similarity to the nearest other class stands in (how close the
        # source's own categories sit; grocery's catalog has one photo per class)
        single = ps & (counts[own] == 1) & (has.sum() > 1)
        nearest_other = np.where(np.arange(len(classes))[None, :] == own[:, None], -np.inf, xs @ prototypes.T).max(1)
        s_sum += np.where(loo_ok, (xs * loo).sum(1), np.where(single, nearest_other, 0.0))
        s_cnt += loo_ok | single
    target_sim = (t_sum / np.maximum(t_cnt, 1)).max(axis=1) if n_t else np.zeros(0)
    keep = s_cnt > 0
    return target_sim, (s_sum / np.maximum(s_cnt, 1))[keep]


def class_prototypes(source, source_labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality, the source class prototypes (K, D) -- unit class means, in the order of ``np.unique(labels)`` --
    and which classes have the modality at all (K,): what a saved model needs to score new items'
    similarity (:func:`nearest_prototype_similarity`) without the source rows."""
    src = _as_modalities(source)
    labels = np.asarray(source_labels)
    classes, own = np.unique(labels, return_inverse=True)
    out = {}
    for modality, (xs, ps) in src.items():
        onehot = np.zeros((len(labels), len(classes)))
        onehot[np.flatnonzero(ps), own[ps]] = 1.0
        out[modality] = (_unit(onehot.T @ xs), onehot.sum(0) > 0)
    return out


def nearest_prototype_similarity(prototypes: dict[str, tuple[np.ndarray, np.ndarray]], target) -> np.ndarray:
    """Each target item's similarity to its nearest prototype of :func:`class_prototypes`: the target half of
    :func:`prototype_similarity`, with the same arithmetic (the mean over the item's modalities, then the max)."""
    tgt = _as_modalities(target)
    n_t = len(next(iter(tgt.values()))[0]) if tgt else 0
    if not n_t or not prototypes:
        return np.zeros(n_t)
    k = len(next(iter(prototypes.values()))[1])
    t_sum, t_cnt = np.zeros((n_t, k)), np.zeros((n_t, 1))
    for modality in sorted(prototypes):
        protos, has = prototypes[modality]
        xt, pt = tgt[modality]
        t_sum += np.where(pt[:, None] & has[None, :], xt @ protos.T, 0.0)
        t_cnt += pt[:, None]
    return (t_sum / np.maximum(t_cnt, 1)).max(axis=1)


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


def score_unknown(source, source_labels: np.ndarray, target, **kwargs) -> UnknownScores:
    """Similarities, the bar and the unknown flags (``source`` / ``target`` as :func:`prototype_similarity` takes them)."""
    target_sim, source_sim = prototype_similarity(source, source_labels, target)
    bar, details = unknown_threshold(target_sim, source_sim, **kwargs)
    return UnknownScores(similarity=target_sim, threshold=bar, unknown=target_sim < bar, details=details, source_similarity=source_sim)



def subset(modalities: dict, rows: np.ndarray) -> dict:
    """The rows ``rows`` of :func:`fused_unit_features` output."""
    return _subset(modalities, np.asarray(rows))
