"""The ingest stage: a catalog file or registered dataset → validated products + quarantine."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from prodkg.catalogs import CatalogSource, ingest, load_dataset, product_text
from prodkg.catalogs.ingest import COMPRESSION_SUFFIXES, read_catalog
from prodkg.digests import frame_digest
from prodkg.errors import CatalogError, ConfigError, StageError

__all__ = ["IngestOutput", "IngestSettings", "catalog_facts", "default_catalog_name", "hide_target_labels", "ingest_stage", "modalities_present",
           "modality_items", "unasserted_predictions"]


@dataclass(frozen=True)
class IngestSettings:
    """What the ingest stage reads: a catalog file or a registered dataset, and the domains to keep."""

    catalog: str | None = None
    dataset: str | None = None
    data_home: str | None = None
    source: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    attributes: tuple[str, ...] | None = None
    taxonomy: str | None = None
    catalog_name: str | None = None  # the catalog's identity in the graph (default: dataset name, else file stem without a date)
    image_limits: object | None = None  # an extractors.sources.ImageLimits: which image files and URLs may be read


@dataclass
class IngestOutput:
    products: pd.DataFrame
    quarantine: pd.DataFrame
    attributes: list[str]
    taxonomy: list[tuple[str, str | None]]
    catalog_name: str
    source: list[str]
    target: list[str]
    n_in: int
    n_out_of_scope: int
    input_hash: str
    warnings: list[str] = field(default_factory=list)
    base_dir: str | None = None  # the folder image paths are relative to (None: a catalog read from a URL)


# A date (and time) a feed file's name may end with: feed_2026-11-30.csv, feed-20261130T0200Z.csv
_DATED = re.compile(r"[-_. ]*(\d{4}-\d{2}-\d{2}|\d{8})([T_-]?\d{4,6}Z?)?$")


def default_catalog_name(path: str) -> str:
    """The catalog's name when none is given: the file name without its extensions and without a trailing date.

    ``feed_2026-11-30.csv.gz`` and ``feed_2026-12-01.csv`` are both the catalog ``feed``, so a dated nightly
    feed keeps its products' IRIs; give ``catalog_name`` for a feed whose name changes otherwise.
    """
    name = PurePosixPath(str(path).rstrip("/").replace("\\", "/")).name
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    undated = _DATED.sub("", stem)
    return undated or stem or "catalog"


def read_domains(path: str) -> list[str] | None:
    """The distinct values of a local catalog's ``domain`` column, reading the header and that column only.

    Raises CatalogError when the header lacks a required column or the file has no rows (both show
    without reading the rest). None when the domains cannot be told cheaply (a URL, an unreadable or
    malformed file): ingest then reports the problem with the whole file in hand.
    """
    if "://" in str(path):
        return None
    from prodkg.catalogs.ingest import check_columns, detect_format

    try:
        fmt = detect_format(path)
        if fmt == "csv":
            sep = "\t" if str(path).lower().endswith(".tsv") else ","
            check_columns(pd.read_csv(path, nrows=0, sep=sep, encoding_errors="replace").columns, path)
            values = pd.read_csv(path, usecols=["domain"], dtype=str, keep_default_na=False, sep=sep, encoding_errors="replace")["domain"].tolist()
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            check_columns(pq.read_schema(path).names, path)
            values = pq.read_table(path, columns=["domain"]).column("domain").to_pylist()
        else:
            return None  # JSONL has no header: every line would have to be parsed, which ingest does anyway
    except (OSError, ValueError, ImportError):
        return None
    if not values:
        raise CatalogError(f"catalog {path} has no rows")
    return sorted({str(v).strip() for v in values if isinstance(v, str) and v.strip()})


def read_taxonomy(path: str) -> list[tuple[str, str | None]]:
    """A taxonomy CSV with columns ``concept,parent`` (empty parent: a top concept)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"concept", "parent"} <= set(frame.columns):
        raise ConfigError(f"taxonomy file {path} needs columns concept,parent (got {', '.join(frame.columns)})")
    return [(c, p or None) for c, p in zip(frame["concept"], frame["parent"]) if c]


def ingest_stage(settings: IngestSettings) -> IngestOutput:
    """Load the catalog (file or dataset), keep the chosen domains, validate every row.

    Whole-catalog problems (missing columns, no rows, an unknown or empty domain)
    raise CatalogError before anything is written.
    """
    if settings.dataset:
        src: CatalogSource = load_dataset(settings.dataset, settings.data_home)
        frame, unparsed, name, taxonomy = src.frame, [], settings.catalog_name or src.name, list(src.taxonomy)
        source, target = list(settings.source) or src.default_source, list(settings.target) or src.default_target
        base_dir = src.root
    else:
        frame, unparsed = read_catalog(settings.catalog)
        name = settings.catalog_name or default_catalog_name(str(settings.catalog))
        taxonomy = []
        source, target = list(settings.source), list(settings.target)
        base_dir = Path(str(settings.catalog)).resolve().parent if "://" not in str(settings.catalog) else None
    if settings.taxonomy:
        taxonomy = read_taxonomy(settings.taxonomy)
    domains = sorted({d.strip() for d in frame["domain"].dropna().astype(str) if d.strip()}) if "domain" in frame.columns else []
    if not source or not target:
        raise ConfigError(f"name the source and target domains (--source, --target); this catalog has: {', '.join(domains) or 'none'}")
    for role, chosen in (("source", source), ("target", target)):
        missing = [d for d in chosen if d not in domains]
        if missing:
            raise CatalogError(f"{role} domain(s) {', '.join(missing)} not in the catalog; it has: {', '.join(domains) or 'none'}")
    # Rows whose domain is blank are in scope: ingest quarantines them with their reason.
    chosen = {*source, *target}
    domains_by_row = [d.strip() if isinstance(d, str) else "" for d in frame["domain"].tolist()]
    in_scope = np.array([d == "" or d in chosen for d in domains_by_row], dtype=bool)
    if not in_scope.any() and not unparsed:
        raise CatalogError("no rows in the chosen domains")
    attributes = list(settings.attributes) if settings.attributes is not None else None
    result = ingest(frame[in_scope], base_dir=base_dir, attributes=attributes, unparsed=unparsed, image_limits=settings.image_limits)
    for role, chosen in (("source", source), ("target", target)):
        if not result.products["domain"].isin(chosen).any():
            reasons = result.quarantine["reason"].str.split(":").str[0].value_counts().head(3)
            top = ", ".join(f"{reason} ×{n}" for reason, n in reasons.items())
            exc = CatalogError(f"the {role} domain ({', '.join(chosen)}) has no valid product after validation"
                               + (f" ({len(result.quarantine)} rows quarantined: {top})" if len(result.quarantine) else ""))
            exc.quarantine = result.quarantine  # the flow writes it, so every reason can be read
            raise exc
    return IngestOutput(
        products=result.products,
        quarantine=result.quarantine,
        attributes=result.attributes,
        taxonomy=taxonomy,
        catalog_name=name,
        source=list(source),
        target=list(target),
        n_in=result.n_in,
        n_out_of_scope=int((~in_scope).sum()),
        input_hash=frame_digest(frame),  # every cell as it arrived, undecodable bytes included
        warnings=result.warnings,
        base_dir=str(base_dir) if base_dir is not None else None,
    )


def modality_items(products: pd.DataFrame, modality: str) -> list[str | None]:
    """Each product's input for ``modality``: its image reference, or its title and description as one text."""
    if modality == "image":
        return [v if isinstance(v, str) and v else None for v in products["image"].tolist()]
    if modality == "text":
        return [product_text(t, d) or None for t, d in zip(products["title"].tolist(), products["description"].tolist())]
    raise StageError(f"unknown modality {modality!r}; expected image or text")


def modalities_present(products: pd.DataFrame) -> list[str]:
    """Modalities that at least one product has; an absent one is not extracted at all."""
    return [m for m in ("image", "text") if any(v is not None for v in modality_items(products, m))]


def hide_target_labels(products: pd.DataFrame, target: list[str], columns: list[str]) -> pd.DataFrame:
    """A copy whose target-domain rows carry no label: those labels are for evaluation only."""
    out = products.copy()
    mask = out["domain"].isin(target)
    for col in columns:
        if col in out.columns:
            out.loc[mask, col] = None
    return out


def catalog_facts(products: pd.DataFrame, target: list[str], hidden: list[str], *, base_dir: str | None = None) -> pd.DataFrame:
    """What the graph may assert about the products: every asserted value, except the evaluation labels of target rows.

    ``hidden`` names the evaluation-label columns (``category`` by default): on target rows they are
    blanked, since they exist only to measure the models. Every other attribute a target row asserts
    (a supplier's brand, material, colour) stays an asserted fact. Local image paths, which ingest
    resolved to check and read them, go back to references relative to the catalog's folder
    (``base_dir``), so the graph never holds a path of the machine that ran it.
    """
    out = hide_target_labels(products, target, hidden)
    if base_dir is not None and "image" in out.columns:
        base = os.path.realpath(base_dir)
        out["image"] = pd.Series([_relative_image(v, base) for v in out["image"].tolist()], index=out.index, dtype="string")
    return out


def _relative_image(value, base: str):
    if not isinstance(value, str) or not value or "://" in value[:16] or not os.path.isabs(value):
        return value if isinstance(value, str) and value else None
    return Path(os.path.relpath(value, base)).as_posix()


def unasserted_predictions(predictions: pd.DataFrame, facts: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The predictions for values the catalog does not assert, and how many were dropped because it does.

    Asserted beats predicted: a product whose graph-visible ``facts`` row holds a value for a task
    (its colour, or its category where that is not an evaluation label) keeps that value, and no
    prediction is written beside it.
    """
    if predictions.empty:
        return predictions, 0
    from prodkg.frames import members

    keep = np.ones(len(predictions), dtype=bool)
    ids = facts["product_id"].astype(str)
    for task in predictions["task"].unique():
        if task not in facts.columns:
            continue
        values = facts[task]
        asserted = ids[(values.notna() & (values.astype("string").str.len() > 0)).to_numpy(bool)]
        if len(asserted):
            keep &= ~((predictions["task"] == task).to_numpy() & members(predictions["product_id"].astype(str), asserted))
    return predictions[keep].reset_index(drop=True), int((~keep).sum())
