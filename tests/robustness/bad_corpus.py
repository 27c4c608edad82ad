"""A corpus of bad catalog input, each kind with its expected outcome, written into a folder on demand.

Every kind is a row (or a whole file) a nightly feed really produces. ``build_corpus``
writes one CSV catalog holding all row-level kinds next to good rows, plus the images
they point at; ``EXPECTED`` says what must happen to each row.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

COLUMNS = ["product_id", "title", "description", "image", "domain", "category", "color"]


@dataclass(frozen=True)
class Outcome:
    kept: bool
    stage: str | None = None  # where it is quarantined
    reason: str | None = None  # a substring of the quarantine reason


def _png(path: Path, colour: tuple[int, int, int], shape: str) -> None:
    img = Image.new("RGB", (64, 64), (250, 250, 250))
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    (d.ellipse if shape == "round" else d.rectangle)((12, 12, 52, 52), fill=colour)
    img.save(path)


def _bomb_png(path: Path, side: int = 60_000) -> None:
    """A tiny PNG whose header claims side×side pixels: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


HOSTILE_ID = 'id with spaces/slash "quote" > # } é 中'

# product_id -> expected outcome; ids are what the catalog row says
EXPECTED: dict[str, Outcome] = {
    "good-s1": Outcome(True), "good-s2": Outcome(True), "good-s3": Outcome(True),
    "good-s4": Outcome(True), "good-s5": Outcome(True), "good-s6": Outcome(True),
    "good-t1": Outcome(True), "good-t2": Outcome(True), "good-t3": Outcome(True),
    "truncated-jpeg": Outcome(False, "extract", "image"),
    "corrupt-bytes": Outcome(False, "extract", "image"),
    "zero-byte-image": Outcome(False, "extract", "image"),
    "huge-dimension-image": Outcome(False, "extract", "image"),
    "text-file-as-jpeg": Outcome(False, "extract", "image"),
    "missing-image-file": Outcome(False, "ingest", "image file not found"),
    "unreachable-url": Outcome(False, "extract", "image"),
    "latin1-title": Outcome(False, "ingest", "not valid UTF-8"),
    "cp1252-quotes": Outcome(False, "ingest", "not valid UTF-8"),
    "empty-title-with-image": Outcome(True),
    "nothing-at-all": Outcome(False, "ingest", "nothing to learn from"),
    "megabyte-title": Outcome(False, "ingest", "title longer than"),
    "html-and-control": Outcome(True),
    "dup-conflict": Outcome(False, "ingest", "different content"),
    HOSTILE_ID: Outcome(True),
    "unseen-label": Outcome(True),
}
N_ROWS = len(EXPECTED) + 1  # dup-conflict appears twice, and both copies are quarantined
# Row-level kinds above, plus the whole-file kinds tested separately: missing required
# column, unknown extra column, empty catalog, catalog whose target domain is empty.
WHOLE_FILE_KINDS = ("missing-required-column", "unknown-extra-column", "empty-catalog", "empty-target-domain")


def build_corpus(folder: Path) -> Path:
    """Write the bad-input catalog and its images into ``folder``; return the catalog path."""
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    red, blue = (200, 30, 30), (30, 30, 200)
    for name, colour, shape in [("s1", red, "round"), ("s2", red, "round"), ("s3", red, "round"),
                                ("s4", blue, "square"), ("s5", blue, "square"), ("s6", blue, "square"),
                                ("t1", red, "round"), ("t2", blue, "square"), ("t3", red, "square")]:
        _png(img / f"{name}.png", colour, shape)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format="JPEG")
    (img / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (img / "corrupt.jpg").write_bytes(bytes(range(256)) * 8)
    (img / "empty.jpg").write_bytes(b"")
    _bomb_png(img / "bomb.png")
    (img / "notes.jpg").write_text("this is a text file, not a JPEG\n", encoding="utf-8")

    def row(pid, title, image, domain, category, color="", description=""):
        return [pid, title, description, image, domain, category, color]

    rows = [
        row("good-s1", "Red round ceramic mug", "img/s1.png", "shop", "mug", "red"),
        row("good-s2", "Red coffee mug, round handle", "img/s2.png", "shop", "mug", "red"),
        row("good-s3", "Round red tea cup", "img/s3.png", "shop", "mug", "red"),
        row("good-s4", "Blue square box file", "img/s4.png", "shop", "box", "blue"),
        row("good-s5", "Blue cardboard storage box", "img/s5.png", "shop", "box", "blue"),
        row("good-s6", "Square blue box", "img/s6.png", "shop", "box", "blue"),
        row("good-t1", "MUG RED ROUND", "img/t1.png", "feed", "mug"),
        row("good-t2", "BOX BLUE SQ", "img/t2.png", "feed", "box"),
        row("good-t3", "BOX RED", "img/t3.png", "feed", "box"),
        row("truncated-jpeg", "Mug", "img/truncated.jpg", "feed", "mug"),
        row("corrupt-bytes", "Mug", "img/corrupt.jpg", "feed", "mug"),
        row("zero-byte-image", "Box", "img/empty.jpg", "feed", "box"),
        row("huge-dimension-image", "Box", "img/bomb.png", "feed", "box"),
        row("text-file-as-jpeg", "Box", "img/notes.jpg", "feed", "box"),
        row("missing-image-file", "Box", "img/does-not-exist.jpg", "feed", "box"),
        row("unreachable-url", "Box", "http://127.0.0.1:9/box.jpg", "feed", "box"),
        row("latin1-title", "LATIN1", "", "feed", "mug"),
        row("cp1252-quotes", "CP1252", "", "feed", "mug"),
        row("empty-title-with-image", "", "img/t1.png", "feed", "mug"),
        row("nothing-at-all", "", "", "feed", "mug"),
        row("megabyte-title", "M" * 1_048_576, "", "feed", "mug"),
        row("html-and-control", "<b>Blue</b> box&nbsp;file\x07\x1b with <script>alert(1)</script>", "", "feed", "box"),
        row("dup-conflict", "Blue box", "", "feed", "box"),
        row("dup-conflict", "Red mug", "", "feed", "mug"),
        row(HOSTILE_ID, "Round mug", "", "feed", "mug"),
        row("unseen-label", "Desk lamp with blue shade", "", "feed", "lamp"),
    ]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    data = text.getvalue().encode("utf-8")
    # bytes that are not UTF-8, as a feed exported from a legacy system would send them
    data = data.replace(b"LATIN1", "Café crème bowl".encode("latin-1"))
    data = data.replace(b"CP1252", "\u201cSmart\u201d quoted mug".encode("cp1252"))
    path = folder / "catalog.csv"
    path.write_bytes(data)
    return path
