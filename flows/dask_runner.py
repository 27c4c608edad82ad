"""Scale-out of extraction: Prefect's Dask task runner on a local or an existing Dask cluster."""

from __future__ import annotations

import logging

from prodkg.flows.config import RunConfig
from prodkg.errors import ConfigError


def task_runner_for(cfg: RunConfig):
    """The Prefect task runner that ``cfg`` asks for: a DaskTaskRunner, or None for Prefect's default.

    ``cfg.workers = N`` starts a local cluster of N single-threaded worker processes for the run
    (torch in each uses one thread, so N workers fill N cores without oversubscribing them);
    ``cfg.dask_address`` connects to a running scheduler, whose workers must be able to import
    prodkg and read the catalog's images and the feature cache at the same paths.
    """
    if not cfg.workers and not cfg.dask_address:
        return None
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError(f"workers / dask_address need the prefect-dask package (pip install prefect-dask): {exc}") from exc
    # distributed logs every connection at INFO through the root handler; a nightly log wants its warnings only
    dask_log = logging.getLogger("distributed")
    if dask_log.getEffectiveLevel() < logging.WARNING:
        dask_log.setLevel(logging.WARNING)
    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})


def describe(cfg: RunConfig) -> str:
    """Where the extraction shards run, for the manifest."""
    if cfg.dask_address:
        return f"dask ({cfg.dask_address})"
    if cfg.workers:
        return f"dask (local cluster, {cfg.workers} workers)"
    return "prefect (threads)" if cfg.use_prefect else "direct"


def extraction_shard_size(cfg: RunConfig, n_products: int) -> int:
    """Products per extraction shard: ``cfg.shard_size``, but small enough that each local worker gets one."""
    if cfg.workers and n_products:
        return max(1, min(cfg.shard_size, -(-n_products // cfg.workers)))
    return cfg.shard_size
