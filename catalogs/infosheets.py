"""Attributes from the Grocery Store dataset's information sheets: manufacturer, country of origin, volume."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from prodkg.errors import DataLoadError

__all__ = ["COUNTRY_NAMES", "SheetAttributes", "parse_infosheet", "read_infosheet"]

#: country names as the sheets write them (Swedish or English) -> one English name
COUNTRY_NAMES: dict[str, str] = {
    "sverige": "Sweden",
    "the netherlands": "Netherlands",
    "holland": "Netherlands",
    "nederländerna": "Netherlands",
    "danmark": "Denmark",
    "tyskland": "Germany",
    "spanien": "Spain",
    "italien": "Italy",
    "finland": "Finland",
    "usa": "United States",
}

_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
_QUANTITY = re.compile(r"^(?:ca\.?\s*)?(\d+(?:[.,]\d+)?)\s*([A-Za-z]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class SheetAttributes:
    """What one sheet says; None where it says nothing. ``volume`` is ``"<number> <unit>"``."""

    manufacturer: str | None = None
    country_of_origin: str | None = None
    volume: str | None = None

    def as_columns(self) -> dict[str, str | None]:
        return {"manufacturer": self.manufacturer, "country_of_origin": self.country_of_origin, "volume": self.volume}


def _country(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    return COUNTRY_NAMES.get(text.lower(), text)


def _volume(text: str) -> str | None:
    match = _QUANTITY.match(text.strip())
    if match is None:
        return None
    return f"{match.group(1).replace(',', '.')} {match.group(2).lower()}"


def _split_value_and_volume(text: str) -> tuple[str | None, str | None]:
    """``"BRAVO , 2l"`` -> ("BRAVO", "2 l"); ``"Italy, ca 180g"`` -> ("Italy", "180 g")."""
    # the leftmost comma whose tail reads as a volume: a decimal comma ("1,5dl") stays in the tail
    for i, ch in enumerate(text):
        if ch == ",":
            volume = _volume(text[i + 1 :])
            if volume is not None:
                return text[:i].strip() or None, volume
    return text.strip() or None, None


def parse_infosheet(text: str) -> SheetAttributes:
    """Read the ``Key: value`` lines of one sheet.

    ``Manufacturer and volume: BRAVO , 2l`` gives the manufacturer (as written, upper case)
    and the volume; ``Country and volume: Italy, ca 180g`` the country of origin and volume
    ("ca" dropped); ``Manufacturing country:`` and ``Country:`` the country of origin. Swedish
    country names become English ones. The first occurrence of a key wins: the nutrition
    blocks below sometimes repeat lines.
    """
    if not isinstance(text, str):
        raise DataLoadError(f"parse_infosheet: expected the sheet text, got {type(text).__name__}")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            fields.setdefault(match.group(1).lower(), match.group(2))
    manufacturer = country = volume = None
    if "manufacturer and volume" in fields:
        manufacturer, volume = _split_value_and_volume(fields["manufacturer and volume"])
    if "country and volume" in fields:
        place, amount = _split_value_and_volume(fields["country and volume"])
        country = _country(place or "")
        volume = volume or amount
    for key in ("manufacturing country", "country"):
        if country is None and key in fields:
            country = _country(fields[key])
    return SheetAttributes(manufacturer=manufacturer, country_of_origin=country, volume=volume)


def read_infosheet(path: str | Path) -> SheetAttributes:
    """Parse the sheet at ``path``; a missing file says nothing (every field None)."""
    path = Path(path)
    if not path.is_file():
        return SheetAttributes()
    try:
        return parse_infosheet(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise DataLoadError(f"cannot read information sheet {path}: {exc}") from exc
