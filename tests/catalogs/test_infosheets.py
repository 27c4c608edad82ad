"""Parsing the Grocery Store dataset's information sheets: text forms, then real sheets (need $PRODKG_DATA_HOME)."""

from __future__ import annotations

import pytest

from prodkg.catalogs.infosheets import SheetAttributes, parse_infosheet, read_infosheet

SHEETS = "grocery-store-dataset/dataset/iconic-images-and-descriptions"


def test_manufacturer_and_volume_line():
    sheet = "Title: Äpple Juice \nManufacturer and volume: BRAVO , 2l \nManufacturing country: Sverige \n"
    assert parse_infosheet(sheet) == SheetAttributes("BRAVO", "Sweden", "2 l")


def test_country_and_volume_with_circa_and_decimal():
    assert parse_infosheet("Country and volume: Spain, ca 1.05kg") == SheetAttributes(None, "Spain", "1.05 kg")
    assert parse_infosheet("Country and volume: The Netherlands, ca 1,5dl") == SheetAttributes(None, "Netherlands", "1.5 dl")


def test_country_only_and_first_key_wins():
    assert parse_infosheet("Country: Peru \nCountry: Chile") == SheetAttributes(None, "Peru", None)


def test_value_without_a_volume_keeps_the_whole_text():
    assert parse_infosheet("Manufacturer and volume: Arla, Sweden") == SheetAttributes("Arla, Sweden", None, None)


def test_sheet_without_known_keys_says_nothing(tmp_path):
    assert parse_infosheet("Title: Something\nIngredients: water") == SheetAttributes()
    assert read_infosheet(tmp_path / "missing.txt") == SheetAttributes()


@pytest.mark.dataset
@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("Packages/Juice/Bravo-Apple-Juice/Bravo-Apple-Juice_Information.txt", ("BRAVO", "Sweden", "2 l")),
        ("Packages/Milk/Arla-Standard-Milk/Arla-Standard-Milk_Information.txt", ("ARLA KO", "Sweden", "1 l")),
        ("Packages/Yoghurt/Valio-Vanilla-Yoghurt/Valio-Vanilla-Yoghurt_Information.txt", ("VALIO", "Finland", "1 kg")),
        ("Packages/Soy-Milk/Alpro-Fresh-Soy-Milk/Alpro-Fresh-Soy-Milk_Information.txt", ("ALPRO", None, "1 l")),
        ("Packages/Sour-Cream/Arla-Sour-Cream/Arla-Sour-Cream_Information.txt", ("ARLA KO", "Sweden", "3 dl")),
        ("Fruit/Apple/Golden-Delicious/Golden-Delicious_Information.txt", (None, "Italy", "180 g")),
        ("Fruit/Melon/Cantaloupe/Cantaloupe_Information.txt", (None, "Spain", "1.05 kg")),
        ("Fruit/Avocado/Avocado_Information.txt", (None, "Peru", None)),
        ("Vegetables/Cabbage/Cabbage-Information.txt", (None, "Germany", "2.8 kg")),
        ("Vegetables/Carrots/Carrots_Information.txt", (None, "Netherlands", "170 g")),
    ],
)
def test_real_sheets(data_home, relative, expected):
    path = data_home / SHEETS / relative
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    assert read_infosheet(path) == SheetAttributes(*expected)


@pytest.mark.dataset
def test_grocery_catalog_carries_the_sheet_attributes(data_home):
    from prodkg.catalogs import load_dataset

    frame = load_dataset("grocery-store-dataset", data_home, download=False).frame
    iconic = frame[frame["domain"] == "iconic"].set_index("product_id")
    # counts of the sheet keys (PROVENANCE.md): 31 "Manufacturer and volume"; 4 Alpro sheets name no country
    assert iconic["manufacturer"].notna().sum() == 31
    assert iconic["country_of_origin"].notna().sum() == 77
    assert iconic.loc["iconic/Oatly-Natural-Oatghurt", ["manufacturer", "country_of_origin", "volume"]].tolist() == ["OATLY", "Sweden", "1 kg"]
    assert frame.loc[frame["domain"] == "instore", "manufacturer"].isna().all()
