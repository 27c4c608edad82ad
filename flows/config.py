"""Typed run configuration: defaults, a TOML file, then command-line overrides; validated where it enters."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodkg.errors import ConfigError


@dataclass
class RunConfig:
    """Everything one run depends on. Its hash goes into the manifest and the graph's provenance."""

    catalog: str | None = None  # path or fsspec URL of a CSV / JSONL / Parquet catalog
    dataset: str | None = None  # or a registered dataset name (see `prodkg list datasets`)
    data_home: str | None = None  # dataset mirror; default $PRODKG_DATA_HOME
    source: list[str] = field(default_factory=list)  # labelled domain(s)
    target: list[str] = field(default_factory=list)  # unlabelled domain(s)
    attributes: list[str] | None = None  # attribute columns (default: every non-reserved column)
    taxonomy: str | None = None  # CSV with columns concept,parent (default: flat, from the labels)
    method: str = "dann"
    baseline: str | None = "source_only"  # also trained on the category task, for comparison; None to skip
    fusion: str = "early"
    image_encoder: str = "efficientnet_lite0"
    text_encoder: str = "minilm"
    image_options: dict[str, Any] = field(default_factory=dict)
    text_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int = 0
    shard_size: int = 4096  # products per extraction task
    epochs: int | None = None  # None: the method's default
    hidden: int | None = None
    lr: float | None = None
    tradeoff: float | None = None
    seed: int = 0
    min_precision: float = 0.95  # published facts should be right this often: per-task thresholds from the label-free estimate
    threshold: float | None = None  # a fixed confidence bar instead of min_precision (the pre-0.95 rule was 0.5)
    base_iri: str | None = None
    out: str = "prodkg-output"
    cache_dir: str | None = None  # default <out>/cache
    use_prefect: bool = True
    reuse_heads: bool = True  # load a head whose features, labels and config are unchanged instead of retraining it
    progress: bool = True
    workers: int = 0  # >0: extraction shards run on a local Dask cluster of this many worker processes
    dask_address: str | None = None  # or on an existing Dask cluster (tcp://host:8786)
    # A SPARQL 1.1 server that gets a copy of every published graph (kb/remote.py); the local graph stays the
    # record. Credentials come only from $PRODKG_STORE_USER / $PRODKG_STORE_PASSWORD, never from here.
    store_url: str | None = None  # its query endpoint, e.g. http://127.0.0.1:8890/sparql
    store_update_url: str | None = None  # its update endpoint (default: derived from store_url)
    store_gsp_url: str | None = None  # its Graph Store protocol endpoint (default: derived from store_url)
    # Backbone fine-tuning (adaptation/finetune.py): train the image encoder's last block on source labels with
    # DANN towards the target, and use its features instead of the frozen ones. Off by default.
    finetune: bool = False
    finetune_epochs: int = 5
    finetune_max_images_cpu: int = 5000  # on CPU, refuse catalogs with more images than this...
    finetune_force: bool = False  # ...unless forced
    finetune_options: dict[str, Any] = field(default_factory=dict)  # other FinetuneConfig keys: method, lr, block_lr, ...

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if bool(self.catalog) == bool(self.dataset):
            raise ConfigError("give exactly one of catalog (a file) or dataset (a registered name)")
        if not self.catalog and not self.dataset:
            raise ConfigError("no catalog or dataset given")
        overlap = set(self.source) & set(self.target)
        if overlap:
            raise ConfigError(f"domain(s) {sorted(overlap)} are both source and target")
        if self.threshold is not None and (isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float)
                                           or not 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"threshold must be in [0, 1] (or unset, to use min_precision), got {self.threshold!r}")
        if isinstance(self.min_precision, bool) or not isinstance(self.min_precision, int | float) or not 0.0 < self.min_precision <= 1.0:
            raise ConfigError(f"min_precision must be in (0, 1], got {self.min_precision!r}")
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"workers must be an integer >= 0, got {self.workers!r}")
        if self.workers and self.dask_address:
            raise ConfigError(f"give workers (a local Dask cluster) or dask_address (an existing one), not both; got {self.workers} and {self.dask_address!r}")
        if not isinstance(self.finetune, bool) or not isinstance(self.finetune_force, bool):
            raise ConfigError(f"finetune and finetune_force must be true or false, got {self.finetune!r} and {self.finetune_force!r}")
        for name in ("finetune_epochs", "finetune_max_images_cpu"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.finetune_options, dict):
            raise ConfigError(f"finetune_options must be a table of FinetuneConfig keys, got {self.finetune_options!r}")
        self._validate_store_urls()
        if (self.workers or self.dask_address) and not self.use_prefect:
            raise ConfigError("workers / dask_address run extraction through Prefect's Dask task runner; they need use_prefect (drop --no-prefect)")

    def _validate_store_urls(self) -> None:
        if (self.store_update_url or self.store_gsp_url) and not self.store_url:
            raise ConfigError("store_update_url and store_gsp_url need store_url (the SPARQL server's query endpoint)")
        urls = {k: getattr(self, k) for k in ("store_url", "store_update_url", "store_gsp_url") if getattr(self, k) is not None}
        if urls:
            from prodkg.kb.remote import check_url
            from prodkg.errors import StoreError

            for key, url in urls.items():
                try:
                    check_url(url, key)
                except StoreError as exc:
                    raise ConfigError(str(exc)) from None

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.out_path / "cache"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of what changes results (not where they are written or how progress is shown)."""
        d = {k: v for k, v in self.to_dict().items() if k not in {"out", "cache_dir", "use_prefect", "progress", "num_workers", "data_home", "workers", "dask_address", "reuse_heads",
                                                                 "store_url", "store_update_url", "store_gsp_url",  # where the graph is also published
                                                                 "finetune_max_images_cpu", "finetune_force"}}  # these two only refuse or allow a run
        if not self.finetune:  # fine-tuning settings change nothing while it is off (and keep earlier hashes valid)
            d = {k: v for k, v in d.items() if not k.startswith("finetune")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults ← ``[run]`` table of a TOML file ← non-None keyword overrides."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        values.update(doc.get("run", doc))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    for key in ("source", "target"):
        if isinstance(values.get(key), str):
            values[key] = [d.strip() for d in values[key].split(",") if d.strip()]
    try:
        return RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
