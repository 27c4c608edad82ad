"""The schedule bench's replay (bench/bench_auto_schedules.py) gives what ``auto_train`` gives under each schedule:
the same adopted candidate and the same target accuracy, from one trace of the whole grid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_auto_schedules import replay_one, trace_task

from prodkg.adaptation import TrainConfig
from prodkg.adaptation.config import AUTO_SCHEDULES
from prodkg.adaptation.selection import auto_train

GRID = [("source_only", {}), ("dann", {"tradeoff": 0.3}), ("dann", {"tradeoff": 1.0}), ("cdan", {"tradeoff": 1.0}),
        ("dan", {"tradeoff": 1.0}), ("coral", {"tradeoff": 0.3}), ("rtn", {"tradeoff": 1.0})]


@pytest.mark.slow  # 11 s on a 2-core AMD EPYC: trains the whole auto grid
@pytest.mark.parametrize("seed", [1])
def test_a_replayed_schedule_adopts_what_auto_train_adopts(make_shifted, seed) -> None:
    xs, ys, xt, yt = make_shifted(seed=7 + seed, n=200, dim=8, shift=1.5)
    config = TrainConfig(method="auto", hidden=16, epochs=18, seed=seed, lr=3e-3)
    rec, preds = trace_task(xs, ys, xt, yt, 3, config, candidates=GRID, checkpoints=(1 / 9, 1 / 3, 0.5, 1.0))
    chosen = set()
    for schedule in ("halving", "full", (0.5, 1.0)):
        rungs = AUTO_SCHEDULES[schedule] if isinstance(schedule, str) else schedule
        for safe in (True, False):
            model = auto_train(xs, ys, xt, 3, config, candidates=GRID, schedule=schedule, safe=safe)
            replayed = replay_one(rec, preds, rungs, None, "dev", safe=safe)
            assert replayed["chosen"] == model.selection["chosen"], (schedule, safe)
            assert replayed["acc"] == pytest.approx(float((model.predict(xt) == yt).mean() * 100)), (schedule, safe)
            chosen.add(replayed["chosen"])
    assert len(chosen) >= 2  # the schedules and rules do not all end on the same network here
    # the trace scored each candidate at every checkpoint, at the accuracy its predictions there give
    for label, cand in rec["candidates"].items():
        for point in cand["points"]:
            assert point["acc"] == pytest.approx(float((preds[f"{label}@{point['share']:.6f}"] == yt).mean() * 100))
