"""Scale-out: the extraction shards of a real run on a local Dask cluster of 2 worker processes equal single-process features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ops_support import PYTHON, base_env, start, stop

from prodkg.extractors import FeatureCache
from prodkg.extractors.extract import content_hash, torch_threads
from prodkg.catalogs.stage import ingest_stage, modality_items
from prodkg.extractors.stage import extract_shard, shards
from prodkg.flows.config import load_config
from prodkg.flows.dask_runner import describe, extraction_shard_size, task_runner_for

RUN_TIMEOUT_S = 400


def test_shard_size_gives_every_local_worker_a_shard(sample_catalog):
    base = {"catalog": str(sample_catalog), "source": ["webshop"], "target": ["supplier"]}
    assert extraction_shard_size(load_config(**base, workers=2), 18) == 9
    assert extraction_shard_size(load_config(**base, workers=4), 18) == 5
    assert extraction_shard_size(load_config(**base, workers=2, shard_size=4), 18) == 4
    assert extraction_shard_size(load_config(**base), 18) == 65536
    assert task_runner_for(load_config(**base)) is None
    runner = task_runner_for(load_config(**base, workers=3))
    assert type(runner).__name__ == "DaskTaskRunner" and runner.cluster_kwargs["n_workers"] == 3
    assert task_runner_for(load_config(**base, dask_address="tcp://127.0.0.1:8786")).address == "tcp://127.0.0.1:8786"
    assert describe(load_config(**base, workers=2)) == "dask (local cluster, 2 workers)"


@pytest.mark.slow
def test_two_dask_workers_extract_what_one_process_extracts(prefect_server, small_catalog, tmp_path):
    api, home = prefect_server
    out = tmp_path / "dask-run"
    log = tmp_path / "dask-run.log"
    proc = start([PYTHON, "-m", "prodkg.flows.cli", "run", "--catalog", str(small_catalog), "--source", "webshop", "--target", "supplier",
                  "--workers", "2", "--epochs", "3", "--out", str(out), "--quiet"], base_env(home, api), log)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except Exception:
        stop(proc)
        raise
    stop(proc)
    assert rc == 0, log.read_text(errors="replace")[-4000:]
    (run_dir,) = (out / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["orchestrator"] == "prefect"
    assert manifest["extraction_ran_on"] == "dask (local cluster, 2 workers)"
    workers = set()
    for modality in ("image", "text"):
        stats = manifest["features"][modality]
        assert stats["shards"] == 2 and stats["present"] == 18 and stats["failed"] == 0
        workers |= set(stats["workers"])
    pids = {w.rsplit(":", 1)[1] for w in workers}
    assert len(pids) == 2 and str(proc.pid) not in pids, workers  # two worker processes, neither the run's own

    # the same products and shards, extracted one after the other in this process with a fresh cache (same shards because
    # a convolution over a batch of 9 may round its last bit differently from one over 18: that is the encoder, not Dask)
    cfg = load_config(catalog=str(small_catalog), source=["webshop"], target=["supplier"], use_prefect=False, progress=False,
                      out=str(tmp_path / "single"))
    products = ingest_stage(cfg.ingest_settings()).products
    dask_cache = FeatureCache(out / "cache")
    for modality in ("image", "text"):
        items = modality_items(products, modality)
        spans = shards(len(items), extraction_shard_size(load_config(**dict(cfg.to_dict(), use_prefect=True, workers=2)), len(items)))
        assert spans == [(0, 9), (9, 18)]
        # one torch thread, as in each Dask worker
        with torch_threads(1):
            parts = [extract_shard(items[a:b], cfg.extract_settings(), modality, FeatureCache(cfg.cache_path)) for a, b in spans]
        single = {"features": np.concatenate([p["features"] for p in parts]), "encoder_id": parts[0]["encoder_id"],
                  "n_computed": sum(p["n_computed"] for p in parts), "n_cached": sum(p["n_cached"] for p in parts)}
        assert single["n_computed"] > 0 and single["n_cached"] == 0
        keys = [content_hash(item, modality) for item in items]
        from_dask = dask_cache.get_many(single["encoder_id"], keys)
        assert len(from_dask) == len(set(keys)) == single["n_computed"]
        dask_features = np.stack([from_dask[k] for k in keys])
        assert np.abs(single["features"]).max() > 0.01
        np.testing.assert_allclose(dask_features, single["features"], rtol=0, atol=1e-6, err_msg=modality)

