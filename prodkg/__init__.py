"""prodkg: build a product knowledge graph from e-commerce catalogs by transfer learning.

The public Python API is small; everything else is internal::

    import prodkg

    summary = prodkg.run(catalog="data/sample/catalog.csv", source="webshop", target="supplier", out="runs/sample")
    frame = prodkg.query("runs/sample", name="products_per_category")      # a pandas DataFrame
    with prodkg.open_graph("runs/sample") as graph:                         # the live graph, read-only
        n = graph.query("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }").to_frame()
    prodkg.list_components()                                                # {"methods": [...], "encoders": [...], ...}

Importing ``prodkg`` is cheap: torch, Prefect and rdflib load only when a function needs them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prodkg.layout import DEFAULT_OUT  # light: pathlib only

__version__ = "0.1.0"

__all__ = ["__version__", "list_components", "open_graph", "query", "run"]

if TYPE_CHECKING:
    import pandas as pd

    from prodkg.flows.config import RunConfig
    from prodkg.kb.store import GraphStore



def run(config: RunConfig | str | Path | None = None, **options: Any) -> dict:
    """Run the pipeline once (ingest → extract → adapt → predict → graph) and return its summary.

    Args:
        config: a :class:`prodkg.flows.config.RunConfig`, or a TOML file with a ``[run]`` table, or None.
        **options: run settings (the same names as ``prodkg run --help``, with underscores), overriding ``config``.
            ``use_prefect=False`` calls the stages directly instead of as a Prefect flow.

    Returns:
        The run summary: ``run_id``, ``run_dir``, ``counts``, ``metrics``, ``durations``, ``store``, ...
        (``manifest.json`` in ``run_dir`` holds it with the resolved config, versions and input hashes).

    Raises:
        prodkg.errors.ConfigError: a setting is unknown, out of range or names a missing file or domain;
            raised before anything is read in full or written.
        prodkg.errors.ProdkgError: any other refusal (bad data, a graph that fails its shapes, a locked output folder).
    """
    from prodkg.flows.config import RunConfig, build_config, read_config_file
    from prodkg.flows.pipeline import run_pipeline

    if isinstance(config, RunConfig):
        cfg = build_config({**config.model_dump(), **options}, check_inputs=False)
    else:
        values = read_config_file(config) if config is not None else {}
        cfg = build_config({**values, **options}, check_inputs=False)
    return run_pipeline(cfg)


def open_graph(out: str | Path = DEFAULT_OUT) -> AbstractContextManager[GraphStore]:
    """The live knowledge graph of output folder ``out``, opened read-only, as a context manager.

    The store has ``query(sparql, bindings=None)`` returning a result with ``to_frame()``, and ``len()``.
    """
    from prodkg.kb.store import KnowledgeGraph
    from prodkg.layout import RunLayout

    return KnowledgeGraph(RunLayout(Path(out)).kg).open(read_only=True)


def query(out: str | Path = DEFAULT_OUT, sparql: str | None = None, *, name: str | None = None, **bindings: Any) -> pd.DataFrame:
    """Answer a SPARQL SELECT (``sparql``) or a named query (``name``, see ``list_components()["queries"]``) as a DataFrame.

    ``bindings`` bind query variables (``category="Mug"``); a named query converts them to its declared types.
    """
    from prodkg.errors import QueryError
    from prodkg.kb.queries import run_query

    if (sparql is None) == (name is None):
        raise QueryError("give exactly one of sparql (query text) or name (a named query)")
    with open_graph(out) as store:
        result = run_query(store, name, **bindings) if name else store.query(sparql, bindings=bindings or None)
        return result.to_frame()


def list_components(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered component names by kind: ``encoders``, ``methods``, ``fusions``, ``datasets``, ``queries``.

    With ``kind``, only that kind's list.
    """
    def methods() -> list[str]:
        from prodkg.adaptation import list_methods

        return [*list_methods(), "auto"]

    def fusions() -> list[str]:
        from prodkg.adaptation import FUSIONS

        return FUSIONS.names()

    def encoders() -> list[str]:
        from prodkg.extractors import list_encoders

        return list_encoders()

    def datasets() -> list[str]:
        from prodkg.catalogs import list_datasets

        return list_datasets()

    def queries() -> list[str]:
        from prodkg.kb.queries import list_queries

        return list_queries()

    loaders = {"encoders": encoders, "methods": methods, "fusions": fusions, "datasets": datasets, "queries": queries}
    if kind is not None:
        if kind not in loaders:
            from prodkg.errors import UnknownComponentError

            raise UnknownComponentError(f"unknown component kind {kind!r}; valid: {', '.join(loaders)}")
        return loaders[kind]()
    return {k: load() for k, load in loaders.items()}
