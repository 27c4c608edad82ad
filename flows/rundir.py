"""Run directories and their manifest: config, versions, seed, input hashes, counts, metrics, durations."""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from prodkg.contracts import CONTRACTS, check_table

PACKAGES = ("prodkg", "torch", "torchvision", "transformers", "pandas", "prefect", "rdflib", "pyoxigraph", "networkx", "pyarrow", "numpy")


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time (the previous run of an output folder is the greatest other id): UTC to the
    millisecond, then a random suffix. To the second only, two runs started in the same second sorted by their
    suffix, and a run could take an older run for the one before it."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_table(frame: pd.DataFrame, path: Path) -> dict:
    """Write a stage table as Parquet and say what was written (row count and path).

    A table with a contract in :data:`prodkg.contracts.CONTRACTS` (named by the file: ``products.parquet``, ...)
    is checked against it first (:class:`~prodkg.errors.StageError` when it does not match).
    """
    frame = check_table(frame, CONTRACTS[path.stem]) if path.stem in CONTRACTS else frame
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return {"path": str(path), "rows": int(len(frame))}


def write_json(obj: dict, path: Path) -> None:
    """Write JSON atomically, so a killed run never leaves a half-written manifest."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
