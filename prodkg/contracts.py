"""The tables that cross a stage boundary, and the check that a frame is one.

Each :class:`Contract` names a table's columns with their Arrow types (its ``schema``, what the
Parquet file holds) and the pandas dtypes a frame of it has in memory. :func:`check_table` is the
gate: it refuses a frame with a missing column, a column the contract does not allow, a wrong
dtype or a null where none may be, naming each, and coerces what can be converted without losing
anything (an int32 or float32 column where the contract says int64 or float64, integral floats
where it says int64, a column with no values at all).

Core module: pandas and pyarrow only, never torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa

from prodkg.errors import StageError

__all__ = [
    "CONTRACTS",
    "EMBEDDINGS",
    "PREDICTIONS",
    "PRODUCTS",
    "QUARANTINE",
    "Contract",
    "check_table",
]


@dataclass(frozen=True)
class Contract:
    """The columns of one table.

    Attributes:
        name: the table's name (its file in a run directory is ``<name>.parquet``).
        schema: the columns the table must have, with their Arrow types; a field that is not
            nullable must hold no null.
        extra: the Arrow type of further columns the table may have (the products' attribute
            columns), or None when it has no others.
    """

    name: str
    schema: pa.Schema
    extra: pa.DataType | None = None

    @property
    def columns(self) -> list[str]:
        """The required column names, in the contract's order."""
        return list(self.schema.names)

    @property
    def dtypes(self) -> dict[str, str]:
        """The pandas dtype of each required column in a frame built to this contract."""
        return {f.name: _pandas_dtype(f) for f in self.schema}

    def empty(self) -> pd.DataFrame:
        """A table of this contract with no rows."""
        return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in self.dtypes.items()})


def _pandas_dtype(field: pa.Field) -> str:
    if pa.types.is_string(field.type):
        return "string"
    if pa.types.is_int64(field.type):
        return "Int64" if field.nullable else "int64"
    if pa.types.is_float64(field.type):
        return "float64"
    if pa.types.is_boolean(field.type):
        return "boolean" if field.nullable else "bool"
    return "object"  # list columns: one array per row


#: What ingest keeps (``products.parquet``): one row per product; attribute columns, nullable strings, may follow.
PRODUCTS = Contract(
    "products",
    pa.schema(
        [
            pa.field("product_id", pa.string(), nullable=False),
            ("title", pa.string()),
            ("description", pa.string()),
            ("image", pa.string()),
            ("domain", pa.string()),
            ("category", pa.string()),
            pa.field("source_row", pa.int64(), nullable=False),
        ]
    ),
    extra=pa.string(),
)

#: Rows a stage set aside, and why (``quarantine.parquet``); ``source_row`` is null where no catalog row is known.
QUARANTINE = Contract(
    "quarantine",
    pa.schema(
        [
            pa.field("stage", pa.string(), nullable=False),
            ("source_row", pa.int64()),
            ("product_id", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            ("raw", pa.string()),
        ]
    ),
)

#: One predicted value per product, task and taxonomy level (``predictions.parquet``), with the model that predicted
#: it: ``level`` is the taxonomy depth of a back-off prediction (null for a task without levels), ``kind`` is
#: ``class`` or ``unknown`` (the product fits no concept; ``value`` is null and ``confidence`` the unknown score),
#: ``published`` whether the prediction became a plain fact.
PREDICTIONS = Contract(
    "predictions",
    pa.schema(
        [
            pa.field("product_id", pa.string(), nullable=False),
            pa.field("task", pa.string(), nullable=False),
            ("value", pa.string()),
            ("confidence", pa.float64()),
            ("model", pa.string()),
            ("level", pa.int64()),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("published", pa.bool_(), nullable=False),
        ]
    ),
)

#: Every product's fused feature vector (``embeddings.parquet``), one float32 array per row.
EMBEDDINGS = Contract(
    "embeddings",
    pa.schema([pa.field("product_id", pa.string(), nullable=False), ("vector", pa.list_(pa.float32()))]),
)

#: Table name -> contract.
CONTRACTS: Mapping[str, Contract] = MappingProxyType({c.name: c for c in (PRODUCTS, QUARANTINE, PREDICTIONS, EMBEDDINGS)})


def check_table(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """``frame`` if it is a table of ``contract``, with the columns that can be safely converted converted.

    Column order is kept; a frame that needs no conversion is returned as it is (not copied).

    Raises:
        StageError: naming the table and every missing column, column the contract does not
            allow, column of a wrong dtype, and column with nulls where none may be.
    """
    if not isinstance(frame, pd.DataFrame):
        raise StageError(f"the {contract.name} table must be a DataFrame, got {type(frame).__name__}")
    names = [str(c) for c in frame.columns]
    original = dict(zip(names, frame.columns, strict=True))
    problems: list[str] = []
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"duplicated columns {duplicated}")
    missing = [c for c in contract.columns if c not in names]
    if missing:
        problems.append(f"missing columns {missing}")
    others = [n for n in names if n not in contract.schema.names]
    if others and contract.extra is None:
        problems.append(f"columns the contract does not have {others}")
    fields = [contract.schema.field(n) for n in names if n in contract.schema.names]
    if contract.extra is not None:
        fields += [pa.field(n, contract.extra) for n in others]
    converted: dict[str, pd.Series] = {}
    for field in fields if not duplicated else ():
        column = frame[original[field.name]]
        try:
            fixed = _conform(column, field)
        except _Wrong as exc:
            problems.append(f"column {field.name!r}: {exc}")
            continue
        if fixed is not column:
            converted[field.name] = fixed
    if problems:
        raise StageError(f"the {contract.name} table does not match its contract: " + "; ".join(problems))
    if not converted:
        return frame
    out = frame.copy(deep=False)
    for name, column in converted.items():
        out[original[name]] = column
    return out


class _Wrong(Exception):
    pass


def _conform(column: pd.Series, field: pa.Field) -> pd.Series:
    """``column`` as ``field`` wants it (the same object when it already is); raises _Wrong."""
    nulls = column.isna()
    if not field.nullable and bool(nulls.any()):
        raise _Wrong(f"{int(nulls.sum())} null value(s) where none may be")
    if bool(nulls.all()):  # no values: nothing to lose in any dtype
        if _fits(column, field.type):
            return column
        return pd.Series(pd.array([None] * len(column), dtype=_pandas_dtype(field)), index=column.index,
                         name=column.name)
    kind = field.type
    dtype = column.dtype
    if pa.types.is_string(kind):
        if _fits(column, kind):
            return column
        raise _Wrong(f"expected strings, got {_describe(column)}")
    if pa.types.is_int64(kind):
        if _fits(column, kind):
            return column
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise _Wrong(f"expected int64, got {_describe(column)}")
        values = column.dropna()
        if pd.api.types.is_float_dtype(dtype):
            floats = values.to_numpy(dtype=np.float64)
            if not bool((np.isfinite(floats) & (floats == np.round(floats))).all()):
                raise _Wrong("expected int64, got floats that are not whole numbers")
        if len(values) and (values.max() > np.iinfo(np.int64).max or values.min() < np.iinfo(np.int64).min):
            raise _Wrong("expected int64, got values out of its range")
        return column.astype("Int64" if bool(nulls.any()) or isinstance(dtype, pd.Int64Dtype) else "int64")
    if pa.types.is_float64(kind):
        if _fits(column, kind):
            return column
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise _Wrong(f"expected float64, got {_describe(column)}")
        values = column.dropna()
        if pd.api.types.is_integer_dtype(dtype) and len(values) and int(np.abs(values).max()) > 2**53:
            raise _Wrong("expected float64, got integers too large to convert exactly")
        return column.astype("float64")
    if pa.types.is_boolean(kind):
        if _fits(column, kind):
            return column
        if dtype == object and all(isinstance(v, (bool, np.bool_)) for v in column.dropna()):
            return column.astype("boolean" if bool(nulls.any()) else "bool")
        raise _Wrong(f"expected booleans, got {_describe(column)}")
    if pa.types.is_list(kind):
        if _fits(column, kind):
            return column
        raise _Wrong(f"expected one array of numbers per row, all of one length, got {_describe(column)}")
    raise _Wrong(f"contract type {kind} is not supported")  # pragma: no cover - contracts use the types above


def _fits(column: pd.Series, kind: pa.DataType) -> bool:
    """True when ``column`` already holds ``kind`` in a dtype that is written as it."""
    dtype = column.dtype
    if pa.types.is_string(kind):
        if isinstance(dtype, pd.StringDtype):
            return True
        return dtype == object and pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty")
    if pa.types.is_int64(kind):
        return dtype == np.int64 or isinstance(dtype, pd.Int64Dtype)
    if pa.types.is_float64(kind):
        return dtype == np.float64
    if pa.types.is_boolean(kind):
        return dtype == np.bool_ or isinstance(dtype, pd.BooleanDtype)
    if pa.types.is_list(kind):
        if dtype != object:
            return False
        lengths = set()
        for value in column.dropna():
            if not isinstance(value, (np.ndarray, list, tuple)):
                return False
            array = np.asarray(value)
            if array.ndim != 1 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                return False
            lengths.add(len(array))
        return len(lengths) <= 1
    return False


def _describe(column: pd.Series) -> str:
    if column.dtype == object:
        return f"object values of type(s) {sorted({type(v).__name__ for v in column.dropna()})}"
    return f"dtype {column.dtype}"
