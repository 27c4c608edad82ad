"""Label-free estimates of a head's accuracy on the target catalog.

None of these reads a target label. Each takes what the pipeline has: class probabilities on
held-out *source* rows with their labels, and class probabilities on the (unlabelled) target.

* :func:`atc_estimate` -- Average Thresholded Confidence (Garg et al., ICLR 2022): the confidence
  threshold below which the source validation rows hold exactly as many items as they hold errors;
  the estimate is the share of target items above it. ``score="ne"`` (negative entropy) is the
  variant the paper recommends; ``"mc"`` is the maximum probability. :func:`atc_bootstrap_se` is its
  sampling error from the held-out rows (the threshold is one of their order statistics).
* :func:`doc_estimate` -- Difference of Confidences (Guillory et al., ICCV 2021): source accuracy
  minus the drop in mean confidence from source to target.
* :func:`agreement_estimate` -- the share of target items on which two independently trained
  heads agree (Jiang et al., ICLR 2022; Baek et al., NeurIPS 2022).
* :func:`match_accuracy` -- per-item correctness estimates: the target probabilities re-tempered so
  their mean confidence equals an accuracy estimate. :mod:`prediction.thresholds` averages these
  over the items above a threshold to estimate the precision of what would be published.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SCORES",
    "agreement_estimate",
    "apply_class_ratios",
    "atc_bootstrap_se",
    "atc_estimate",
    "atc_threshold",
    "class_error_ratios",
    "doc_estimate",
    "log_softmax",
    "match_accuracy",
    "match_accuracy_reliable",
    "score",
    "source_reliability",
    "triplet_estimate",
]


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(z))`` in float64, exact where ``softmax`` itself would round to 0 or 1.

    The top class's log-probability is ``-log1p(sum of the others' exp(z - max))``: a margin of 40 nats gives
    -4e-18, not the 0.0 that ``z - logsumexp(z)`` rounds to, so very confident predictions keep their order.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.size == 0:
        return z.copy()
    shifted, others = _shifted_and_others(z)
    return shifted - np.log1p(others)[:, None]


def _shifted_and_others(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``z`` less each row's maximum, and each row's sum of ``exp`` of that over every class but the top one."""
    rows = np.arange(len(z))
    top = z.argmax(axis=1)
    shifted = z - z[rows, top][:, None]
    e = np.exp(shifted)
    e[rows, top] = 0.0
    return shifted, e.sum(axis=1)


def _as_logp(probs_or_logp: np.ndarray) -> np.ndarray:
    """Log-probabilities from either probabilities (all entries in [0, 1]) or log-probabilities (all <= 0, some < 0)."""
    a = np.asarray(probs_or_logp, dtype=np.float64)
    if a.size and np.fmin.reduce(a, axis=None) < 0:  # the smallest entry (NaN left out), without an (N, C) mask
        return a
    return np.log(np.clip(a, 1e-300, 1.0))


#: Rows per chunk where a whole (N, C) float64 temporary would otherwise be made: :func:`_top_tempered`'s search
#: re-tempers every item some 15 times, and three copies of a million-item target's log-probabilities at each step
#: were the heads stage's peak. 8,192 rows of 133 classes are 8.7 MB per temporary (32,768 left 0.1 GiB of them at the
#: heads stage's last peak at a million products).
_ROWS = 8_192


def by_rows(fn, x: np.ndarray, rows: int | None = None, dtype=np.float64) -> np.ndarray:
    """``fn(x)`` computed ``rows`` rows at a time (default :data:`_ROWS`) into one ``dtype`` array: for a row-wise
    ``fn`` the same values, with its temporaries the size of a chunk instead of the whole matrix."""
    rows = rows or _ROWS
    first = np.asarray(fn(x[:rows]))
    out = np.empty((len(x), *first.shape[1:]), dtype=dtype)
    out[:len(first)] = first
    for a in range(rows, len(x), rows):
        out[a:a + rows] = fn(x[a:a + rows])
    return out


def _negative_entropy(logp: np.ndarray) -> np.ndarray:
    return by_rows(lambda part: (np.exp(part) * part).sum(axis=1), logp)


SCORES = {"mc": lambda logp: logp.max(axis=1), "ne": _negative_entropy}


def score(probs: np.ndarray, kind: str = "ne") -> np.ndarray:
    """Per-item confidence score of an (N, C) probability (or log-probability) matrix: ``mc`` the log of the
    max probability, ``ne`` negative entropy. Both are computed from log-probabilities, so items whose
    probabilities round to 1.0 keep their order."""
    if kind not in SCORES:
        raise ValueError(f"unknown score {kind!r}; expected one of {', '.join(SCORES)}")
    return SCORES[kind](_as_logp(probs))


def atc_threshold(source_scores: np.ndarray, source_correct: np.ndarray) -> float:
    """The threshold t with (share of source items scoring below t) = (source error rate).

    With distinct scores and k errors among n items, t is the (k+1)-th smallest score: exactly
    n - k items, the source accuracy's worth, score at or above it.
    """
    s = np.asarray(source_scores, dtype=np.float64)
    correct = np.asarray(source_correct, dtype=bool)
    if len(s) == 0 or len(s) != len(correct):
        raise ValueError(f"need as many source scores as correctness flags, got {len(s)} and {len(correct)}")
    k = int((~correct).sum())
    if k >= len(s):
        return float("inf")
    return float(np.partition(s, k)[k])  # the (k+1)-th smallest without sorting the rest (the bootstrap asks 200 times)


def atc_estimate(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray, *, kind: str = "ne") -> float:
    """ATC's estimate of target accuracy: the share of target items scoring at or above :func:`atc_threshold`."""
    source_probs = np.asarray(source_probs)
    correct = source_probs.argmax(axis=1) == np.asarray(source_labels)  # argmax is the same on log-probabilities
    t = atc_threshold(score(source_probs, kind), correct)
    return float((score(target_probs, kind) >= t).mean()) if len(target_probs) else float("nan")


def atc_bootstrap_se(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray, *, kind: str = "ne",
                     n_boot: int = 200, seed: int = 0, target_rows: np.ndarray | None = None) -> float:
    """The standard deviation of :func:`atc_estimate` over ``n_boot`` bootstrap resamples of the held-out source rows
    (the target items fixed): how much the estimate owes to which rows happened to be held out.

    ATC's threshold is the (k+1)-th smallest held-out score, k the number of held-out errors. With a few errors
    among a hundred rows that order statistic moves a long way from one hold-out to the next, and the estimate with
    it: on office-caltech-10 (about 100 held-out rows with 1-11 errors) resamples spread it by up to 8 points
    (docs/BENCHMARKS.md, "Trustworthy publication across seeds"). A binomial term for the hold-out's accuracy does not show
    this. The resamples are drawn from a fixed ``seed``, so a run repeats its figure. ``target_rows`` (a boolean mask)
    keeps only those target items, scored first so the (N, C) matrix is not copied. NaN with fewer than 2 rows.
    """
    source_lp = _as_logp(source_probs)
    labels = np.asarray(source_labels)
    if len(labels) < 2 or not len(target_probs):
        return float("nan")
    s_scores = score(source_lp, kind)
    correct = source_lp.argmax(axis=1) == labels
    t_scores = score(target_probs, kind)
    t_sorted = np.sort(t_scores if target_rows is None else t_scores[np.asarray(target_rows, bool)])
    if not len(t_sorted):
        return float("nan")
    rng = np.random.default_rng(seed)
    m, n = len(labels), len(t_sorted)
    estimates = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, m, m)
        t = atc_threshold(s_scores[rows], correct[rows])
        estimates[b] = (n - np.searchsorted(t_sorted, t, side="left")) / n  # the share scoring at or above t
    return float(estimates.std())


def doc_estimate(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray) -> float:
    """DoC: source accuracy - (mean source confidence - mean target confidence), clipped to [0, 1]."""
    source_lp, target_lp = _as_logp(source_probs), _as_logp(target_probs)
    acc = float((source_lp.argmax(1) == np.asarray(source_labels)).mean())
    # exp is increasing: the top probability is exp of the top log-probability (no (N, C) exp of the whole matrix)
    return float(np.clip(acc - (np.exp(source_lp.max(1)).mean() - np.exp(target_lp.max(1)).mean()), 0.0, 1.0))


def agreement_estimate(predicted_a, predicted_b) -> float:
    """Share of items on which two heads predict the same class."""
    a, b = np.asarray(predicted_a), np.asarray(predicted_b)
    if a.shape != b.shape:
        raise ValueError(f"the two prediction vectors differ in shape: {a.shape} and {b.shape}")
    return float((a == b).mean()) if len(a) else float("nan")


def triplet_estimate(predicted_a, predicted_b, predicted_c) -> float:
    """Accuracy of classifier ``a`` from the agreement rates of three classifiers on unlabelled items:
    ``sqrt(agree(a, b) * agree(a, c) / agree(b, c))``, clipped to [0, 1] (NaN where ``b`` and ``c`` never agree).

    Where the three are right or wrong independently of each other and two wrong answers never coincide (many
    classes), ``agree(x, y) = acc(x) acc(y)`` for every pair, and the ratio isolates ``acc(a)`` (the agreement
    rates of Platanios, Blum and Mitchell, "Estimating accuracy from unlabeled data", UAI 2014, solved for three
    classifiers). Agreement with one other head alone, ``agree(a, b)``, is ``acc(a) acc(b)``: it takes the weaker
    head's errors for the estimated head's own. Errors that go together (items hard for all three) push both the
    numerator and the denominator up; so does a shared wrong answer."""
    a, b, c = np.asarray(predicted_a), np.asarray(predicted_b), np.asarray(predicted_c)
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"the three prediction vectors differ in shape: {a.shape}, {b.shape} and {c.shape}")
    if not len(a):
        return float("nan")
    ab, ac, bc = float((a == b).mean()), float((a == c).mean()), float((b == c).mean())
    if bc == 0:
        return float("nan")
    return float(np.clip(np.sqrt(ab * ac / bc), 0.0, 1.0))


#: The range of log-temperatures searched (tau from 3.4e-4 to 2981), and how close to the crossing the search stops.
_LOG_TAU_RANGE = (-8.0, 8.0)
_LOG_TAU_TOL = 1e-12


def _solve_log_tau(mean_at, target: float) -> float:
    """The log-temperature at which ``mean_at`` (non-increasing in it) crosses ``target``, within
    :data:`_LOG_TAU_TOL`; the end of :data:`_LOG_TAU_RANGE` nearer the target when it does not cross there.

    Brent's method (scipy's ``brentq``): about 15 evaluations of ``mean_at`` where bisection to the same tolerance
    takes 44, and each is a pass over the whole (N, C) matrix.
    """
    from scipy.optimize import brentq

    lo, hi = _LOG_TAU_RANGE
    seen: dict[float, float] = {}  # brentq evaluates the ends again: each is one pass over the matrix

    def gap(log_tau: float) -> float:
        if log_tau not in seen:
            seen[log_tau] = mean_at(log_tau) - target
        return seen[log_tau]

    if gap(lo) <= 0:  # even the sharpest tempering stays at or under the target
        return lo
    if gap(hi) >= 0:  # even the flattest stays at or over it
        return hi
    return float(brentq(gap, lo, hi, xtol=_LOG_TAU_TOL, rtol=4 * np.finfo(float).eps, maxiter=200))


def match_accuracy(probs: np.ndarray, accuracy: float) -> np.ndarray:
    """``probs`` (or log-probabilities) re-tempered (``softmax(log p / tau)``, one tau for all items) so the
    mean of the row maxima equals ``accuracy``; the argmax of every row is unchanged.

    The re-tempered maximum is each item's estimated probability of being right: the ranking comes
    from the head, the level from the accuracy estimate. ``accuracy`` is clipped to [1/C, 1).
    """
    logp = _as_logp(probs)
    n, c = logp.shape
    if n == 0 or c < 2 or not np.isfinite(accuracy):
        return np.exp(logp)
    target = float(np.clip(accuracy, 1.0 / c + 1e-6, 1.0 - 1e-6))

    def tempered(log_tau: float) -> np.ndarray:
        z = np.maximum(logp, -700.0) / np.exp(log_tau)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return tempered(_solve_log_tau(lambda log_tau: float(tempered(log_tau).max(axis=1).mean()), target))


def source_reliability(source_logp: np.ndarray, source_labels: np.ndarray, *, min_rows: int = 20, min_errors: int = 3,
                       shrink: bool = True):
    """P(right | confidence) on the held-out source rows: an isotonic fit of correctness on log-confidence
    (Zadrozny & Elkan, KDD 2002), or None with fewer than ``min_rows`` rows or ``min_errors`` errors.

    Where the head is overconfident at the top (instacart: confidence 0.98 on average above 0.95, 96 % right,
    labels that no confidence can get past), this curve says so; a temperature alone cannot.
    """
    from sklearn.isotonic import IsotonicRegression

    logp = _as_logp(source_logp)
    correct = (logp.argmax(1) == np.asarray(source_labels)).astype(float)
    if len(correct) < min_rows or (1 - correct).sum() < min_errors:
        return None
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
    x = logp.max(1)
    iso.fit(x, correct)
    if not shrink:
        return iso.predict
    # each step of the curve is the share right of the rows it pools: Laplace's rule of succession, (right + 1) /
    # (rows + 2), so a step of 80 rows all right reads 0.988, not a certainty no hold-out can show
    fitted = iso.predict(x)
    values, counts = np.unique(fitted, return_counts=True)
    shrunk = (values * counts + 1.0) / (counts + 2.0)

    def predict(q: np.ndarray) -> np.ndarray:
        v = iso.predict(np.asarray(q, dtype=np.float64))
        k = np.clip(np.searchsorted(values, v), 0, len(values) - 1)
        below = np.clip(k - 1, 0, len(values) - 1)
        # between two steps (interpolated) the shrunk values are interpolated the same way
        lo, hi = values[below], values[k]
        w = np.where(hi > lo, (v - lo) / np.where(hi > lo, hi - lo, 1.0), 1.0)
        return shrunk[below] + w * (shrunk[k] - shrunk[below])

    return predict


def _top_tempered(logp: np.ndarray, tau: float) -> np.ndarray:
    """Each row's top log-probability after tempering by ``tau``: ``log_softmax(max(logp, -700) / tau).max(1)``,
    computed a chunk of rows at a time (the same arithmetic per row)."""
    return by_rows(lambda part: _top_log_softmax(np.maximum(part, -700.0) / tau), logp)


def _top_log_softmax(z: np.ndarray) -> np.ndarray:
    """``log_softmax(z).max(1)`` with the same arithmetic, without building the (N, C) result."""
    return -np.log1p(_shifted_and_others(z)[1])


def match_accuracy_reliable(probs: np.ndarray, accuracy: float, reliability) -> np.ndarray:
    """Per-item estimated correctness: ``reliability`` (a source curve of P(right | log-confidence)) read at the
    re-tempered confidence, one temperature for all items chosen so the mean equals ``accuracy``. The shape comes
    from the source, the level from the target estimate. Returns (N,) values in [0, 1]."""
    logp = _as_logp(probs)
    n, c = logp.shape
    if n == 0 or c < 2 or not np.isfinite(accuracy):
        return reliability(logp.max(1)) if n else np.zeros(0)

    def corr(log_tau: float) -> np.ndarray:
        return reliability(_top_tempered(logp, np.exp(log_tau)))

    # sharper (lower tau) -> higher confidence -> higher reliability
    return corr(_solve_log_tau(lambda log_tau: float(corr(log_tau).mean()), accuracy))


def class_error_ratios(predicted: np.ndarray, wrong: np.ndarray, expected_wrong: np.ndarray, n_classes: int, *,
                       prior: float) -> np.ndarray:
    """Per predicted class, how much more (or less) often it is wrong than the per-item estimates expect.

    ``(observed + prior) / (expected + prior)``, summed over the items predicted as the class: the posterior mean
    of a class's rate ratio under a gamma prior of mean 1 worth ``prior`` expected errors. A class with little
    evidence stays near 1 (the shared estimate); one with many more errors than expected moves away from it.
    Returns (n_classes,) ratios.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    observed = np.bincount(predicted, weights=np.asarray(wrong, dtype=np.float64), minlength=n_classes)
    expected = np.bincount(predicted, weights=np.asarray(expected_wrong, dtype=np.float64), minlength=n_classes)
    return (observed + prior) / (expected + prior)


def apply_class_ratios(correctness: np.ndarray, predicted: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per-item correctness with each item's chance of being wrong scaled by its predicted class's ratio, then all
    scaled back so the mean is unchanged (the level's accuracy estimate stays the one the estimator gave);
    clipped to [0, 1]."""
    correctness = np.asarray(correctness, dtype=np.float64)
    wrong = 1.0 - correctness
    scaled = wrong * np.asarray(ratios, dtype=np.float64)[np.asarray(predicted, dtype=np.int64)]
    if scaled.sum() > 0:
        scaled *= wrong.sum() / scaled.sum()
    return np.clip(1.0 - scaled, 0.0, 1.0)
