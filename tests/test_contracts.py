"""Table contracts: what crosses a stage boundary is refused when it does not match, and the pipeline's own tables match."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodkg.catalogs.ingest import ingest
from prodkg.contracts import CONTRACTS, EMBEDDINGS, PREDICTIONS, PRODUCTS, QUARANTINE, check_table
from prodkg.errors import StageError


def _predictions(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame({
        "product_id": ["p1", "p2"],
        "task": ["category", "category"],
        "value": ["mug", "kettle"],
        "confidence": [0.9, 0.6],
        "model": ["m", "m"],
        "level": pd.array([None, None], dtype="Int64"),
        "kind": ["class", "class"],
        "published": [True, False],
    })
    for name, values in overrides.items():
        frame[name] = values
    return frame


def test_a_conforming_table_is_returned_as_it_is():
    frame = _predictions()
    assert check_table(frame, PREDICTIONS) is frame
    for contract in CONTRACTS.values():
        empty = contract.empty()
        assert list(empty.columns) == contract.columns
        assert check_table(empty, contract) is empty


def test_a_missing_column_is_named():
    with pytest.raises(StageError, match=r"predictions table .*missing columns \['confidence'\]"):
        check_table(_predictions().drop(columns=["confidence"]), PREDICTIONS)


def test_columns_the_contract_does_not_have_are_refused_except_the_products_attributes():
    with pytest.raises(StageError, match=r"does not have \['score'\]"):
        check_table(_predictions(score=[1.0, 2.0]), PREDICTIONS)
    products = PRODUCTS.empty().astype({"source_row": "int64"})
    products["color"] = pd.Series([], dtype="string")
    assert check_table(products, PRODUCTS) is products
    products["weight"] = pd.Series([], dtype="float64")  # no values: nothing lost in making it a string column
    assert check_table(products, PRODUCTS)["weight"].dtype == "string"
    row = pd.DataFrame({"product_id": ["p"], "title": ["t"], "description": [None], "image": [None], "domain": ["shop"],
                        "category": [None], "weight": [1.5], "source_row": [0]})
    with pytest.raises(StageError, match=r"column 'weight': expected strings, got dtype float64"):
        check_table(row, PRODUCTS)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("confidence", ["high", "low"], r"column 'confidence': expected float64, got .*str"),
        ("confidence", [True, False], r"column 'confidence': expected float64, got dtype bool"),
        ("product_id", [1, 2], r"column 'product_id': expected strings, got dtype int64"),
        ("task", ["category", None], r"column 'task': 1 null value\(s\) where none may be"),
        ("published", ["yes", "no"], r"column 'published': expected booleans"),
    ],
)
def test_a_wrong_dtype_or_a_forbidden_null_is_refused(column, values, message):
    with pytest.raises(StageError, match=message):
        check_table(_predictions(**{column: values}), PREDICTIONS)


def test_every_problem_is_named_at_once():
    frame = _predictions(confidence=["a", "b"]).drop(columns=["model"])
    with pytest.raises(StageError) as info:
        check_table(frame, PREDICTIONS)
    assert "missing columns ['model']" in str(info.value) and "column 'confidence'" in str(info.value)


def test_safe_conversions_are_made_and_lossy_ones_refused():
    frame = _predictions(confidence=np.array([0.5, 0.25], np.float32))
    fixed = check_table(frame, PREDICTIONS)
    assert fixed["confidence"].dtype == np.float64 and fixed["confidence"].tolist() == [0.5, 0.25]
    assert frame["confidence"].dtype == np.float32  # the caller's frame is left alone
    assert check_table(_predictions(confidence=[1, 0]), PREDICTIONS)["confidence"].dtype == np.float64

    quarantine = pd.DataFrame({"stage": ["ingest", "extract"], "source_row": [3.0, np.nan], "product_id": ["a", None],
                               "reason": ["r", "r"], "raw": ["{}", "{}"]})
    assert check_table(quarantine, QUARANTINE)["source_row"].tolist() == [3, pd.NA]
    with pytest.raises(StageError, match="not whole numbers"):
        check_table(quarantine.assign(source_row=[3.5, np.nan]), QUARANTINE)

    empty = pd.DataFrame(columns=PREDICTIONS.columns)  # what a run without predictions builds
    assert check_table(empty, PREDICTIONS)["confidence"].dtype == np.float64


def test_embeddings_hold_one_vector_of_one_length_per_row():
    good = pd.DataFrame({"product_id": ["a", "b"], "vector": list(np.ones((2, 4), np.float32))})
    assert check_table(good, EMBEDDINGS) is good
    ragged = pd.DataFrame({"product_id": ["a", "b"], "vector": [np.ones(4, np.float32), np.ones(3, np.float32)]})
    with pytest.raises(StageError, match="column 'vector'"):
        check_table(ragged, EMBEDDINGS)


def test_the_ingested_tables_match(sample_catalog):
    result = ingest(sample_catalog, check_images=False)
    assert len(result.products) > 10
    assert check_table(result.products, PRODUCTS) is result.products
    assert check_table(result.quarantine, QUARANTINE) is result.quarantine


def test_write_table_refuses_a_table_that_breaks_its_contract(tmp_path):
    from prodkg.flows.rundir import write_table

    with pytest.raises(StageError, match="missing columns"):
        write_table(_predictions().drop(columns=["model"]), tmp_path / "predictions.parquet")
    assert not (tmp_path / "predictions.parquet").exists()
    assert write_table(_predictions(), tmp_path / "predictions.parquet")["rows"] == 2
    assert write_table(pd.DataFrame({"anything": [1]}), tmp_path / "other.parquet")["rows"] == 1  # no contract


@pytest.mark.slow
def test_the_sample_pipeline_writes_tables_that_match(sample_catalog, tmp_path):
    from prodkg.flows.config import load_config
    from prodkg.flows.pipeline import run_pipeline

    cfg = load_config(catalog=str(sample_catalog), source=["webshop"], target=["supplier"], out=str(tmp_path / "out"),
                      epochs=2, baseline=None, use_prefect=False, progress=False)
    run_dir = tmp_path / "out" / "runs" / run_pipeline(cfg)["run_id"]
    for name, contract in CONTRACTS.items():
        path = run_dir / f"{name}.parquet"
        assert path.is_file(), name
        frame = pd.read_parquet(path)
        assert check_table(frame, contract) is frame, name
        written = pq.read_schema(path)
        for field in contract.schema:
            assert _written_as(written.field(field.name).type, field.type, len(frame)), (name, field.name)


def _written_as(written: pa.DataType, expected: pa.DataType, rows: int) -> bool:
    """Parquet holds ``expected``: pandas writes its string dtypes as large_string, and a column of no rows as null."""
    if pa.types.is_null(written):
        return rows == 0
    if pa.types.is_string(expected):
        return pa.types.is_string(written) or pa.types.is_large_string(written)
    return written == expected
