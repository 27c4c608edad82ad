"""The catalog schema: which columns a catalog has, what a valid row is, and the kept-products table."""

from __future__ import annotations

import pyarrow as pa

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

# The table ingest writes (products.parquet); attribute columns follow as nullable strings.
PRODUCTS_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("image", pa.string()),
        ("domain", pa.string()),
        ("category", pa.string()),
        ("source_row", pa.int64()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("source_row", pa.int64()),
        ("product_id", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)


def product_text(title: str | None, description: str | None) -> str:
    """The text the text encoder sees for one product: title, then description."""
    parts = [p.strip() for p in (title, description) if isinstance(p, str) and p.strip()]
    return ". ".join(parts)
