"""Taxonomy back-off: the probability of a broader SKOS concept is the sum over the leaf classes under it.

When the fine class is uncertain, a broader concept can still be right often enough to publish
("Hedging your bets", Deng et al., CVPR 2012). :class:`TaxonomyLevels` maps a head's classes to their
ancestors at every depth of the taxonomy; :meth:`TaxonomyLevels.aggregate` gives the probabilities of
the concepts at one depth. A class shallower than the depth asked for stands for itself there (grocery's
"Banana" is a coarse class without fine ones), so every level covers every item. A flat taxonomy has one
level: there is nothing to back off to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from prodkg.prediction.estimates import by_rows

__all__ = ["TaxonomyLevels"]


class TaxonomyLevels:
    """The ancestors of a label space's classes, level by level (depth 0 = the taxonomy's roots)."""

    def __init__(self, classes: Sequence[str], taxonomy: Iterable[tuple] = ()) -> None:
        parent: dict[str, str | None] = {}
        for entry in taxonomy:
            concept, up = entry[0], entry[1]
            parent.setdefault(concept, up or None)
        self.classes = list(classes)
        self.paths: list[list[str]] = []
        for cls in self.classes:
            path, node, seen = [cls], parent.get(cls), {cls}
            while node is not None and node not in seen:  # a cycle would loop forever; stop at the repeat
                path.append(node)
                seen.add(node)
                node = parent.get(node)
            self.paths.append(path[::-1])  # root first
        self.depth = max(len(p) for p in self.paths) - 1 if self.paths else 0

    @property
    def n_levels(self) -> int:
        return self.depth + 1

    def concept_of(self, class_index: int, level: int) -> str:
        """The class's ancestor at ``level`` (the class itself when it is no deeper than that)."""
        path = self.paths[class_index]
        return path[min(level, len(path) - 1)]

    def concepts(self, level: int) -> list[str]:
        """The distinct concepts at ``level``, sorted."""
        return sorted({self.concept_of(i, level) for i in range(len(self.classes))})

    def membership(self, level: int) -> tuple[np.ndarray, list[str]]:
        """(C, K) 0/1 matrix of class -> concept at ``level``, and the K concepts."""
        names = self.concepts(level)
        index = {c: k for k, c in enumerate(names)}
        m = np.zeros((len(self.classes), len(names)))
        for i in range(len(self.classes)):
            m[i, index[self.concept_of(i, level)]] = 1.0
        return m, names

    def aggregate(self, probs: np.ndarray, level: int) -> tuple[np.ndarray, list[str]]:
        """(N, K) probabilities of the concepts at ``level``: each the sum of its classes' probabilities."""
        m, names = self.membership(level)
        return np.asarray(probs, dtype=np.float64) @ m, names

    def aggregate_log(self, logp: np.ndarray, level: int) -> tuple[np.ndarray, list[str]]:
        """:meth:`aggregate` in log space: (N, K) log-probabilities of the concepts at ``level`` (a log-sum-exp over
        each concept's classes), exact where the probabilities themselves would round to 1.0."""
        m, names = self.membership(level)
        logp = np.asarray(logp, dtype=np.float64)
        if m.shape[0] == m.shape[1] and (m == np.eye(len(m))).all():
            return logp, names  # every class its own concept: nothing to sum (the input itself, read-only by callers)
        if len(logp) == 0:
            return np.zeros((0, len(names))), names
        # a chunk of rows at a time: the temporaries are (rows, C) float64
        return by_rows(lambda part: _concept_logp(part, m), logp, _ROWS), names

    def labels_at(self, labels: Sequence[str | None], level: int) -> list[str | None]:
        """Class labels mapped to their concept at ``level`` (None and unknown labels stay None)."""
        index = {c: i for i, c in enumerate(self.classes)}
        return [self.concept_of(index[lab], level) if lab in index else None for lab in labels]


#: Rows per chunk of :meth:`TaxonomyLevels.aggregate_log`: 8,192 rows of 134 classes make four 8.8 MB temporaries
#: (at 32,768 they were 0.12 GiB over the output at a 200,000-product target's department level)
_ROWS = 8_192


def _concept_logp(logp: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Log-probabilities (n, K) of the concepts whose class membership is ``m`` (C, K), from class log-probabilities
    (n, C): a log-sum-exp over each concept's classes, exact where the probabilities would round to 1.0."""
    rows = np.arange(len(logp))
    top = logp.argmax(axis=1)
    shifted = logp - logp[rows, top][:, None]
    e = np.exp(shifted)
    e[rows, top] = 0.0
    rest = e @ m  # per concept, the sum of exp(logp - top) over its classes other than the top class
    top_concept = m[top].argmax(axis=1)
    with np.errstate(divide="ignore"):
        out = np.log(rest)
    out[rows, top_concept] = np.log1p(rest[rows, top_concept])  # the top class's concept: log(1 + rest), exactly
    return out + logp[rows, top][:, None]
