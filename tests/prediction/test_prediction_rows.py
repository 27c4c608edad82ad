"""Every level's prediction rows, built as columns, are the rows one item and one concept at a time would give."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prodkg.prediction.publication import level_rows, prediction_rows


def _one_at_a_time(levels):
    """The reference: a row per item and level, finest first; a concept an item already has a row for (a class that
    is its own broader concept) adds none, and publishing it at a broader level marks that row published."""
    rows, seen = [], {}
    for level, names, pred, conf, correctness, new in levels:
        for i in range(len(pred)):
            value = names[pred[i]]
            j = seen.get((i, value))
            if j is None:
                seen[(i, value)] = len(rows)
                rows.append({"item": i, "level": level, "value": value, "confidence": float(conf[i]),
                             "correctness": float("nan") if correctness is None else float(correctness[i]), "published": bool(new[i])})
            elif new[i]:
                rows[j]["published"] = True
    return pd.DataFrame(rows, columns=["item", "level", "value", "confidence", "correctness", "published"])


def test_columns_equal_the_rows_one_at_a_time():
    rng = np.random.default_rng(4)
    n = 300
    # finest level: 5 classes, two of them ("milk", "eggs") their own broader concept; then 3 concepts; then the root
    fine, mid, top = ["brie", "cheddar", "milk", "eggs", "apple"], ["cheese", "milk", "eggs"], ["food"]
    levels = []
    for level, names in ((2, fine), (1, mid + ["fruit"]), (0, top + ["milk"])):
        pred = rng.integers(0, len(names), n)
        levels.append((level, names, pred, rng.random(n), rng.random(n) if level else None, rng.random(n) < 0.3))
    got = prediction_rows([level_rows(n, lv, names, pred, conf, corr, new) for lv, names, pred, conf, corr, new in levels])
    want = _one_at_a_time(levels)
    assert len(got) < 3 * n  # some concepts repeated
    pd.testing.assert_frame_equal(got, want)


def test_no_item_gives_the_empty_table():
    got = prediction_rows([level_rows(0, 1, ["a"], np.zeros(0, np.int64), np.zeros(0), None, np.zeros(0, bool))])
    assert got.empty and list(got.columns) == ["item", "level", "value", "confidence", "correctness", "published"]
