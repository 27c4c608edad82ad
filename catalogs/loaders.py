"""Loaders that turn real public datasets into the catalog schema, from a local mirror or a verified download."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
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


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def list_datasets() -> list[str]:
    return DATASETS.names()


def data_home(explicit: str | os.PathLike | None = None) -> Path | None:
    value = explicit or os.environ.get(DATA_HOME_ENV)
    return Path(value).expanduser() if value else None


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
    if base is not None and (base / spec.folder / spec.tree).is_dir():
        return spec.build(base / spec.folder)
    if not download:
        raise DataLoadError(f"dataset {spec.name!r} not found under {base or '(no data home)'}; set ${DATA_HOME_ENV} to the folder holding {spec.folder}/")
    if base is None:
        base = Path.home() / ".cache" / "prodkg" / "datasets"
    return spec.build(_download(spec, base))


def _download(spec: DatasetSpec, base: Path) -> Path:
    """Fetch the pinned archive, verify the checksum of its files and move it into place."""
    target = base / spec.folder
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as resp, open(archive, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            raise DataLoadError(f"cannot download {spec.name} from {spec.url}: {exc}; set ${DATA_HOME_ENV} to a local mirror instead") from exc
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
    )
)


# --- grocery-store-dataset -------------------------------------------------------------


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def build_grocery(root: Path) -> CatalogSource:
    """Iconic catalog photos with descriptions (domain ``iconic``) and in-store photos (domain ``instore``).

    Category is the fine class; the taxonomy is top level → coarse class → fine class.
    Where a fine class has no level of its own (e.g. Banana), it is its coarse class.
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
    )
)
