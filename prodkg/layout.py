"""Where everything of one output folder lives: the one object that spells the run-folder layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_OUT", "RunLayout"]

DEFAULT_OUT = "prodkg-output"  # the output folder when none is given


@dataclass(frozen=True)
class RunLayout:
    """The paths of an output folder (``out``) and of each run in it.

    ```
    <out>/kg/                      the live knowledge graph (Oxigraph), swapped atomically by each publish
    <out>/runs/<run_id>/           products, quarantine, predictions, embeddings (.parquet), models/, manifest.json,
                                   report.html + figures/, shacl_report.txt when a graph is refused
    <out>/cache/                   feature cache (features.sqlite), fitted heads (heads/), fine-tuned blocks (finetune/)
    <out>/curation/decisions.jsonl reviewers' decisions, append-only (survives re-runs and graph rebuilds)
    <out>/.prefect/                Prefect's home for runs started by prodkg itself
    ```

    Args:
        out: the output folder.
        cache_dir: the feature cache folder, when not ``<out>/cache``.
    """

    out: Path
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @property
    def kg(self) -> Path:
        return self.out / "kg"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def cache(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.out / "cache"

    @property
    def heads_cache(self) -> Path:
        return self.cache / "heads"

    @property
    def finetune_cache(self) -> Path:
        return self.cache / "finetune"

    @property
    def curation(self) -> Path:
        return self.out / "curation"

    @property
    def decisions(self) -> Path:
        """The append-only decisions store of the reviewers (one JSON object a line)."""
        return self.curation / "decisions.jsonl"

    @property
    def prefect_home(self) -> Path:
        return self.out / ".prefect"

    @property
    def lock(self) -> Path:
        return self.out / ".lock"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def models(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "models"

    def table(self, run_id: str, name: str) -> Path:
        """A stage table of a run: ``products``, ``quarantine``, ``predictions``, ``embeddings`` or ``graph_index`` (kb.graph_update)."""
        return self.run_dir(run_id) / f"{name}.parquet"

    def manifest(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "manifest.json"
