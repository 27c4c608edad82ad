"""Loaders that turn real public datasets into the catalog schema, from a local mirror or a verified download."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from prodkg.errors import DataLoadError
from prodkg.registry import Registry

DATA_HOME_ENV = "PRODKG_DATA_HOME"


@dataclass
class CatalogSource:
    """A dataset turned into a catalog: the rows, its taxonomy and where it came from.

    ``taxonomy`` lists ``(concept, parent or None)`` pairs from the top down; every
    category label in ``frame`` is one of the concepts.
    """

    name: str
    frame: pd.DataFrame
    taxonomy: list[tuple[str, str | None]]
    root: Path
    citation: str
    default_source: list[str] = field(default_factory=list)
    default_target: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # folder name under the data home
    tree: str  # sub-folder whose files the checksum covers
    url: str  # a zip of the public repository at a pinned commit
    archive_prefix: str  # folder inside the zip that maps to ``folder``
    tree_sha256: str  # checksum of the sorted (path, sha256) list of the files under ``tree``
    n_files: int
    build: Callable[[Path], CatalogSource]
    # Datasets assembled from single files instead of one archive: name -> (url, sha256).
    files: tuple[tuple[str, str, str], ...] = ()
    # Its domains and the default source/target, known without reading the data (configs are checked against them).
    domains: tuple[str, ...] = ()
    default_source: tuple[str, ...] = ()
    default_target: tuple[str, ...] = ()
    description: str = ""


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def list_datasets() -> list[str]:
    return DATASETS.names()


def data_home(explicit: str | os.PathLike | None = None) -> Path | None:
    """The dataset mirror, made absolute: the catalogs built from it carry file paths that must not depend on
    the working directory (a relative ``PRODKG_DATA_HOME=../shared/datasets`` would otherwise give image paths
    that ingest resolves a second time against the dataset folder)."""
    value = explicit or os.environ.get(DATA_HOME_ENV)
    return Path(value).expanduser().resolve() if value else None


def tree_checksum(root: Path) -> tuple[str, int]:
    """SHA-256 over the sorted ``relative path<TAB>sha256(file)`` lines of every file under root."""
    digest = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                file_hash = hashlib.file_digest(fh, "sha256").hexdigest()
            digest.update(f"{os.path.relpath(path, root)}\t{file_hash}\n".encode())
            count += 1
    return digest.hexdigest(), count


def load_dataset(name: str, home: str | os.PathLike | None = None, *, download: bool = True) -> CatalogSource:
    """Load a registered dataset from ``home`` (or ``$PRODKG_DATA_HOME``), downloading it when absent."""
    spec = DATASETS.get(name)
    base = data_home(home)
    if base is not None and (base / spec.folder / spec.tree).exists():
        return spec.build(base / spec.folder)
    if not download:
        raise DataLoadError(f"dataset {spec.name!r} not found under {base or '(no data home)'}; set ${DATA_HOME_ENV} to the folder holding {spec.folder}/")
    if base is None:
        base = Path.home() / ".cache" / "prodkg" / "datasets"
    return spec.build(_download(spec, base))


def _fetch(url: str, dest: Path, what: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise DataLoadError(f"cannot download {what} from {url}: {exc}; set ${DATA_HOME_ENV} to a local mirror instead") from exc


def _download_files(spec: DatasetSpec, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name, url, sha in spec.files:
        dest = target / name
        if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha:
            continue
        partial = dest.with_suffix(dest.suffix + ".partial")
        _fetch(url, partial, f"{spec.name} {name}")
        got = hashlib.sha256(partial.read_bytes()).hexdigest()
        if got != sha:
            partial.unlink()
            raise DataLoadError(f"{spec.name}: {name} does not match its pinned sha256 (got {got[:12]}…, expected {sha[:12]}…)")
        partial.replace(dest)
    return target


def _download(spec: DatasetSpec, base: Path) -> Path:
    """Fetch the pinned archive, verify the checksum of its files and move it into place."""
    target = base / spec.folder
    base.mkdir(parents=True, exist_ok=True)
    if spec.files:
        return _download_files(spec, target)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        archive = Path(tmp) / "archive.zip"
        _fetch(spec.url, archive, spec.name)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        root = next(Path(tmp).glob(spec.archive_prefix))
        checksum, count = tree_checksum(root / spec.tree)
        if checksum != spec.tree_sha256:
            raise DataLoadError(f"{spec.name}: downloaded files do not match the pinned checksum ({count} files, sha256 {checksum[:12]}…, expected {spec.tree_sha256[:12]}… over {spec.n_files} files)")
        staged = Path(tmp) / "staged"
        staged.mkdir()
        shutil.move(str(root / spec.tree), str(staged / spec.tree))
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staged), str(target))
    return target


# --- office-caltech-10 -----------------------------------------------------------------

OFFICE_DOMAINS = ("amazon", "caltech10", "dslr", "webcam")


def build_office_caltech(root: Path) -> CatalogSource:
    rows = []
    images = root / "images"
    for domain in OFFICE_DOMAINS:
        for class_dir in sorted((images / domain).iterdir()):
            if not class_dir.is_dir():
                continue
            for img in sorted(class_dir.glob("*.jpg")):
                rows.append(
                    {
                        "product_id": f"{domain}/{class_dir.name}/{img.stem}",
                        # These are photos without any text: the text modality is absent.
                        "title": "",
                        "description": "",
                        "image": str(img),
                        "domain": domain,
                        "category": class_dir.name,
                    }
                )
    if not rows:
        raise DataLoadError(f"no images under {images}")
    frame = pd.DataFrame(rows)
    classes = sorted(frame["category"].unique())
    return CatalogSource(
        name="office-caltech-10",
        frame=frame,
        taxonomy=[(c, None) for c in classes],
        root=root,
        citation="Saenko et al. ECCV 2010; Griffin et al. 2007; Gong et al. CVPR 2012 (research use only)",
        default_source=["amazon"],
        default_target=["webcam"],
    )


DATASETS.register("office-caltech-10", aliases=("office_caltech", "office-caltech"))(
    DatasetSpec(
        name="office-caltech-10",
        folder="office-caltech-10",
        tree="images",
        url="https://github.com/LeoGautheron/OfficeCaltechDomainAdaptation/archive/0bcf68398284dbef34b04b70e5b897815b11147b.zip",
        archive_prefix="OfficeCaltechDomainAdaptation-*",
        tree_sha256="33f067cbc9a1966cb3822b3d71ec9b6acd3e0836af2db92fff7f48998406c141",
        n_files=2533,
        build=build_office_caltech,
        domains=("amazon", "caltech10", "dslr", "webcam"),
        default_source=("amazon",),
        default_target=("webcam",),
        description="10 object classes photographed in four domains (catalog photos, webcam, DSLR, Caltech-256)",
    )
)


# --- grocery-store-dataset -------------------------------------------------------------


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def _grocery_sheet(description_path: Path):
    """The information sheet next to a product's description (one is named ``X-Information.txt``)."""
    from prodkg.catalogs.infosheets import SheetAttributes, read_infosheet

    stem = description_path.name.removesuffix("_Description.txt")
    for name in (f"{stem}_Information.txt", f"{stem}-Information.txt"):
        if (description_path.parent / name).is_file():
            return read_infosheet(description_path.parent / name)
    return SheetAttributes()


def build_grocery(root: Path) -> CatalogSource:
    """Iconic catalog photos with descriptions (domain ``iconic``) and in-store photos (domain ``instore``).

    Category is the fine class; the taxonomy is top level → coarse class → fine class.
    Where a fine class has no level of its own (e.g. Banana), it is its coarse class.
    Iconic products carry the attributes ``manufacturer``, ``country_of_origin`` and
    ``volume`` parsed from their information sheets (see :mod:`catalogs.infosheets`).
    """
    ds = root / "dataset"
    with open(ds / "classes.csv", encoding="utf-8-sig", newline="") as fh:
        classes = list(csv.DictReader(fh))
    fine_by_id: dict[int, str] = {}
    taxonomy: dict[str, str | None] = {}
    rows = []
    for c in classes:
        fine, coarse = c["Class Name (str)"], c["Coarse Class Name (str)"]
        fine_by_id[int(c["Class ID (int)"])] = fine
        iconic = c["Iconic Image Path (str)"].lstrip("/")
        top = iconic.split("/")[1]
        taxonomy.setdefault(top, None)
        taxonomy.setdefault(coarse, top)
        if fine != coarse:
            taxonomy[fine] = coarse
        desc_path = ds / c["Product Description Path (str)"].lstrip("/")
        rows.append(
            {
                "product_id": f"iconic/{fine}",
                "title": fine.replace("-", " "),
                "description": _read_text(desc_path),
                "image": str(ds / iconic),
                "domain": "iconic",
                "category": fine,
                "_split": "catalog",
                # manufacturer, country_of_origin, volume from the product's information sheet
                **_grocery_sheet(desc_path).as_columns(),
            }
        )
    for split in ("train", "val", "test"):
        with open(ds / f"{split}.txt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rel, fine_id, _coarse_id = (p.strip() for p in line.split(","))
                fine = fine_by_id[int(fine_id)]
                rows.append(
                    {
                        "product_id": f"instore/{Path(rel).with_suffix('')}",
                        "title": "",
                        "description": "",
                        "image": str(ds / rel),
                        "domain": "instore",
                        "category": fine,
                        "_split": split,
                    }
                )
    return CatalogSource(
        name="grocery-store-dataset",
        frame=pd.DataFrame(rows),
        taxonomy=list(taxonomy.items()),
        root=root,
        citation="Klasson, Zhang, Kjellström. A Hierarchical Grocery Store Image Dataset with Visual and Semantic Labels. WACV 2019",
        default_source=["iconic"],
        default_target=["instore"],
    )


DATASETS.register("grocery-store-dataset", aliases=("grocery", "grocery-store"))(
    DatasetSpec(
        name="grocery-store-dataset",
        folder="grocery-store-dataset",
        tree="dataset",
        url="https://github.com/marcusklasson/GroceryStoreDataset/archive/fc80ba90f803d79d0383df52c5a4ac5de99ff6fc.zip",
        archive_prefix="GroceryStoreDataset-*",
        tree_sha256="fcece199722a7edc2a16443cf12908eb297609a93784c98d5a87455affac936f",
        n_files=5695,
        build=build_grocery,
        domains=("iconic", "instore"),
        default_source=("iconic",),
        default_target=("instore",),
        description="81 grocery products: one catalog photo and description each, 5,421 in-store photos; top → coarse → fine taxonomy",
    )
)


# --- instacart-products ----------------------------------------------------------------

INSTACART_MISSING = "missing"


def _instacart_domain(product_id: str) -> str:
    """A fixed, seed-free 80/20 split by hashed product id: the labelled catalog and a "new" feed.

    The data has no natural second domain; this stands in for a new supplier feed whose
    products must be placed in the existing aisles. It is documented as such.
    """
    return "new" if int(hashlib.sha256(product_id.encode()).hexdigest()[:8], 16) % 5 == 0 else "catalog"


#: How many of the most frequent leading words count as generic ("organic", "original", "chocolate", ...): a
#: title led by one of them names no brand and stays in the catalog of the brand-shift split.
INSTACART_GENERIC_LEADS = 200


def instacart_brand(title: str) -> str:
    """The brand key of a product title: its first word, lower-cased (letters and digits only; "" for none).

    Instacart titles mostly begin with the brand ("Oikos Greek Yogurt ..."), so the first word is the
    brand proxy of :func:`instacart_brand_domains`; where it is a generic word instead, that function
    recognises it by its frequency.
    """
    words = re.findall(r"[a-z0-9]+", title.lower())
    return words[0] if words else ""


def instacart_brand_domains(titles: Sequence[str]) -> list[str]:
    """A fixed split by brand: ``"catalog"`` or ``"new-brands"`` for each title.

    The brand key is :func:`instacart_brand`. The :data:`INSTACART_GENERIC_LEADS` most frequent
    keys over all titles are generic words, not brands, and their products stay in the catalog.
    Every other key goes, with all its products, to ``new-brands`` when the first 8 hex digits of
    its SHA-256 are 0 modulo 5 (a fifth of the brands; seed-free), so no brand of the new
    supplier ever occurs in the catalog. On the 49,688 products: 4,539 in ``new-brands``.
    """
    keys = [instacart_brand(t) for t in titles]
    counts = Counter(keys)
    generic = set(sorted(counts, key=lambda k: (-counts[k], k))[:INSTACART_GENERIC_LEADS])

    def domain(k: str) -> str:
        new = k not in generic and _instacart_domain(k) == "new"  # the same hashed 1-in-5 draw as the catalog/new split
        return "new-brands" if new else "catalog"

    return [domain(k) for k in keys]


def build_instacart_brand_shift(root: Path) -> CatalogSource:
    """instacart-products split by brand (:func:`instacart_brand_domains`) instead of at random: the
    ``new-brands`` target holds only brands that never occur in the ``catalog`` source."""
    src = build_instacart(root)
    frame = src.frame.copy()
    frame["domain"] = instacart_brand_domains(frame["title"].tolist())
    return dataclasses.replace(src, name="instacart-brand-shift", frame=frame, default_target=["new-brands"])


def build_instacart(root: Path) -> CatalogSource:
    """49,688 product titles, text only; category = aisle, taxonomy department → aisle.

    Products in the placeholder aisle/department "missing" keep no category (unlabelled).
    Aisle and department names can coincide ("other"), so department concepts get a
    ``department:`` key and the display label separately.
    """
    def table(name: str, key: str, value: str) -> dict[str, str]:
        with open(root / name, encoding="utf-8", newline="") as fh:
            return {r[key]: r[value] for r in csv.DictReader(fh)}

    aisles = table("aisles.csv", "aisle_id", "aisle")
    departments = table("departments.csv", "department_id", "department")
    rows, parent_of = [], {}
    with open(root / "products.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            aisle, dept = aisles[r["aisle_id"]], departments[r["department_id"]]
            labelled = aisle != INSTACART_MISSING and dept != INSTACART_MISSING
            if labelled:
                parent_of.setdefault(aisle, dept)
            rows.append({"product_id": r["product_id"], "title": r["product_name"], "description": "", "image": "",
                         "domain": _instacart_domain(r["product_id"]), "category": aisle if labelled else ""})
    taxonomy: list[tuple] = [(f"department:{d}", None, d) for d in sorted(set(parent_of.values()))]
    taxonomy += [(a, f"department:{d}", a) for a, d in sorted(parent_of.items())]
    return CatalogSource(
        name="instacart-products",
        frame=pd.DataFrame(rows),
        taxonomy=taxonomy,
        root=root,
        citation="The Instacart Online Grocery Shopping Dataset 2017 (research use only)",
        default_source=["catalog"],
        default_target=["new"],
    )


DATASETS.register("instacart-products", aliases=("instacart",))(
    DatasetSpec(
        name="instacart-products",
        folder="instacart-products",
        tree="products.csv",
        url="",
        archive_prefix="",
        tree_sha256="",
        n_files=3,
        build=build_instacart,
        domains=("catalog", "new"),
        default_source=("catalog",),
        default_target=("new",),
        description="49,688 grocery product titles under 134 aisles and 21 departments (text only)",
        files=(
            ("products.csv", "https://raw.githubusercontent.com/kelly828/Purchase-Analytics/108e14192965c3205ef76b8d94471a6553bfc70e/input/products.csv",
             "abc61fdd748003d280ae49cc5d71b65380805ab1ca55dba96fd9a49295ea78b9"),
            ("aisles.csv", "https://raw.githubusercontent.com/wwenrr/btl-datawarehouse/bd9a9ac216e45bb10d01f53b104b89a265ae2e97/data/raw/aisles.csv",
             "2c5f4677761907d3a3ca01edd2d2abe67c147cc60e4905e68736d5f9f3046067"),
            ("departments.csv", "https://raw.githubusercontent.com/wwenrr/btl-datawarehouse/bd9a9ac216e45bb10d01f53b104b89a265ae2e97/data/raw/departments.csv",
             "e6829cea3da95ec22eeb4e0294094a68b929f3bcfda48fdd7d1e33403110fc43"),
        ),
    )
)


DATASETS.register("instacart-brand-shift", aliases=("instacart-brands",))(
    dataclasses.replace(
        DATASETS.get("instacart-products"),
        name="instacart-brand-shift",
        build=build_instacart_brand_shift,
        domains=("catalog", "new-brands"),
        default_target=("new-brands",),
        description="instacart-products split by brand: the new-brands target (4,539 titles) holds only brands "
                    "that never occur in the catalog (brand = a title's first word, see instacart_brand_domains)",
    )
)
