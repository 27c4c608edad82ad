"""The one typed run configuration: defaults ← a TOML file ← command-line options, validated before any work.

Every option is written once, here, as a field with its help text; the command line
(:mod:`flows.cli`) is generated from these fields. Validators consult the registries (methods,
fusions, encoders, datasets), check ranges, that catalog and taxonomy files exist, and that the
source and target domains exist in the catalog (reading its ``domain`` column only), so a bad
setting is refused in a second, before anything is extracted, written or registered.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prodkg.errors import ConfigError
from prodkg.layout import DEFAULT_OUT, RunLayout

__all__ = ["DEFAULT_OUT", "RunConfig", "load_config"]



def _cli(group: str, *, flag: str | None = None, invert: bool = False, run_only: bool = False, metavar: str | None = None) -> dict:
    """How a field appears on the command line: its group in ``--help``, an own flag name, whether the flag
    turns the value off (``--quiet`` sets ``progress`` false), and whether only ``run`` has it (not ``schedule``)."""
    return {"cli": {"group": group, "flag": flag, "invert": invert, "run_only": run_only, "metavar": metavar}}


def _domains(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [d.strip() for d in value.split(",") if d.strip()]
    return [str(d).strip() for d in value if str(d).strip()]


class RunConfig(BaseModel):
    """Everything one run depends on. Its fingerprint goes into the manifest and the graph's provenance."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    # --- input -----------------------------------------------------------------------------------
    catalog: str | None = Field(None, description="catalog file (CSV, JSONL, Parquet; path or fsspec URL)", json_schema_extra=_cli("input"))
    dataset: str | None = Field(None, description="a registered dataset (see `prodkg list datasets`)", json_schema_extra=_cli("input"))
    data_home: str | None = Field(None, description="dataset mirror folder (default $PRODKG_DATA_HOME)", json_schema_extra=_cli("input"))
    source: list[str] = Field(default_factory=list, description="labelled source domain(s), comma-separated (a dataset has defaults)",
                              json_schema_extra=_cli("input", metavar="DOMAINS"))
    target: list[str] = Field(default_factory=list, description="unlabelled target domain(s), comma-separated (a dataset has defaults)",
                              json_schema_extra=_cli("input", metavar="DOMAINS"))
    attributes: list[str] | None = Field(None, description="attribute columns to predict, comma-separated (default: every non-reserved column)",
                                         json_schema_extra=_cli("input", metavar="COLUMNS"))
    taxonomy: str | None = Field(None, description="CSV with columns concept,parent (default: flat, from the labels)", json_schema_extra=_cli("input"))
    catalog_name: str | None = Field(None, description="the catalog's identity in the graph, part of every product IRI; keep it when the feed file "
                                                       "is renamed (default: the dataset's name, else the file name without extension and trailing date)",
                                     json_schema_extra=_cli("input", metavar="NAME"))
    eval_labels: list[str] = Field(default_factory=lambda: ["category"],
                                   description="columns that on target rows are evaluation labels only: hidden from the models and the graph, "
                                               "used to measure accuracy; every other value a target row asserts stays an asserted fact "
                                               "(comma-separated; empty: none)",
                                   json_schema_extra=_cli("input", metavar="COLUMNS"))
    # --- models ----------------------------------------------------------------------------------
    method: str = Field("dann", description="adaptation method (see `prodkg list methods`), or auto to choose one without target labels",
                        json_schema_extra=_cli("model"))
    baseline: str | None = Field("source_only", description="method also trained on the category task for comparison; none to skip",
                                 json_schema_extra=_cli("model"))
    fusion: str = Field("early", description="fusion of modalities (see `prodkg list fusions`)", json_schema_extra=_cli("model"))
    image_encoder: str = Field("efficientnet_lite0", description="image encoder (see `prodkg list encoders`)", json_schema_extra=_cli("model"))
    text_encoder: str = Field("minilm", description="text encoder (see `prodkg list encoders`)", json_schema_extra=_cli("model"))
    image_options: dict[str, Any] = Field(default_factory=dict, description="image encoder options (config file only), e.g. {precision = \"fp32\"}")
    text_options: dict[str, Any] = Field(default_factory=dict, description="text encoder options (config file only), e.g. {model = \"bert-base-uncased\"}")
    epochs: int | None = Field(None, ge=1, description="training epochs of the heads (default: the method's)", json_schema_extra=_cli("model"))
    hidden: int | None = Field(None, ge=1, description="hidden units of the heads (default: the method's)", json_schema_extra=_cli("model"))
    lr: float | None = Field(None, gt=0, description="learning rate of the heads (default: the method's)", json_schema_extra=_cli("model"))
    tradeoff: float | None = Field(None, ge=0, description="weight of the adaptation loss (default: the method's)", json_schema_extra=_cli("model"))
    auto_schedule: str = Field("halving", description="with --method auto, how its candidates share the training: halving (successive halving, "
                                                      "about 3 method runs) or full (every candidate trained in full, about 10)",
                               json_schema_extra=_cli("model"))
    seed: int = Field(0, ge=0, description="random seed of every model", json_schema_extra=_cli("model"))
    # published facts should be right this often: per-task thresholds and back-off levels from the label-free estimate
    min_precision: float = Field(0.95, gt=0, le=1, description="share of published facts that should be right, by the pipeline's label-free "
                                                                "estimate; picks each task's threshold and taxonomy back-off level",
                                 json_schema_extra=_cli("model"))
    # with a taxonomy, every product's level is chosen at once (prediction.publication._allocate_levels)
    specificity: float = Field(2.0, ge=0, allow_inf_nan=False,
                               description="with a taxonomy, what a finer published fact is worth over a broader one: each fact counts 1 "
                                           "plus this times its information (1 at the finest class); 0 publishes the most products "
                                           "--min-precision allows, larger values more of the finest facts",
                               json_schema_extra=_cli("model"))
    # a fixed confidence bar instead of min_precision (the rule before min_precision was a fixed 0.5)
    threshold: float | None = Field(None, ge=0, le=1, description="a fixed confidence at which a prediction becomes a plain fact, "
                                                                  "instead of --min-precision", json_schema_extra=_cli("model"))
    # reviewed target products as the publication rule's target calibration set (prediction/target_calibration.py)
    review_folds: int = Field(5, ge=0, description="cross-fitting folds for the reviews: every review trains the category head, and each "
                                                   "checks the precision of what is published through a head fitted without its fold "
                                                   "(costs that many more fits of the head; 0: hold --review-calibration-share out "
                                                   "of training instead)", json_schema_extra=_cli("model"))
    review_calibration_share: float = Field(0.4, ge=0, lt=1, description="with --review-folds 0: share of the reviewed target products held "
                                                                         "out of training to check the precision of what is published "
                                                                         "(none while too few to support --min-precision)",
                                            json_schema_extra=_cli("model"))
    reuse_heads: bool = Field(True, description="reuse a head whose features, labels and config are unchanged (--retrain: always train anew)",
                              json_schema_extra=_cli("model", flag="--retrain", invert=True))
    # a nightly run that scores with the previous good run's heads instead of training (flows/keep_heads.py)
    keep_heads: bool = Field(False, description="train no head when the previous complete run in --out qualifies (same source rows, labels and "
                                                "features, same settings that shape the heads, taxonomy and curation decisions, and the target "
                                                "within --keep-heads-max-drift of the run that fitted the heads): load its heads, carry over the "
                                                "predictions of unchanged target products and score only the added and changed ones under its "
                                                "recorded publication rule; otherwise train as usual (the manifest's keep_heads says why)",
                             json_schema_extra=_cli("model"))
    keep_heads_max_drift: float = Field(0.10, ge=0, le=1, description="with --keep-heads: the largest share of the target (products added, "
                                                                       "changed or removed, counted against the run that fitted the heads, "
                                                                       "so it adds up over kept nights) the kept heads may score; above it "
                                                                       "they are fitted again", json_schema_extra=_cli("model", metavar="SHARE"))
    # shelf-style augmented views of each source photo (extractors/augment.py), extra labelled source rows
    source_views: int = Field(0, ge=0, le=200, description="shelf-style augmented views (crops, perspective, light, blur, other products "
                                                            "as background) of each source image, added to the heads' training rows "
                                                            "with the product's label and text; for a catalog of few photos per "
                                                            "class (0: off)",
                              json_schema_extra=_cli("model", metavar="K"))
    self_training: int = Field(0, ge=0, le=5, description="rounds of class-balanced self-training of each head: a per-class quota of the "
                                                           "target's most confident predictions (a fifth of the target, then two fifths, ...) "
                                                           "joins the labelled rows and the head is trained again (0: off)",
                               json_schema_extra=_cli("model", metavar="ROUNDS"))
    ensemble: int = Field(1, ge=1, le=10, description="heads trained per task, each from its own seed, whose class probabilities are "
                                                      "averaged (a deep ensemble; with --method auto, of the candidate it chose); "
                                                      "each adds one head's training time; for a source of few labelled photos per "
                                                      "class, whose heads vary much from seed to seed (1: one head)",
                          json_schema_extra=_cli("model", metavar="N"))
    label_spreading: float = Field(0.0, ge=0, lt=1, description="spread each head's target predictions over the target's 10-nearest-"
                                                                 "neighbour graph (label spreading, Zhou et al. 2003) with this alpha, "
                                                                 "so that photos of one product agree; for a target of many photos of "
                                                                 "the same products, such as shelf photos (0: off; 0.8 is usual)",
                                   json_schema_extra=_cli("model", metavar="ALPHA"))
    # --- backbone fine-tuning (adaptation/finetune.py) ----------------------------------------------
    finetune: bool = Field(False, description="fine-tune the image encoder's last block (source labels + DANN towards the target) instead of "
                                              "using frozen features; on CPU only up to --finetune-max-images-cpu images",
                           json_schema_extra=_cli("fine-tuning", flag="--finetune-backbone"))
    finetune_epochs: int = Field(5, ge=1, description="epochs of backbone fine-tuning", json_schema_extra=_cli("fine-tuning"))
    finetune_max_images_cpu: int = Field(5000, ge=1, description="on CPU, refuse fine-tuning above this many images...",
                                         json_schema_extra=_cli("fine-tuning"))
    finetune_force: bool = Field(False, description="...unless forced", json_schema_extra=_cli("fine-tuning"))
    finetune_options: dict[str, Any] = Field(default_factory=dict, description="other FinetuneConfig keys (config file only): method, lr, block_lr, ...")
    # --- image sources (extractors/sources.py, applied by flows/guard.py) ---------------------------------
    # Local images only under the catalog's folder (a dataset's: the mirror) or image_roots, and only regular
    # files; http(s) URLs with these timeouts (a URL in all: connect + 4 x read). A refused image quarantines
    # its product with the reason. These only refuse or allow an image, so they stay out of the fingerprint.
    image_roots: list[str] = Field(default_factory=list, description="more folders local images may be read from, comma-separated "
                                                                     "(besides the catalog's own folder)",
                                   json_schema_extra=_cli("image sources", metavar="DIRS"))
    image_max_bytes: int = Field(32 * 2**20, ge=1, description="bytes one image may have", json_schema_extra=_cli("image sources"))
    image_max_pixels: int = Field(50_000_000, ge=1, description="pixels (width x height) one decoded image may have",
                                  json_schema_extra=_cli("image sources"))
    image_connect_timeout: float = Field(5.0, gt=0, description="seconds to connect to an image server", json_schema_extra=_cli("image sources"))
    image_read_timeout: float = Field(15.0, gt=0, description="seconds a read from an image server may wait", json_schema_extra=_cli("image sources"))
    image_budget_bytes: int | None = Field(None, ge=1, description="image bytes one run may read (default: no budget)",
                                           json_schema_extra=_cli("image sources"))
    image_budget_seconds: float | None = Field(None, gt=0, description="seconds one run may spend reading images (default: no budget)",
                                               json_schema_extra=_cli("image sources"))
    image_fsspec_schemes: list[str] = Field(default_factory=list, description="other URL schemes images may be read through with fsspec "
                                                                              "(s3, gs, ...), comma-separated; off by default",
                                            json_schema_extra=_cli("image sources", metavar="SCHEMES"))
    # --- execution -------------------------------------------------------------------------------
    batch_size: int = Field(64, ge=1, description="images or texts per encoder batch", json_schema_extra=_cli("execution"))
    num_workers: int = Field(0, ge=0, description="DataLoader workers for image decoding", json_schema_extra=_cli("execution"))
    # Large by default: a shard's cache lookups are sorted, so few shards read the cache nearly in key order (980,000
    # cached titles of a 1 M catalog: 28-37 s in shards of 4,096, 16-20 s in shards of 65,536), and a nightly re-run's
    # few changed items per shard encode in length-sorted batches only when a shard has many of them.
    shard_size: int = Field(65536, ge=1, description="products per extraction task (on a remote Dask cluster, smaller shards "
                            "keep more workers busy)", json_schema_extra=_cli("execution"))
    workers: int = Field(0, ge=0, description="run extraction sharded on a local Dask cluster of N worker processes (prefect-dask)",
                         json_schema_extra=_cli("execution"))
    dask_address: str | None = Field(None, description="run extraction on an existing Dask cluster, e.g. tcp://10.0.0.5:8786",
                                     json_schema_extra=_cli("execution"))
    use_prefect: bool = Field(True, description="run the stages as a Prefect flow (--no-prefect: call them directly)",
                              json_schema_extra=_cli("execution", flag="--no-prefect", invert=True, run_only=True))
    progress: bool = Field(True, description="show progress and the summary (--quiet: neither)", json_schema_extra=_cli("execution", flag="--quiet", invert=True))
    full_check: bool = Field(False, description="re-read and re-validate every input even when the catalog, taxonomy, images, code and "
                                                "config are unchanged since the last run (default: such a re-run republishes without reading them), "
                                                "and read every image file again (default: a file whose size and times are unchanged keeps its remembered hash)",
                             json_schema_extra=_cli("execution"))
    # --- output ----------------------------------------------------------------------------------
    out: str = Field(DEFAULT_OUT, description="output folder: runs/, kg/, cache/", json_schema_extra=_cli("output"))
    cache_dir: str | None = Field(None, description="feature cache folder (default <out>/cache)", json_schema_extra=_cli("output"))
    base_iri: str | None = Field(None, description="base IRI of minted resources (default https://prodkg.org/)", json_schema_extra=_cli("output"))
    # A SPARQL 1.1 server that gets a copy of every published graph (kb/remote.py); the local graph stays the
    # record. Credentials come only from $PRODKG_STORE_USER / $PRODKG_STORE_PASSWORD, never from here.
    store_url: str | None = Field(None, description="also publish the graph to this SPARQL 1.1 server (its query endpoint, e.g. "
                                                    "http://127.0.0.1:8890/sparql); credentials from $PRODKG_STORE_USER / $PRODKG_STORE_PASSWORD",
                                  json_schema_extra=_cli("output"))
    store_update_url: str | None = Field(None, description="the server's SPARQL update endpoint (default: derived from --store-url)",
                                         json_schema_extra=_cli("output"))
    store_gsp_url: str | None = Field(None, description="the server's Graph Store protocol endpoint (default: derived from --store-url)",
                                      json_schema_extra=_cli("output"))

    # --- field checks ------------------------------------------------------------------------------
    @field_validator("source", "target", mode="before")
    @classmethod
    def _split_domains(cls, value: Any) -> list[str]:
        return _domains(value)

    @field_validator("image_roots", "image_fsspec_schemes", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> list[str]:
        return _domains(value)

    @field_validator("attributes", mode="before")
    @classmethod
    def _split_attributes(cls, value: Any) -> list[str] | None:
        return None if value is None else _domains(value)

    @field_validator("eval_labels", mode="before")
    @classmethod
    def _split_eval_labels(cls, value: Any) -> list[str]:
        return [v.removeprefix("attr_") for v in _domains(value)]

    @field_validator("catalog_name")
    @classmethod
    def _catalog_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or any(ch in value for ch in "\n\r\t"):
            raise ValueError(f"catalog_name must be a non-empty one-line name, got {value!r}")
        return value

    @field_validator("baseline", mode="before")
    @classmethod
    def _no_baseline(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in {"", "none"} else value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from prodkg.adaptation import METHODS

        if value.strip().lower() != "auto" and value not in METHODS:
            raise ValueError(f"unknown method {value!r}; valid: {', '.join([*METHODS.names(), 'auto'])}")
        return value

    @field_validator("auto_schedule")
    @classmethod
    def _known_auto_schedule(cls, value: str) -> str:
        from prodkg.adaptation.config import AUTO_SCHEDULES

        if value not in AUTO_SCHEDULES:
            raise ValueError(f"unknown auto schedule {value!r}; valid: {', '.join(AUTO_SCHEDULES)}")
        return value

    @field_validator("review_folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("one fold cannot predict its own reviews out of fold: give 2 or more, or 0 to hold a share out")
        return value

    @field_validator("baseline")
    @classmethod
    def _known_baseline(cls, value: str | None) -> str | None:
        from prodkg.adaptation import METHODS

        if value is not None and value not in METHODS:
            raise ValueError(f"unknown baseline method {value!r}; valid: {', '.join([*METHODS.names(), 'none'])}")
        return value

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, value: str) -> str:
        from prodkg.adaptation import FUSIONS

        if value not in FUSIONS:
            raise ValueError(f"unknown fusion {value!r}; valid: {', '.join(FUSIONS.names())}")
        return value

    @field_validator("image_encoder", "text_encoder")
    @classmethod
    def _known_encoder(cls, value: str) -> str:
        from prodkg.extractors import list_encoders

        names = list_encoders()
        if value.strip().lower().replace("-", "_") not in {n.lower().replace("-", "_") for n in names}:
            raise ValueError(f"unknown encoder {value!r}; valid: {', '.join(names)}")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str | None) -> str | None:
        from prodkg.catalogs import DATASETS

        if value is not None and value not in DATASETS:
            raise ValueError(f"unknown dataset {value!r}; valid: {', '.join(DATASETS.names())}")
        return value

    @field_validator("data_home", "taxonomy")
    @classmethod
    def _existing_path(cls, value: str | None, info) -> str | None:
        if value is not None and "://" not in value and not Path(value).exists():
            raise ValueError(f"{info.field_name} {value!r} does not exist")
        return value

    @field_validator("catalog")
    @classmethod
    def _existing_catalog(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            path = Path(value)
            if path.is_dir():
                raise ValueError(f"catalog {value!r} is a directory, not a file")
            if not path.is_file():
                raise ValueError(f"catalog {value!r} not found")
        return value

    @field_validator("image_options", "text_options", "finetune_options", mode="before")
    @classmethod
    def _table(cls, value: Any, info) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"{info.field_name} must be a table of options, got {value!r}")
        return value

    # --- checks across fields ------------------------------------------------------------------------
    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if bool(self.catalog) == bool(self.dataset):
            raise ValueError("give exactly one of catalog (a file) or dataset (a registered name)")
        overlap = set(self.source) & set(self.target)
        if overlap:
            raise ValueError(f"domain(s) {sorted(overlap)} are both source and target")
        if self.workers and self.dask_address:
            raise ValueError(f"give workers (a local Dask cluster) or dask_address (an existing one), not both; got {self.workers} and {self.dask_address!r}")
        if (self.workers or self.dask_address) and not self.use_prefect:
            raise ValueError("workers / dask_address run extraction through Prefect's Dask task runner; they need use_prefect (drop --no-prefect)")
        if (self.store_update_url or self.store_gsp_url) and not self.store_url:
            raise ValueError("store_update_url and store_gsp_url need store_url (the SPARQL server's query endpoint)")
        for key in ("store_url", "store_update_url", "store_gsp_url"):
            url = getattr(self, key)
            if url is not None:
                from prodkg.errors import StoreError
                from prodkg.kb.remote import check_url

                try:
                    check_url(url, key)
                except StoreError as exc:
                    raise ValueError(str(exc)) from None
        if self.keep_heads and not self.reuse_heads:
            raise ValueError("keep_heads (train no head when the previous run qualifies) and --retrain (always train anew) contradict each other")
        if self.keep_heads and self.label_spreading:
            raise ValueError("keep_heads and label_spreading cannot be combined: kept heads score only the changed products, and "
                             "spreading needs every target product's prediction")
        if self.finetune and self.source_views:
            raise ValueError("source_views and finetune_backbone cannot be combined: the views are encoded by the frozen image encoder")
        if self.finetune:
            from prodkg.extractors.base import ENCODERS

            if not hasattr(ENCODERS.get(self.image_encoder), "last_block"):
                raise ValueError(f"finetune_backbone needs an image encoder with one backbone to fine-tune; {self.image_encoder} "
                                 "has none of its own (it concatenates other encoders' features)")
            try:
                self.finetune_settings().config()  # unknown or reserved finetune_options keys
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def check_inputs(self) -> None:
        """Check the domains against the catalog's ``domain`` column (or the dataset's domains), reading nothing else.

        A source or target that is absent raises ConfigError naming the domains there are.
        """
        if self.dataset:
            from prodkg.catalogs import DATASETS

            spec = DATASETS.get(self.dataset)
            domains = list(spec.domains)
            source, target = self.source or list(spec.default_source), self.target or list(spec.default_target)
        else:
            from prodkg.catalogs.stage import read_domains

            domains = read_domains(self.catalog)
            source, target = self.source, self.target
        if not source or not target:
            raise ConfigError(f"name the source and target domains (--source, --target); this catalog has: {', '.join(domains) or 'none'}")
        if domains is None:  # a format whose domains cannot be read on their own: ingest checks them
            return
        for role, chosen in (("source", source), ("target", target)):
            missing = [d for d in chosen if d not in domains]
            if missing:
                raise ConfigError(f"{role} domain(s) {', '.join(missing)} not in the catalog; it has: {', '.join(domains) or 'none'}")

    # --- derived ---------------------------------------------------------------------------------
    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.out), Path(self.cache_dir) if self.cache_dir else None)

    @property
    def out_path(self) -> Path:
        return self.layout.out

    @property
    def cache_path(self) -> Path:
        return self.layout.cache

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def fingerprint(self) -> str:
        """Hash of what changes results (not where they are written or how progress is shown)."""
        return hashlib.sha256(json.dumps(self._results_settings(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def heads_fingerprint(self) -> str:
        """Hash of the settings that shape the heads and their publication rule: :meth:`fingerprint` without where the
        catalog and taxonomy files are (their content is compared instead), how the graph names things, and the
        kept-heads settings themselves. A run keeps the heads of a run with the same value (flows/keep_heads.py)."""
        d = {k: v for k, v in self._results_settings().items()
             if k not in {"catalog", "taxonomy", "catalog_name", "base_iri", "keep_heads", "keep_heads_max_drift"}}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _results_settings(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k not in {"out", "cache_dir", "use_prefect", "progress", "num_workers", "full_check", "data_home", "workers", "dask_address", "reuse_heads",
                                                                 "store_url", "store_update_url", "store_gsp_url",  # where the graph is also published
                                                                 "finetune_max_images_cpu", "finetune_force"}}  # these two only refuse or allow a run
        for key, default in (("eval_labels", ["category"]), ("catalog_name", None), ("source_views", 0), ("self_training", 0), ("ensemble", 1), ("label_spreading", 0.0), ("keep_heads", False)):  # at their defaults they keep earlier hashes valid
            if d.get(key) == default:
                d.pop(key)
        # the image limits only refuse or allow an image (whose products the input digests then reflect): not in the hash
        d = {k: v for k, v in d.items() if not (k.startswith("image_") and k not in {"image_encoder", "image_options"})}
        if not self.finetune:  # fine-tuning settings change nothing while it is off (and keep earlier hashes valid)
            d = {k: v for k, v in d.items() if not k.startswith("finetune")}
        if not self.keep_heads:  # nor does the drift bound while heads are not kept
            d.pop("keep_heads_max_drift", None)
        return d

    # --- each stage's slice ------------------------------------------------------------------------
    def ingest_settings(self, image_limits=None):
        from prodkg.catalogs.stage import IngestSettings

        return IngestSettings(catalog=self.catalog, dataset=self.dataset, data_home=self.data_home, source=tuple(self.source),
                              target=tuple(self.target), attributes=tuple(self.attributes) if self.attributes is not None else None,
                              taxonomy=self.taxonomy, catalog_name=self.catalog_name, image_limits=image_limits)

    def extract_settings(self, image_limits=None):
        from prodkg.extractors.stage import ExtractSettings

        return ExtractSettings(image_encoder=self.image_encoder, text_encoder=self.text_encoder, image_options=dict(self.image_options),
                               text_options=dict(self.text_options), batch_size=self.batch_size, num_workers=self.num_workers, progress=self.progress,
                               image_limits=image_limits, stat_memo=not self.full_check)

    def finetune_settings(self):
        from prodkg.adaptation.stage import FinetuneSettings

        return FinetuneSettings(image_encoder=self.image_encoder, image_options=dict(self.image_options), epochs=self.finetune_epochs,
                                max_images_cpu=self.finetune_max_images_cpu, force=self.finetune_force, options=dict(self.finetune_options),
                                seed=self.seed, num_workers=self.num_workers, progress=self.progress, reuse=self.reuse_heads)

    def predict_settings(self):
        from prodkg.prediction.stage import PredictSettings

        return PredictSettings(method=self.method, baseline=self.baseline, fusion=self.fusion, epochs=self.epochs, hidden=self.hidden, lr=self.lr,
                               tradeoff=self.tradeoff, seed=self.seed, progress=self.progress, min_precision=self.min_precision,
                               specificity=self.specificity, threshold=self.threshold, self_training=self.self_training, label_spreading=self.label_spreading,
                               ensemble=self.ensemble,
                               review_folds=self.review_folds, calibration_share=self.review_calibration_share, auto_schedule=self.auto_schedule)

    def graph_settings(self):
        from prodkg.kb.publish import GraphSettings

        return GraphSettings(base_iri=self.base_iri, threshold=self.threshold, min_precision=self.min_precision)


def _one_line(exc: ValidationError) -> str:
    """A validation error as one line per problem: ``field: message``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = f"unknown config key; valid keys: {', '.join(RunConfig.model_fields)}"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def build_config(values: dict[str, Any], *, check_inputs: bool = True) -> RunConfig:
    """A validated RunConfig from plain values; any problem raises ConfigError with one line naming it."""
    cfg = RunConfig(**values)
    if check_inputs:
        cfg.check_inputs()
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The ``[run]`` table of a TOML file (or its top level when it has none)."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return dict(doc.get("run", doc))


def load_config(path: str | Path | None = None, *, check_inputs: bool = True, **overrides: Any) -> RunConfig:
    """Defaults ← ``[run]`` table of a TOML file ← non-None keyword overrides, validated (see :class:`RunConfig`)."""
    values: dict[str, Any] = read_config_file(path) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(values, check_inputs=check_inputs)
