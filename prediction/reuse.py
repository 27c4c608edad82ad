"""Reuse of fitted heads: a task whose inputs and config are unchanged is loaded, not retrained."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.digests import features_digest  # noqa: F401  (re-exported)
from prodkg.prediction.labels import LabelSpace

FORMAT = 3  # 2: heads store their evidence (source hold-out and target probabilities); 3: as log-probabilities




def task_key(task: str, features_hash: str, labels: Sequence[str | None], is_source: np.ndarray, is_target: np.ndarray,
             product_ids: Sequence[str], config_dict: dict, extra: dict | None = None) -> str:
    """Content hash of everything a fitted head depends on: features (by :func:`features_digest`),
    labels, domains, ids and config."""
    import torch

    import prodkg

    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "task": task, "config": config_dict, "extra": extra or {}, "features": features_hash,
                         "prodkg": prodkg.__version__, "torch": torch.__version__}, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(is_source, dtype=bool).tobytes())
    h.update(np.ascontiguousarray(is_target, dtype=bool).tobytes())
    h.update("\x1f".join("\x00" if v is None else v for v in labels).encode("utf-8", "surrogateescape"))
    h.update("\x1f".join(product_ids).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def fit_or_reuse(heads_dir: str | os.PathLike | None, key: str, fit: Callable[[], object]):
    """Load the TaskResult stored under ``key``, or call ``fit()`` and store what it returns.

    The entry is written to a temporary folder and renamed into place, so a killed run
    never leaves a half-written head that a later run would trust.
    """
    from prodkg.adaptation import AdaptedModel
    from prodkg.prediction.heads import TaskResult

    if heads_dir is None:
        return fit(), False
    entry = Path(heads_dir) / key
    meta_path = entry / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        result = TaskResult(task=meta["task"], labels=LabelSpace(meta["classes"]), model=AdaptedModel.load(entry / "model"),
                            temperature=float(meta["temperature"]), predictions=pd.read_parquet(entry / "predictions.parquet"),
                            metrics={**meta["metrics"], "reused": True}, evidence=_load_evidence(entry))
        return result, True
    result = fit()
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    result.model.save(tmp / "model")
    result.predictions.to_parquet(tmp / "predictions.parquet", index=False)
    np.savez(tmp / "evidence.npz", **result.evidence)
    (tmp / "meta.json").write_text(json.dumps({"task": result.task, "classes": result.labels.classes, "temperature": result.temperature,
                                                "metrics": result.metrics}, default=float), encoding="utf-8")
    try:
        os.replace(tmp, entry)
    except OSError:  # another process stored the same key first: theirs is equally good
        shutil.rmtree(tmp, ignore_errors=True)
    return result, False


def _load_evidence(entry: Path) -> dict:
    path = entry / "evidence.npz"
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
