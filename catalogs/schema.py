"""The catalog schema: which columns a catalog has, what a valid row is, and the kept-products table."""

from __future__ import annotations

from prodkg.contracts import PRODUCTS, QUARANTINE

# Columns every catalog must have (values may be empty where the rules below allow it).
REQUIRED_COLUMNS: tuple[str, ...] = ("product_id", "title", "description", "image", "domain")
# Optional label column for the category task.
LABEL_COLUMN = "category"
RESERVED_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, LABEL_COLUMN)
# Any other column is an attribute; this prefix is stripped from its name when present
# ("attr_color" and "color" both become the attribute "color").
ATTRIBUTE_PREFIX = "attr_"

MAX_ID_CHARS = 1_000
MAX_TEXT_CHARS = 100_000  # a 1 MB title is a broken feed, not a product
MAX_LABEL_CHARS = 500

# The tables ingest writes (products.parquet, quarantine.parquet): their contracts live with every other
# stage table's in prodkg.contracts.
PRODUCTS_SCHEMA = PRODUCTS.schema
QUARANTINE_SCHEMA = QUARANTINE.schema


def product_text(title: str | None, description: str | None) -> str:
    """The text the text encoder sees for one product: title, then description."""
    parts = [p.strip() for p in (title, description) if isinstance(p, str) and p.strip()]
    return ". ".join(parts)
