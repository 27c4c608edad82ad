"""Read a catalog (CSV, JSONL, Parquet; local path or fsspec URL), validate every row, quarantine bad ones."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import fsspec
import pandas as pd

from prodkg.catalogs.schema import (
    ATTRIBUTE_PREFIX,
    LABEL_COLUMN,
    MAX_ID_CHARS,
    MAX_LABEL_CHARS,
    MAX_TEXT_CHARS,
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
)
from prodkg.contracts import QUARANTINE
from prodkg.errors import CatalogError

FORMATS = ("csv", "jsonl", "parquet")
# Let oversized fields reach row validation (and the quarantine) instead of failing the whole file.
csv.field_size_limit(max(csv.field_size_limit(), 64 * 2**20))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
# ASCII text with none of these is already clean (no tags, entities, controls, runs of or outer white space)
_NEEDS_CLEANING = re.compile(r"[<&\x00-\x1f\x7f]|  |^ | $")


@dataclass
class IngestResult:
    """What ingest kept and what it quarantined; ``n_in == n_kept + n_quarantined`` always holds."""

    products: pd.DataFrame
    quarantine: pd.DataFrame
    attributes: list[str]
    n_in: int
    warnings: list[str] = field(default_factory=list)

    @property
    def n_kept(self) -> int:
        return len(self.products)

    @property
    def n_quarantined(self) -> int:
        return len(self.quarantine)


#: compressions a catalog file may carry (read transparently; the format is the suffix before them)
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".xz")


def detect_format(path: str) -> str:
    name = str(path).lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise CatalogError(f"cannot tell the format of catalog {path!r}: expected a name ending in .csv, .jsonl or .parquet")


def read_catalog(path: str | os.PathLike, fmt: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Read a catalog file into a frame of strings (or None), one row per record.

    Returns the frame and a list of records that could not even be parsed (for
    quarantine), each ``{"source_row", "reason", "raw"}``. Raises CatalogError for
    whole-file problems: missing file, unknown format, missing required columns, no rows.
    """
    path = str(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise CatalogError(f"unknown catalog format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        with fsspec.open(path, "rb", compression="infer") as fh:
            data = fh.read()
    except IsADirectoryError:
        raise CatalogError(f"catalog {path} is a directory, not a file") from None
    except FileNotFoundError:
        raise CatalogError(f"catalog not found: {path}") from None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    unparsed: list[dict] = []
    if not data.strip():
        raise CatalogError(f"catalog {path} is empty")
    if fmt == "csv":
        # surrogateescape keeps undecodable bytes visible, so the row is quarantined, not mangled
        text = data.decode("utf-8-sig", errors="surrogateescape")
        frame, unparsed = _read_csv_text(text, delimiter="\t" if path.lower().endswith(".tsv") else ",")
    elif fmt == "jsonl":
        records: list[dict] = []
        rows: list[int] = []
        for lineno, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                unparsed.append({"source_row": lineno, "reason": f"invalid JSON line: {exc}", "raw": line[:2000].decode("utf-8", "replace")})
                continue
            if not isinstance(obj, dict):
                unparsed.append({"source_row": lineno, "reason": f"JSON line is a {type(obj).__name__}, expected an object", "raw": line[:2000].decode("utf-8", "replace")})
                continue
            records.append({k: _as_text(v) for k, v in obj.items()})
            rows.append(lineno)
        frame = pd.DataFrame.from_records(records)
        frame.index = pd.Index(rows, name="source_row")
    else:
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"catalog {path} is not valid Parquet: {exc}") from exc
        frame = object_frame(frame)
    if fmt == "parquet":
        # source_row counts data rows from 1, as a person reading the file would
        frame.index = pd.Index(range(1, len(frame) + 1), name="source_row")
    if len(frame) == 0 and not unparsed:
        raise CatalogError(f"catalog {path} has no rows")
    if len(frame.columns) or not unparsed:
        check_columns(frame.columns, path)
    return frame, unparsed


def _read_csv_text(text: str, delimiter: str) -> tuple[pd.DataFrame, list[dict]]:
    """CSV through the csv module: object strings (pandas' Arrow strings reject undecodable bytes)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return pd.DataFrame(), []
    header = [h.strip() for h in header]
    records, rows, unparsed = [], [], []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            n = reader.line_num
            if len(row) != len(header):
                unparsed.append({"source_row": len(rows) + len(unparsed) + 1, "reason": f"expected {len(header)} fields, got {len(row)} (line {n})",
                                 "raw": delimiter.join(row)[:2000].encode("utf-8", "replace").decode("utf-8")})
                continue
            records.append(row)
            rows.append(len(rows) + len(unparsed) + 1)
    except csv.Error as exc:
        raise CatalogError(f"catalog is not valid CSV near line {reader.line_num}: {exc}") from exc
    frame = pd.DataFrame(records, columns=header, dtype=object)
    frame.index = pd.Index(rows, name="source_row")
    return frame, unparsed


def check_columns(columns, where: str = "catalog") -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in set(columns)]
    if missing:
        raise CatalogError(
            f"{where} lacks required column(s) {', '.join(missing)}; "
            f"expected at least {', '.join(REQUIRED_COLUMNS)} (got {', '.join(map(str, columns)) or 'no columns'})"
        )


def object_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as ``str`` or None, in object columns: Arrow-backed strings would reject the
    undecodable bytes that must reach validation to be quarantined."""
    return pd.DataFrame({c: pd.Series([v if type(v) is str else _as_text(v) for v in frame[c].tolist()], index=frame.index, dtype=object)
                         for c in frame.columns}, index=frame.index)


def _as_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bytes, bytearray, memoryview)):
        # a Parquet binary column: its text is the UTF-8 it holds; invalid bytes stay visible (as surrogates)
        # so the row is quarantined as not valid UTF-8, never passed on as a Python repr
        return bytes(value).decode("utf-8", errors="surrogateescape")
    return str(value)


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag, attrs) -> None:
        if tag in {"br", "p", "div", "li"}:
            self.parts.append(" ")


def clean_text(value: str | None) -> str:
    """Plain, single-spaced text: HTML tags and entities resolved, control characters removed."""
    if not value:
        return ""
    if value.isascii() and not _NEEDS_CLEANING.search(value):  # most catalog cells: 1.4x faster over 4 M of them
        return value
    if "<" in value and ">" in value:
        parser = _TextOnly()
        parser.feed(value)
        parser.close()
        value = "".join(parser.parts)
    value = html.unescape(value)
    value = unicodedata.normalize("NFC", value)
    value = _CONTROL.sub(" ", value)
    return _SPACES.sub(" ", value).strip()


def _is_url(value: str) -> bool:
    return "://" in value[:16]


def ingest(
    catalog: pd.DataFrame | str | os.PathLike,
    *,
    base_dir: str | os.PathLike | None = None,
    attributes: list[str] | None = None,
    check_images: bool = True,
    fmt: str | None = None,
    unparsed: list[dict] | None = None,
    image_limits=None,
) -> IngestResult:
    """Validate a catalog and split it into kept products and quarantined rows.

    Args:
        catalog: a path/URL to read, or a frame already in the catalog schema.
        base_dir: folder that relative image paths are resolved against
            (default: the catalog file's folder, or the working directory for a frame).
        attributes: attribute columns to keep (default: every non-reserved column).
        check_images: quarantine rows whose local image file does not exist.
        unparsed: records :func:`read_catalog` could not parse, when ``catalog`` is the frame
            it returned; they are quarantined and counted in ``n_in``.
        image_limits: an :class:`~prodkg.extractors.sources.ImageLimits`: with ``check_images``, a local image
            (or ``file:`` URL) outside its roots, not a regular file (device, FIFO) or above its byte cap, and a
            URL of another scheme than http(s), are quarantined from ``stat`` alone, nothing is read.
            Default: the library defaults (any folder; devices, FIFOs and oversize files still refused).

    Rules (each failure quarantines the row with its reason): a non-empty product_id
    and domain; at least one of title, description, image; valid UTF-8; bounded
    lengths; an existing local image file; a product_id seen once (exact repeats keep
    the first row, conflicting repeats quarantine every copy).
    """
    unparsed = list(unparsed or [])
    if isinstance(catalog, pd.DataFrame):
        frame = catalog.copy()
        if "source_row" in frame.columns:
            frame.index = pd.Index(frame.pop("source_row").astype(int), name="source_row")
        elif frame.index.name != "source_row":  # a frame from read_catalog keeps its file row numbers
            frame.index = pd.Index(range(1, len(frame) + 1), name="source_row")
        frame = object_frame(frame)
        check_columns(frame.columns)
        if len(frame) == 0 and not unparsed:
            raise CatalogError("catalog has no rows")
        base = Path(base_dir) if base_dir else Path.cwd()
    else:
        frame, unparsed = read_catalog(catalog, fmt)
        if base_dir:
            base = Path(base_dir)
        elif _is_url(str(catalog)):
            base = Path.cwd()
        else:
            base = Path(catalog).resolve().parent
    extra = [c for c in frame.columns if c not in RESERVED_COLUMNS and not str(c).startswith("_")]
    if attributes is None:
        attr_cols = extra
    else:
        unknown = [a for a in attributes if a not in frame.columns and ATTRIBUTE_PREFIX + a not in frame.columns]
        if unknown:
            raise CatalogError(f"attribute column(s) {', '.join(unknown)} not in catalog (columns: {', '.join(map(str, frame.columns))})")
        attr_cols = [a if a in frame.columns else ATTRIBUTE_PREFIX + a for a in attributes]
    attr_names = [c.removeprefix(ATTRIBUTE_PREFIX) for c in attr_cols]
    if len(set(attr_names)) != len(attr_names):
        raise CatalogError(f"attribute columns collide after removing the {ATTRIBUTE_PREFIX!r} prefix: {attr_cols}")
    warnings = []
    ignored = [c for c in extra if c not in attr_cols]
    if ignored:
        warnings.append(f"ignored column(s) not listed as attributes: {', '.join(map(str, ignored))}")
    has_category = LABEL_COLUMN in frame.columns

    kept: list[dict] = []
    quarantined: list[dict] = [{"stage": "ingest", "product_id": None, **u} for u in unparsed]
    for source_row, row in zip(frame.index, frame.to_dict("records")):
        record, reason = _validate_row(row, attr_cols, attr_names, has_category, base, check_images, image_limits)
        if reason:
            quarantined.append(_quarantine_entry("ingest", int(source_row), row, reason))
        else:
            record["source_row"] = int(source_row)
            kept.append(record)

    kept, dup_quarantine = _resolve_duplicates(kept, frame, quarantined)
    quarantined.extend(dup_quarantine)
    columns = ["product_id", "title", "description", "image", "domain", "category", *attr_names, "source_row"]
    products = pd.DataFrame.from_records(kept, columns=columns)
    products["source_row"] = products["source_row"].astype("int64")
    for col in columns[:-1]:
        products[col] = products[col].astype("string")
    quarantine = pd.DataFrame.from_records(quarantined, columns=QUARANTINE.columns)
    quarantine["source_row"] = quarantine["source_row"].astype("Int64")
    n_in = len(frame) + len(unparsed)
    assert n_in == len(products) + len(quarantine), "ingest counts must reconcile"
    return IngestResult(products=products.reset_index(drop=True), quarantine=quarantine, attributes=attr_names, n_in=n_in, warnings=warnings)


def _quarantine_entry(stage: str, source_row: int | None, row: dict, reason: str) -> dict:
    raw = json.dumps({k: v for k, v in row.items()}, ensure_ascii=True, default=str)
    if len(raw) > 4000:
        raw = raw[:4000] + "…"
    pid = row.get("product_id")
    if len(reason) > 500:  # a reason quotes the bad value; a 1 MB value must not make a 1 MB reason
        reason = reason[:500] + "…"
    return {"stage": stage, "source_row": source_row, "product_id": _SURROGATE.sub("\ufffd", pid) if isinstance(pid, str) else None, "reason": reason, "raw": raw}


def _validate_row(row: dict, attr_cols, attr_names, has_category: bool, base: Path, check_images: bool, image_limits=None):
    for key, value in row.items():
        if isinstance(value, str) and _SURROGATE.search(value):
            return None, f"column {key!r} is not valid UTF-8"
    pid = (row.get("product_id") or "").strip()
    if not pid:
        return None, "missing product_id"
    if len(pid) > MAX_ID_CHARS:
        return None, f"product_id longer than {MAX_ID_CHARS} characters"
    domain = clean_text(row.get("domain"))
    if not domain:
        return None, "missing domain"
    texts = {}
    for col in ("title", "description"):
        raw = row.get(col) or ""
        if len(raw) > MAX_TEXT_CHARS:
            return None, f"{col} longer than {MAX_TEXT_CHARS} characters ({len(raw)})"
        texts[col] = clean_text(raw)
    image = (row.get("image") or "").strip() or None
    if image and not _is_url(image):
        # os.path.expanduser leaves "~nosuchuser" as it is (Path.expanduser would raise)
        path = Path(os.path.expanduser(image))
        if not path.is_absolute():
            path = base / path
        try:
            exists = path.is_file()
            is_dir = not exists and path.is_dir()  # a regular file is never a directory: one stat for most rows
            resolved = str(path.resolve())
        except (OSError, ValueError) as exc:  # embedded NUL, name too long, loops
            return None, f"image path is not a usable file path: {exc}"
        if check_images and is_dir:
            return None, f"image path is a directory, not a file: {resolved} (catalog value {image!r})"
        if check_images and not exists and not os.path.lexists(path):
            return None, f"image file not found: {resolved} (catalog value {image!r})"
        if check_images:
            refused = _refused_image(path, image, image_limits)
            if refused:
                return None, refused
        image = resolved
    elif image and check_images:
        refused = _refused_image(None, image, image_limits)
        if refused:
            return None, refused
    if not (texts["title"] or texts["description"] or image):
        return None, "no title, description or image: nothing to learn from"
    record = {"product_id": pid, "title": texts["title"], "description": texts["description"], "image": image, "domain": domain}
    labels = [(LABEL_COLUMN, LABEL_COLUMN)] if has_category else []
    record[LABEL_COLUMN] = None
    for col, name in [*labels, *zip(attr_cols, attr_names)]:
        value = clean_text(row.get(col))
        if len(value) > MAX_LABEL_CHARS:
            return None, f"{col} longer than {MAX_LABEL_CHARS} characters"
        record[name] = value or None
    return record, None


def _refused_image(path: Path | None, image: str, limits) -> str | None:
    """Why the image limits refuse a local path (or a URL: by its scheme, and a file URL by its path), or None.

    Only ``stat`` is used here: a device, FIFO or file outside the roots is refused before anything opens it.
    """
    from prodkg.extractors.sources import DEFAULT_LIMITS, URL_SCHEMES, SourceRefused, check_local, file_url_path

    limits = limits or DEFAULT_LIMITS
    try:
        if path is None:
            scheme = image.split("://", 1)[0].lower()
            if scheme in URL_SCHEMES or scheme in limits.fsspec_schemes:
                return None
            if scheme != "file":
                return f"image refused: {image}: URL scheme {scheme!r} is not read; images are local files or http(s) URLs (or list it in image_fsspec_schemes)"
            path = Path(file_url_path(image))
        check_local(path, limits)
    except SourceRefused as exc:
        return f"image refused: {image}: {exc}"
    except FileNotFoundError:
        return f"image file not found: {path} (catalog value {image!r})"
    except OSError as exc:
        return f"image unreadable: {image}: {exc.strerror or exc}"
    return None


def _resolve_duplicates(kept: list[dict], frame: pd.DataFrame, quarantined: list[dict] = ()) -> tuple[list[dict], list[dict]]:
    by_id: dict[str, list[int]] = {}
    for i, rec in enumerate(kept):
        by_id.setdefault(rec["product_id"], []).append(i)
    # a copy quarantined for another reason still conflicts: the valid copy must not pass silently
    bad_rows: dict[str, list[int]] = {}
    for q in quarantined:
        pid = q.get("product_id")
        if isinstance(pid, str) and pid.strip() and q.get("source_row") is not None:
            bad_rows.setdefault(pid.strip(), []).append(int(q["source_row"]))
    drop: dict[int, str] = {}
    for pid, idx in by_id.items():
        if pid in bad_rows:
            rows = ", ".join(str(r) for r in sorted([*(kept[i]["source_row"] for i in idx), *bad_rows[pid]]))
            for i in idx:
                drop[i] = f"product_id {pid!r} appears in rows {rows} with different content (another copy is quarantined)"
            continue
        if len(idx) == 1:
            continue
        first = kept[idx[0]]
        content = lambda r: {k: v for k, v in r.items() if k != "source_row"}  # noqa: E731
        if all(content(kept[i]) == content(first) for i in idx[1:]):
            for i in idx[1:]:
                drop[i] = f"exact duplicate of row {first['source_row']} (product_id {pid!r})"
        else:
            rows = ", ".join(str(kept[i]["source_row"]) for i in idx)
            for i in idx:
                drop[i] = f"product_id {pid!r} appears in rows {rows} with different content"
    if not drop:
        return kept, []
    raw_rows = frame.to_dict("index")
    quarantine = [
        _quarantine_entry("ingest", kept[i]["source_row"], raw_rows.get(kept[i]["source_row"], kept[i]), reason)
        for i, reason in sorted(drop.items())
    ]
    return [r for i, r in enumerate(kept) if i not in drop], quarantine
