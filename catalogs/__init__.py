"""Catalog schema, validating ingest with quarantine, and loaders for real public datasets."""

from catalogs.ingest import IngestResult, ingest, read_catalog
from catalogs.loaders import DATASETS, CatalogSource, list_datasets, load_dataset
from catalogs.schema import ATTRIBUTE_PREFIX, RESERVED_COLUMNS, REQUIRED_COLUMNS, product_text

__all__ = [
    "ATTRIBUTE_PREFIX",
    "CatalogSource",
    "DATASETS",
    "IngestResult",
    "REQUIRED_COLUMNS",
    "RESERVED_COLUMNS",
    "ingest",
    "list_datasets",
    "load_dataset",
    "product_text",
    "read_catalog",
]
