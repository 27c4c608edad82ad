"""Run ids sort by start time: the previous run of an output folder is the greatest other id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prodkg.flows.rundir import new_run_id


def test_run_ids_started_in_the_same_second_sort_by_start_time():
    start = datetime(2026, 11, 30, 2, 0, 0, 998_000, tzinfo=UTC)
    times = [start + timedelta(milliseconds=k) for k in range(0, 40, 3)]  # some in one second, some in the next
    for _ in range(20):  # whatever the random suffixes
        ids = [new_run_id(t) for t in times]
        assert sorted(ids) == ids
    assert new_run_id(start).startswith("20261130T020000.998Z-")
