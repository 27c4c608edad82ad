"""trim_heap gives freed heap pages back to the system (glibc), where the process would otherwise keep them."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.memory import trim_heap


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not trim_heap(), reason="no glibc malloc_trim here")
def test_freed_heap_between_live_allocations_is_returned():
    # shards of a few MiB with small long-lived allocations between them, as extraction leaves them; one freed first
    # raises glibc's mapping threshold above their size, so the rest come from the heap (as in a long run)
    first = np.ones(4 << 20, np.uint8)
    del first
    trim_heap()
    start = _rss_mib()
    keep, shards = [], []
    for _ in range(80):
        shards.append(np.ones(4 << 20, np.uint8))  # 4 MiB, touched
        keep.append(np.ones(64 << 10, np.uint8))  # 64 KiB that stays
    del shards
    held = _rss_mib() - start  # what the process kept of the 320 MiB freed (none if glibc gave it back itself)
    assert trim_heap()
    left = _rss_mib() - start
    # trimming gives back most of what the heap held; the 5 MiB kept alive and a margin stay
    assert left <= held / 2 + 16
    assert len(keep) == 80


def test_release_encoders_drops_the_shared_models():
    import json

    from prodkg.extractors.stage import release_encoders, shared_encoder

    first = shared_encoder("minilm", json.dumps({}))
    assert shared_encoder("minilm", json.dumps({})) is first  # shared while kept
    release_encoders()
    assert shared_encoder.cache_info().currsize == 0
    assert shared_encoder("minilm", json.dumps({})) is not first  # loaded again after a release


_SHARDS = """
import json, sys
import numpy as np
from prodkg.memory import map_large_blocks

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "mapped":
    assert map_large_blocks()
first = np.ones(4 << 20, np.uint8)  # freed first: glibc's own rule then raises its mapping threshold above 4 MiB
del first
start = rss()
keep, shards = [], []
for _ in range(80):
    shards.append(np.ones(4 << 20, np.uint8))
    keep.append(np.ones(64 << 10, np.uint8))
del shards
print(json.dumps({"held": rss() - start}))
"""


@pytest.mark.skipif(not trim_heap(), reason="no glibc here")
def test_map_large_blocks_gives_each_freed_shard_back_without_a_trim():
    """The same shards as above, each freed with no trim: with glibc's own rule the process keeps most of the 320 MiB
    (the reference), with large blocks mapped it keeps none of it. In child processes: the setting is process-wide."""
    import json
    import subprocess
    import sys

    held = {mode: json.loads(subprocess.run([sys.executable, "-c", _SHARDS, mode], check=True, capture_output=True,
                                            text=True).stdout)["held"] for mode in ("default", "mapped")}
    assert held["default"] > 160  # what the fix is for: glibc's default keeps the freed shards
    assert held["mapped"] < 32  # the 5 MiB kept alive and a margin


_MAPPED = """
import json
import numpy as np
from prodkg.memory import mapped_zeros

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

first = np.ones(4 << 20, np.uint8)  # glibc's own rule now serves 4 MiB arrays from the heap
del first
start = rss()
keep, shards = [], []
for _ in range(80):
    shard = mapped_zeros((1024, 1024), np.float32)  # 4 MiB, as an extraction shard's vectors
    assert not shard.any() and shard.flags.writeable
    shard[:] = 1.0  # touched: resident
    shards.append(shard)
    keep.append(np.ones(64 << 10, np.uint8))
touched = rss() - start
del shards
print(json.dumps({"touched": touched, "held": rss() - start}))
"""


@pytest.mark.skipif(not trim_heap(), reason="no glibc here")
def test_mapped_zeros_gives_each_freed_shard_back_under_glibcs_own_rule():
    """The shards of the test above, made by mapped_zeros with glibc's threshold left alone: they were resident (320 MiB
    touched), and once freed none of it stays, with no process-wide setting and no trim."""
    import json
    import subprocess
    import sys

    got = json.loads(subprocess.run([sys.executable, "-c", _MAPPED], check=True, capture_output=True, text=True).stdout)
    assert got["touched"] > 300
    assert got["held"] < 32


def test_mapped_zeros_is_a_plain_zero_array_of_the_shape_and_type_asked():
    from prodkg.memory import mapped_zeros

    for shape, dtype in [((3, 2), np.float32), ((2048, 384), np.float32), ((600_000,), np.float64), ((0, 384), np.float32)]:
        a = mapped_zeros(shape, dtype)
        assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.writeable and a.flags.c_contiguous
        assert not a.any()


_SPARSE_STACK = """
import json
import numpy as np
import pandas as pd
from prodkg.extractors.stage import assemble_features
from prodkg.memory import mapped_zeros

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

rng = np.random.default_rng(0)
n_shards, rows, dim = 8, 8192, 1280  # 8 shards of 40 MiB: 320 MiB of vectors, a tenth of them encoded
ok_all = rng.random(n_shards * rows) < 0.1
expected = np.zeros((n_shards * rows, dim), np.float32)
expected[ok_all] = rng.standard_normal((int(ok_all.sum()), dim)).astype(np.float32)
parts = []
for s in range(n_shards):
    feats = mapped_zeros((rows, dim), np.float32)
    ok = ok_all[s * rows:(s + 1) * rows]
    feats[ok] = expected[s * rows:(s + 1) * rows][ok]  # as extract_features fills a shard: the encoded rows only
    parts.append({"features": feats, "ok": ok, "errors": {}, "n_computed": int(ok.sum()), "n_cached": 0,
                  "n_absent": int((~ok).sum()), "encoder": "e", "encoder_id": "e", "seconds": 0.0})
products = pd.DataFrame({"source_row": range(n_shards * rows), "product_id": [str(i) for i in range(n_shards * rows)],
                         "image": None, "title": "t"})
start = rss()
out = assemble_features(products, {"image": parts})
block = out.features.blocks["image"]
grown = rss() - start
print(json.dumps({"equal": bool(np.array_equal(block, expected)), "dtype": str(block.dtype), "grown": grown, "kind": type(block).__name__,
                  "held": int(len(block.rows)) if hasattr(block, "rows") else None, "ok": int(ok_all.sum())}))
"""


@pytest.mark.slow
def test_stacked_shards_hold_memory_for_the_rows_they_encoded_only():
    """A modality a tenth of the products have (a photo on 10 % of a catalog): the stacked block equals the shards
    concatenated, and stacking 320 MiB of mostly-zero shards makes the process grow by about the rows encoded, not by
    the whole block (it grew by 320 MiB when every row was copied, and the block was copied again to zero its absent
    rows)."""
    import json
    import subprocess
    import sys

    got = json.loads(subprocess.run([sys.executable, "-c", _SPARSE_STACK], check=True, capture_output=True, text=True).stdout)
    assert got["equal"] and got["dtype"] == "float32"
    # held packed: the encoded rows only (32 MiB), where scattered among the zeros each kept two pages resident
    assert got["kind"] == "PackedBlock" and got["held"] == got["ok"], got
    assert got["grown"] < 60, got
