"""Dataset loaders turn the real mirrors into the catalog schema; the checksum code is tested on a tiny tree."""

from __future__ import annotations

import pytest

from prodkg.catalogs import ingest, list_datasets, load_dataset
from prodkg.catalogs.loaders import tree_checksum
from prodkg.errors import DataLoadError, UnknownComponentError


def test_registry_lists_datasets_and_rejects_unknown():
    assert {"office-caltech-10", "grocery-store-dataset", "instacart-products"} <= set(list_datasets())
    with pytest.raises(UnknownComponentError, match="valid names: grocery-store-dataset, instacart-brand-shift, instacart-products, office-caltech-10"):
        load_dataset("office-31")


def test_missing_mirror_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataLoadError, match="PRODKG_DATA_HOME"):
        load_dataset("office-caltech-10", tmp_path, download=False)


def test_tree_checksum_is_order_independent_and_content_sensitive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("1")
    (tmp_path / "b" / "c.txt").write_text("2")
    h1, n = tree_checksum(tmp_path)
    assert n == 2
    (tmp_path / "b" / "c.txt").write_text("3")
    assert tree_checksum(tmp_path)[0] != h1


@pytest.mark.dataset
def test_office_caltech_from_mirror(data_home):
    src = load_dataset("office-caltech-10", data_home)
    counts = src.frame.groupby("domain").size().to_dict()
    assert counts == {"amazon": 958, "caltech10": 1123, "dslr": 157, "webcam": 295}
    assert sorted(src.frame["category"].unique()) == [c for c, _ in src.taxonomy]
    res = ingest(src.frame)
    assert res.n_kept == 2533 and res.n_quarantined == 0


@pytest.mark.dataset
def test_a_relative_data_home_gives_paths_that_ingest_finds(data_home, monkeypatch):
    """PRODKG_DATA_HOME=../shared/datasets, as the README's bench commands set it, from another folder."""
    import os

    monkeypatch.chdir(data_home.parent)
    relative = os.path.relpath(data_home)
    monkeypatch.setenv("PRODKG_DATA_HOME", relative)
    src = load_dataset("office-caltech-10")
    assert src.root.is_absolute() and all(os.path.isabs(p) for p in src.frame["image"].head(5))
    res = ingest(src.frame.head(40), base_dir=src.root)  # what the ingest stage passes
    assert res.n_kept == 40 and res.n_quarantined == 0


@pytest.mark.dataset
def test_grocery_from_mirror_has_three_level_taxonomy(data_home):
    src = load_dataset("grocery", data_home)
    counts = src.frame.groupby("domain").size().to_dict()
    assert counts == {"iconic": 81, "instore": 5421}
    parents = dict(src.taxonomy)
    assert parents["Golden-Delicious"] == "Apple" and parents["Apple"] == "Fruit" and parents["Fruit"] is None
    assert parents["Banana"] == "Fruit"  # no fine level of its own
    assert set(src.frame["category"]) <= set(parents)
    iconic = src.frame[src.frame["domain"] == "iconic"].set_index("product_id")
    assert "juicy pulp" in iconic.loc["iconic/Golden-Delicious", "description"]


@pytest.mark.dataset
def test_grocery_back_off_level_one_is_the_datasets_own_coarse_class(data_home):
    """The predict stage's level 1 (what a fine class backs off to first) is the coarse class of the dataset's
    classes.csv for every one of the 81 classes: 43 of them, Banana its own coarse class, not Fruit."""
    import csv

    from prodkg.prediction.backoff import TaxonomyLevels

    src = load_dataset("grocery", data_home)
    with open(data_home / "grocery-store-dataset" / "dataset" / "classes.csv", newline="") as f:
        coarse = {row["Class Name (str)"]: row["Coarse Class Name (str)"] for row in csv.DictReader(f)}
    fine = sorted(set(src.frame["category"]))
    levels = TaxonomyLevels(fine, src.taxonomy)
    assert sorted(coarse) == fine
    assert [levels.concept_of(i, 1) for i in range(len(fine))] == [coarse[c] for c in fine]
    assert len(levels.concepts(1)) == len(set(coarse.values())) == 43 and coarse["Banana"] == "Banana"


def test_instacart_brand_split_keeps_every_brand_on_one_side_and_generic_leads_in_the_catalog():
    from prodkg.catalogs.loaders import INSTACART_GENERIC_LEADS, instacart_brand, instacart_brand_domains

    assert instacart_brand("Oikos® Greek Yogurt, Plain") == "oikos" and instacart_brand("  ") == ""
    titles = [f"Common item {i}" for i in range(5)] + [f"Brand{i} thing" for i in range(400)] + ["brand7 other"]
    domains = instacart_brand_domains(titles)
    assert set(domains) == {"catalog", "new-brands"}
    by_brand: dict[str, set[str]] = {}
    for t, d in zip(titles, domains):
        by_brand.setdefault(instacart_brand(t), set()).add(d)
    assert all(len(v) == 1 for v in by_brand.values())  # no brand on both sides
    assert by_brand["common"] == {"catalog"}  # the most frequent leading word is generic
    assert INSTACART_GENERIC_LEADS >= 1
    assert instacart_brand_domains(titles) == domains  # fixed: no seed


@pytest.mark.dataset
def test_instacart_brand_shift_from_mirror(data_home):
    src = load_dataset("instacart-brand-shift", data_home)
    counts = src.frame["domain"].value_counts().to_dict()
    assert counts == {"catalog": 45149, "new-brands": 4539}
    from prodkg.catalogs.loaders import instacart_brand

    brands = {d: {instacart_brand(t) for t in g["title"]} for d, g in src.frame.groupby("domain")}
    assert not brands["catalog"] & brands["new-brands"]
