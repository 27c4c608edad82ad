"""The ingest stage: a catalog file or registered dataset → validated products + quarantine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.catalogs import CatalogSource, ingest, load_dataset, product_text
from prodkg.catalogs.ingest import read_catalog
from prodkg.digests import frame_digest
from prodkg.errors import CatalogError, ConfigError, StageError

__all__ = ["IngestOutput", "IngestSettings", "hide_target_labels", "ingest_stage", "modalities_present", "modality_items"]


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
        frame, unparsed, name, taxonomy = src.frame, [], src.name, list(src.taxonomy)
        source, target = list(settings.source) or src.default_source, list(settings.target) or src.default_target
        base_dir = src.root
    else:
        frame, unparsed = read_catalog(settings.catalog)
        name = Path(str(settings.catalog)).stem
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
            raise CatalogError(f"the {role} domain ({', '.join(chosen)}) has no valid product after validation; see the quarantine reasons")
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
