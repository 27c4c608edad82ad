"""Ingest: validation rules, quarantine reasons and reconciled counts, on self-made catalogs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from prodkg.catalogs import ingest, read_catalog
from prodkg.catalogs.ingest import clean_text
from prodkg.errors import CatalogError

COLUMNS = ["product_id", "title", "description", "image", "domain", "category"]


def _frame(rows):
    return pd.DataFrame(rows, columns=[*COLUMNS, *sorted({k for r in rows for k in r} - set(COLUMNS))])


def test_valid_rows_kept_bad_rows_quarantined_with_reasons(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"not checked at ingest")
    rows = [
        {"product_id": "p1", "title": "Red mug", "description": "", "image": "a.png", "domain": "shop", "category": "mug"},
        {"product_id": "", "title": "no id", "description": "", "image": "", "domain": "shop", "category": "mug"},
        {"product_id": "p3", "title": "no domain", "description": "", "image": "", "domain": " ", "category": "mug"},
        {"product_id": "p4", "title": "", "description": "", "image": "", "domain": "shop", "category": "mug"},
        {"product_id": "p5", "title": "lost image", "description": "", "image": "missing.png", "domain": "shop", "category": None},
        {"product_id": "p6", "title": "x" * 200_000, "description": "", "image": "", "domain": "shop", "category": None},
        {"product_id": "p 7/\"quoted\">#é", "title": "<b>Blue</b> &amp; green\x07 bag", "description": "", "image": "", "domain": "shop", "category": "bag"},
    ]
    res = ingest(_frame(rows), base_dir=tmp_path)
    assert res.n_in == 7 and res.n_kept == 2 and res.n_quarantined == 5
    reasons = dict(zip(res.quarantine["source_row"].astype(int), res.quarantine["reason"]))
    assert reasons[2] == "missing product_id"
    assert reasons[3] == "missing domain"
    assert "nothing to learn from" in reasons[4]
    # the reason names the path that was looked up, and the catalog's value
    assert reasons[5] == f"image file not found: {(tmp_path / 'missing.png').resolve()} (catalog value 'missing.png')"
    assert "title longer than" in reasons[6]
    kept = res.products.set_index("product_id")
    assert kept.loc["p1", "image"] == str(img.resolve())
    assert kept.loc["p 7/\"quoted\">#é", "title"] == "Blue & green bag"
    assert json.loads(res.quarantine.iloc[0]["raw"])["title"] == "no id"


def test_duplicates_exact_keep_first_conflicting_quarantine_all():
    base = {"description": "", "image": "", "domain": "shop", "category": "mug"}
    rows = [
        {"product_id": "a", "title": "Mug", **base},
        {"product_id": "a", "title": "Mug", **base},
        {"product_id": "b", "title": "Cup", **base},
        {"product_id": "b", "title": "Bowl", **base},
        {"product_id": "c", "title": "Plate", **base},
    ]
    res = ingest(_frame(rows))
    assert res.products["product_id"].tolist() == ["a", "c"]
    assert res.n_in == res.n_kept + res.n_quarantined == 5
    reasons = res.quarantine.set_index("source_row")["reason"]
    assert reasons[2].startswith("exact duplicate of row 1")
    assert "different content" in reasons[3] and "different content" in reasons[4]


def test_missing_required_column_is_a_whole_file_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("product_id,title,domain\n1,a,x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="lacks required column.*description, image"):
        read_catalog(path)


def test_empty_catalog_is_a_whole_file_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(CatalogError, match="empty"):
        read_catalog(path)
    path.write_text(",".join(COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="no rows"):
        read_catalog(path)


def test_non_utf8_row_quarantined_others_kept(tmp_path):
    path = tmp_path / "c.csv"
    header = ",".join(COLUMNS).encode()
    good = b"p1,Caf\xc3\xa9 mug,,,shop,mug"
    bad = b"p2,Caf\xe9 mug,,,shop,mug"  # latin-1 byte in a UTF-8 file
    path.write_bytes(b"\n".join([header, good, bad]) + b"\n")
    res = ingest(path)
    assert res.products["title"].tolist() == ["Café mug"]
    assert res.quarantine["reason"].tolist() == ["column 'title' is not valid UTF-8"]


def test_jsonl_bad_lines_quarantined_and_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    good = {"product_id": "p1", "title": "Mug", "description": "", "image": None, "domain": "shop", "category": "mug", "color": "red"}
    path.write_text(json.dumps(good) + "\n{not json\n[1, 2]\n", encoding="utf-8")
    res = ingest(path)
    assert res.n_in == 3 and res.n_kept == 1 and res.n_quarantined == 2
    assert res.attributes == ["color"]
    assert res.products.loc[0, "color"] == "red"
    assert {r.split(":")[0] for r in res.quarantine["reason"]} == {"invalid JSON line", "JSON line is a list, expected an object"}


def test_parquet_and_csv_give_the_same_products(tmp_path, sample_catalog):
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    pq = tmp_path / "c.parquet"
    frame.to_parquet(pq)
    a = ingest(sample_catalog)
    b = ingest(pq, base_dir=sample_catalog.parent)
    pd.testing.assert_frame_equal(a.products, b.products)
    assert a.n_kept == 54 and a.attributes == ["color"]


def test_attribute_prefix_and_selection():
    rows = [{"product_id": "p", "title": "t", "description": "", "image": "", "domain": "d", "category": None, "attr_brand": "Acme", "notes": "x"}]
    res = ingest(_frame(rows), attributes=["brand"])
    assert res.attributes == ["brand"] and res.products.loc[0, "brand"] == "Acme"
    assert any("notes" in w for w in res.warnings)
    with pytest.raises(CatalogError, match="not in catalog"):
        ingest(_frame(rows), attributes=["size"])


def test_clean_text():
    assert clean_text("  <p>Hello&nbsp;<i>world</i></p>\r\n\x00ok ") == "Hello world ok"
    assert clean_text(None) == ""
    assert clean_text("3 < 4 and 5 > 2") == "3 < 4 and 5 > 2"


def test_image_reason_tells_a_directory_from_a_missing_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    base = {"title": "Mug", "description": "", "domain": "shop", "category": "mug"}
    res = ingest(_frame([{"product_id": "d", "image": "imgs", **base}, {"product_id": "m", "image": "imgs/none.png", **base}]), base_dir=tmp_path)
    reasons = res.quarantine.set_index("product_id")["reason"]
    assert reasons["d"] == f"image path is a directory, not a file: {(tmp_path / 'imgs').resolve()} (catalog value 'imgs')"
    assert reasons["m"].startswith(f"image file not found: {(tmp_path / 'imgs' / 'none.png').resolve()}")


def test_catalog_that_is_a_directory_says_so(tmp_path):
    folder = tmp_path / "feed.csv"
    folder.mkdir()
    with pytest.raises(CatalogError, match="is a directory, not a file"):
        read_catalog(folder)


def test_conflicting_duplicate_quarantined_when_the_other_copy_is_invalid():
    base = {"description": "", "image": "", "category": "mug"}
    rows = [
        {"product_id": "a", "title": "Mug", "domain": "", **base},  # invalid for another reason: no domain
        {"product_id": "a", "title": "Cup", "domain": "shop", **base},  # a conflicting copy: must not be kept silently
        {"product_id": "b", "title": "Plate", "domain": "shop", **base},
    ]
    res = ingest(_frame(rows))
    assert res.products["product_id"].tolist() == ["b"]
    assert res.n_in == res.n_kept + res.n_quarantined == 3
    reasons = res.quarantine.set_index("source_row")["reason"]
    assert reasons[1] == "missing domain"
    assert reasons[2] == "product_id 'a' appears in rows 1, 2 with different content (another copy is quarantined)"


def test_parquet_bytes_columns_are_decoded_or_quarantined(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "product_id": pa.array([b"p1", b"p2"], pa.binary()),
        "title": pa.array([b"red ceramic coffee mug", b"bad \xff\xfe bytes"], pa.binary()),
        "description": pa.array(["", ""]),
        "image": pa.array(["", ""]),
        "domain": pa.array([b"shop", b"shop"], pa.binary()),
    })
    path = tmp_path / "c.parquet"
    pq.write_table(table, path)
    res = ingest(str(path))
    assert res.products["product_id"].tolist() == ["p1"]
    assert res.products["title"].tolist() == ["red ceramic coffee mug"]  # the text, not "b'red ceramic coffee mug'"
    assert res.quarantine["reason"].tolist() == ["column 'title' is not valid UTF-8"]


def test_clean_text_matches_its_rules_on_random_text_without_markup():
    """Plain cells take a shortcut; the rules say what any text without tags or entities becomes: NFC, control
    characters as spaces, white space runs as one space, none at the ends (str.split's white space is re's \\s)."""
    import random
    import unicodedata

    control = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
    rng = random.Random(3)
    alphabet = "ab1 \t\n\r\x0b\x0c\x1c\x1f\x7f\x85\xa0\u2028e\u0301é;"
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        assert clean_text(text) == " ".join(control.sub(" ", unicodedata.normalize("NFC", text)).split()), repr(text)
