"""Bring your own features: read a table of precomputed vectors with label and domain columns for adaptation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from prodkg.adaptation.features import MultiModal
from prodkg.errors import DataLoadError

LABEL, DOMAIN = "label", "domain"

ID_COLUMNS = ("id", "product_id")
_FLAT = re.compile(r"^f(\d+)$")
FLAT_MODALITY = "features"


def _labels(values: object) -> list[str | None]:
    out: list[str | None] = []
    for v in list(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            out.append(None)
        else:
            out.append(str(v))
    return out


def _list_column(name: str, values: list) -> tuple[np.ndarray, np.ndarray]:
    present = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in values], dtype=bool)
    widths = {len(v) for v, p in zip(values, present) if p}
    if len(widths) > 1:
        raise DataLoadError(f"column {name!r}: every vector must have the same length; found lengths {sorted(widths)}")
    if not widths:
        raise DataLoadError(f"column {name!r}: no row holds a vector")
    d = widths.pop()
    block = np.zeros((len(values), d), dtype=np.float32)
    for i in np.flatnonzero(present):
        block[i] = np.asarray(values[i], dtype=np.float32)
    return block, present


def _from_parquet(path: Path, required: tuple[str, ...]) -> tuple[MultiModal, list[str | None], np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataLoadError(f"could not read {path} as Parquet: {exc}") from exc
    for col in required:
        if col not in frame.columns:
            raise DataLoadError(f"{path}: expected a {col!r} column; columns are {list(frame.columns)}")
    id_col = next((c for c in ID_COLUMNS if c in frame.columns), None)
    ids = frame[id_col].astype(str).to_numpy() if id_col else np.array([str(i) for i in range(len(frame))])
    flat = sorted((int(m.group(1)), c) for c in frame.columns if (m := _FLAT.match(str(c))))
    reserved = {LABEL, DOMAIN, *ID_COLUMNS}
    blocks: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    if flat:
        x = frame[[c for _, c in flat]].to_numpy(dtype=np.float32)
        rows_ok = np.isfinite(x).all(axis=1)
        blocks[FLAT_MODALITY], present[FLAT_MODALITY] = np.where(rows_ok[:, None], x, 0.0), rows_ok
    for col in frame.columns:
        if col in reserved or _FLAT.match(str(col)):
            continue
        sample = next((v for v in frame[col] if v is not None and not (isinstance(v, float) and np.isnan(v))), None)
        if sample is not None and isinstance(sample, (list, tuple, np.ndarray)):
            blocks[str(col)], present[str(col)] = _list_column(str(col), frame[col].tolist())
    if not blocks:
        raise DataLoadError(
            f"{path}: no feature columns found; expected list/array columns (one per modality) or columns f0..fN"
        )
    labels = _labels(frame[LABEL]) if LABEL in frame.columns else [None] * len(frame)
    domains = frame[DOMAIN].astype(str).to_numpy() if DOMAIN in frame.columns else np.full(len(frame), "", dtype=object).astype(str)
    return MultiModal(blocks=blocks, present=present), labels, domains, ids


def _from_npz(path: Path, required: tuple[str, ...]) -> tuple[MultiModal, list[str | None], np.ndarray, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataLoadError(f"could not read {path} as .npz: {exc}") from exc
    keys = set(data.files)
    for col in required:
        if col not in keys:
            raise DataLoadError(f"{path}: expected an array {col!r}; arrays are {sorted(keys)}")
    blocks: dict[str, np.ndarray] = {}
    if "X" in keys:
        blocks[FLAT_MODALITY] = data["X"]
    blocks.update({k[2:]: data[k] for k in keys if k.startswith("X_") and len(k) > 2})
    if not blocks:
        raise DataLoadError(f"{path}: expected an array 'X' (or 'X_<modality>' arrays); arrays are {sorted(keys)}")
    present = {}
    for name, block in blocks.items():
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2:
            raise DataLoadError(f"{path}: features {name!r} must be 2-D (N, d); got shape {block.shape}")
        present[name] = np.isfinite(block).all(axis=1)  # a NaN row marks a missing modality
        blocks[name] = block
    n = len(next(iter(blocks.values())))
    ids = data["id"].astype(str) if "id" in keys else np.array([str(i) for i in range(n)])
    labels = _labels(data[LABEL].astype(object)) if LABEL in keys else [None] * n
    domains = data[DOMAIN].astype(str) if DOMAIN in keys else np.full(n, "").astype(str)
    return MultiModal(blocks=blocks, present=present), labels, domains, ids


def load_feature_table(
    path: str | Path, *, require_labels: bool = True
) -> tuple[MultiModal, list[str | None], np.ndarray, np.ndarray]:
    """Read precomputed product vectors for the adaptation and prediction stages (layout: ``flows.cli.FEATURE_TABLE_LAYOUT``, shown by ``prodkg adapt --help``).

    Formats:
        Parquet: a ``label`` column (empty or null where unknown), a ``domain`` column,
        optionally ``id`` or ``product_id``, and features either as one list/array
        column per modality (a null cell marks the modality missing for that product)
        or as scalar columns ``f0..fN`` (one modality named ``features``).
        ``.npz``: arrays ``X`` (modality ``features``) and/or ``X_<modality>``,
        ``label``, ``domain`` and optionally ``id``; a row holding NaN marks a missing modality.
        With ``require_labels=False`` (scoring rows with a saved model) ``label`` and ``domain``
        may be absent: every label is then None and every domain ``""``.

    Returns:
        ``(features, labels, domains, ids)``: a :class:`MultiModal`, one label or None per row,
        and ``(N,)`` string arrays of domains and ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DataLoadError(f"feature table {path} does not exist")
    suffix = path.suffix.lower()
    required = (LABEL, DOMAIN) if require_labels else ()
    if suffix in {".parquet", ".pq"}:
        result = _from_parquet(path, required)
    elif suffix == ".npz":
        result = _from_npz(path, required)
    else:
        raise DataLoadError(f"feature table {path}: expected a .parquet or .npz file, got {suffix or 'no suffix'!r}")
    features, labels, domains, ids = result
    if not (len(features) == len(labels) == len(domains) == len(ids)):
        raise DataLoadError(
            f"{path}: features, labels, domains and ids differ in length "
            f"({len(features)}, {len(labels)}, {len(domains)}, {len(ids)})"
        )
    if len(set(ids.tolist())) != len(ids):
        raise DataLoadError(f"{path}: product ids must be unique")
    return features, labels, domains, ids
