"""Set membership of string columns (prodkg.frames.members) against Python's own ``in``."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from prodkg.frames import members


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice("abcé\u00e9 1") for _ in range(rng.randint(0, 4))) for _ in range(n)]


@pytest.mark.parametrize("kind", ["string", "str", "object", "list", "index"])
def test_members_agrees_with_python_in_whatever_holds_the_strings(kind):
    rng = random.Random(7)
    values, pool = _words(rng, 2000), _words(rng, 300)
    values[::97] = [None] * len(values[::97])  # a missing value is in no pool, even one holding a missing value
    expected = np.array([v is not None and v in set(pool) for v in values])
    wrap = {"string": lambda x: pd.Series(x, dtype="string"), "str": lambda x: pd.Series(x, dtype="str"),
            "object": lambda x: pd.Series(x, dtype=object), "list": list, "index": lambda x: pd.Index(x, dtype="string")}[kind]
    got = members(wrap(values), wrap(pool + [None]))
    assert got.dtype == bool and got.tolist() == expected.tolist()
    assert members(wrap(values), set(pool)).tolist() == expected.tolist()


def test_members_of_nothing_and_in_nothing():
    assert members([], ["a"]).tolist() == []
    assert members(pd.Series(["a", "b"], dtype="string"), []).tolist() == [False, False]
    # "1" and 1 are different things elsewhere; here a column is compared by its text
    assert members(pd.Series(["1", "01"], dtype="string"), pd.Series([1]).astype(str)).tolist() == [True, False]
