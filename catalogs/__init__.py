"""Catalog schema, validating ingest with quarantine, and loaders for real public datasets."""

if __name__ != "prodkg.catalogs":  # the folder installs as prodkg.catalogs; a bare `import catalogs` would load a second copy
    raise ImportError("import prodkg.catalogs, not catalogs")

from prodkg.catalogs.ingest import IngestResult, ingest, read_catalog
from prodkg.catalogs.loaders import DATASETS, CatalogSource, list_datasets, load_dataset
from prodkg.catalogs.schema import ATTRIBUTE_PREFIX, RESERVED_COLUMNS, REQUIRED_COLUMNS, product_text

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
