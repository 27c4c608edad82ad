"""Kept heads: a nightly run scores only its added and changed target products with the previous good run's heads.

The fast tests decide from self-made digests and manifests which run, if any, the heads are kept from. The slow
test runs the pipeline on a self-made text catalog night after night and checks the kept run against independent
routes: the first run's own rows, ``prodkg predict``'s scoring of the saved run, and a full rebuild of the graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdflib.compare import graph_diff, isomorphic, to_isomorphic

from prodkg.adaptation import MultiModal
from prodkg.flows.keep_heads import PRODUCT_DIGESTS, KeepPlan, heads_basis, plan_keep, product_digests, summary_line

WORDS = {"fruit": ["apple", "pear", "banana", "plum", "mango", "cherry"],
         "dairy": ["milk", "yoghurt", "cheese", "butter", "cream", "kefir"],
         "bakery": ["bread", "bagel", "croissant", "muffin", "baguette", "roll"]}
ADJ = ["fresh", "organic", "large", "small", "sweet", "classic", "family pack", "premium"]


def _catalog(n_source: int = 60, n_target: int = 100) -> pd.DataFrame:
    rows = []
    for i in range(n_source + n_target):
        category = list(WORDS)[i % 3]
        rows.append({"product_id": f"p{i:04d}", "title": f"{ADJ[(i // 18) % len(ADJ)]} {WORDS[category][(i // 3) % 6]} {i}",
                     "description": "", "image": "", "domain": "webshop" if i < n_source else "supplier", "category": category})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- which run qualifies (fast)


def _features(frame: pd.DataFrame) -> MultiModal:
    """A vector per product that depends on its title only (as an encoder's would)."""
    seeds = [int.from_bytes(t.encode()[:8].ljust(8, b"\0"), "little") ^ len(t) for t in frame["title"]]
    x = np.stack([np.random.default_rng(s).normal(size=8) for s in seeds]).astype(np.float32)
    return MultiModal(blocks={"text": x}, present={"text": np.ones(len(frame), bool)})


def _record(runs: Path, run_id: str, frame: pd.DataFrame, *, fitted_by: str | None = None, manifest: bool = True,
            settings: str = "s1") -> dict:
    """What a run leaves in ``runs/<run_id>``: its product digests and, when it completed, its manifest."""
    digests = product_digests(frame, _features(frame), ["webshop"], ["supplier"], [])
    basis = heads_basis(digests, settings=settings, taxonomy=None, curation=None, attributes=[], fitted_by=fitted_by or run_id)
    folder = runs / run_id
    folder.mkdir(parents=True)
    digests.to_parquet(folder / f"{PRODUCT_DIGESTS}.parquet", index=False)
    frame[frame["domain"] == "supplier"][["product_id"]].to_parquet(folder / "predictions.parquet", index=False)
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({"run_id": run_id, "heads_basis": basis, "models": [{"task": "category"}]}))
    return basis


def _plan(runs: Path, frame: pd.DataFrame, settings: str = "s1", max_drift: float = 0.10):
    digests = product_digests(frame, _features(frame), ["webshop"], ["supplier"], [])
    basis = heads_basis(digests, settings=settings, taxonomy=None, curation=None, attributes=[], fitted_by="now")
    return plan_keep(runs, "now", digests, basis, max_drift)


def _retitle(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame["product_id"].isin(ids), "title"] = frame.loc[frame["product_id"].isin(ids), "title"] + " v2"
    return frame


def test_the_heads_of_the_newest_complete_run_are_kept_and_only_changed_products_scored(tmp_path):
    runs, frame = tmp_path / "runs", _catalog()
    _record(runs, "r1", frame)
    night = _retitle(frame, ["p0060", "p0061"])
    night = pd.concat([night[night["product_id"] != "p0070"], _catalog(60, 101).iloc[[-1]]], ignore_index=True)  # p0160 added
    plan = _plan(runs, night)
    assert isinstance(plan, KeepPlan) and plan.previous == "r1" and plan.fitted_by == "r1"
    assert sorted(night["product_id"].iloc[plan.scored]) == ["p0060", "p0061", "p0160"]
    assert len(plan.carried) == 97 and "p0070" not in plan.carried and plan.removed == 1
    assert plan.drift == {"added": 1, "changed": 2, "removed": 1, "of": 100, "share": 0.04, "bound": 0.10, "since": "r1"}
    record = {"kept": True, "from_run": "r1", "fitted_by": "r1", "products_scored": 3, "products_carried_over": 97, "products_removed": 1,
              "target_drift": plan.drift}
    assert summary_line(record).startswith("kept from run r1 (fitted by r1): 3 target products scored, 97 carried over, 1 removed; "
                                           "target drift since the fit 4.0% (bound 10%)")
    assert summary_line({"kept": False, "reason": "why"}) == "fitted again: why" and summary_line(None) is None


def test_a_failed_run_is_never_the_one_heads_are_kept_from(tmp_path):
    runs, frame = tmp_path / "runs", _catalog()
    _record(runs, "r1", frame)
    # a newer run that failed (or was killed) after saving its heads and predictions: it wrote no manifest
    _record(runs, "r2", _retitle(frame, ["p0062"]), manifest=False)
    plan = _plan(runs, frame)
    assert isinstance(plan, KeepPlan) and plan.previous == "r1" and len(plan.scored) == 0
    # a newest manifest that cannot be read stops the search: an older run is not reached past it
    (runs / "r3").mkdir()
    (runs / "r3" / "manifest.json").write_text("{not json")
    assert _plan(runs, frame) == "no earlier complete run in this output folder"


def test_a_changed_source_label_or_setting_refits(tmp_path):
    runs, frame = tmp_path / "runs", _catalog()
    _record(runs, "r1", frame)
    relabelled = frame.copy()
    relabelled.loc[relabelled["product_id"] == "p0003", "category"] = "dairy"
    assert _plan(runs, relabelled) == "the source rows (ids, labels or features) differ from run r1's"
    assert _plan(runs, _retitle(frame, ["p0004"])) == "the source rows (ids, labels or features) differ from run r1's"
    assert _plan(runs, frame, settings="s2") == "the settings that shape the heads differ from run r1's"
    assert _plan(tmp_path / "empty", frame) == "no earlier complete run in this output folder"


def test_drift_adds_up_over_kept_nights_against_the_run_that_fitted_the_heads(tmp_path):
    runs, frame = tmp_path / "runs", _catalog()
    _record(runs, "r1", frame)
    night2 = _retitle(frame, [f"p{i:04d}" for i in range(60, 66)])  # 6 % of the target
    assert isinstance(_plan(runs, night2), KeepPlan)
    _record(runs, "r2", night2, fitted_by="r1")  # kept: r1's heads
    night3 = _retitle(night2, [f"p{i:04d}" for i in range(70, 76)])  # 6 % more: 6 % since r2, 12 % since r1
    assert _plan(runs, night3) == ("12 of 100 target products added, changed or removed since run r1 fitted the heads "
                                   "(12.0%, more than the bound of 10%)")
    plan = _plan(runs, night3, max_drift=0.15)
    assert isinstance(plan, KeepPlan) and plan.previous == "r2" and plan.fitted_by == "r1" and len(plan.scored) == 6
    # a product changed back to what the fitting run saw no longer counts as drift
    assert _plan(runs, frame, max_drift=0.0).drift["share"] == 0.0


# ----------------------------------------------------------------------------- the pipeline, night after night (slow)


def _cfg(catalog: Path, out: Path, **extra):
    from prodkg.flows.config import load_config

    return load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], method="source_only", baseline=None, epochs=3,
                       out=str(out), use_prefect=False, progress=False, keep_heads=True, **extra)


def _run_dir(out: Path, summary: dict) -> Path:
    return out / "runs" / summary["run_id"]


def _manifest(out: Path, summary: dict) -> dict:
    return json.loads((_run_dir(out, summary) / "manifest.json").read_text())


def _rows(predictions: pd.DataFrame, ids) -> pd.DataFrame:
    rows = predictions[predictions["product_id"].astype(str).isin(set(ids))]
    return rows.sort_values(["product_id", "kind", "level", "value"], kind="stable").reset_index(drop=True)


def _content(out: Path):
    from prodkg.kb.incremental import content_graph
    from prodkg.kb.store import KnowledgeGraph

    with KnowledgeGraph(out / "kg").open(read_only=True) as store:
        return content_graph(store)


def _full_rebuild(cfg, summary: dict, catalog: Path, into: Path):
    """The graph stage on the kept run's own tables, into an empty folder: a full rebuild of the same content."""
    from datetime import UTC, datetime

    from prodkg.catalogs.stage import catalog_facts
    from prodkg.kb.publish import flat_taxonomy, graph_stage
    from prodkg.kb.triples import RunInfo, model_infos
    from prodkg.layout import RunLayout

    run_dir, manifest = Path(summary["run_dir"]), json.loads((Path(summary["run_dir"]) / "manifest.json").read_text())
    products = pd.read_parquet(run_dir / "products.parquet")
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    facts = catalog_facts(products, ["supplier"], ["category"], base_dir=str(catalog.parent))
    info = RunInfo(run_id=summary["run_id"], started=datetime.now(UTC), ended=datetime.now(UTC), catalog="feed", method="source_only",
                   source_domains=["webshop"], target_domains=["supplier"], models=model_infos(manifest["features"], manifest["models"]),
                   config_hash=cfg.fingerprint())
    graph_stage(facts, predictions, flat_taxonomy(products, predictions), [], info, cfg.graph_settings(), "feed", layout=RunLayout(into))


@pytest.mark.slow
def test_nightly_runs_keep_the_heads_score_what_changed_and_update_the_graph_incrementally(tmp_path, monkeypatch):
    from prodkg.flows.pipeline import run_pipeline
    from prodkg.prediction.scoring import load_saved_model, score_catalog

    catalog, out = tmp_path / "feed.csv", tmp_path / "out"
    frame = _catalog()
    frame.to_csv(catalog, index=False)
    first = run_pipeline(_cfg(catalog, out))
    assert first["keep_heads"] == {"kept": False, "reason": "no earlier complete run in this output folder"}
    heads_cache = out / "cache" / "heads"
    fitted = sorted(p.name for p in heads_cache.iterdir())

    # night 2: 2 % of the target retitled, 3 target products added
    night = frame.copy()
    changed = ["p0065", "p0130"]
    night.loc[night["product_id"] == "p0065", "title"] = "aged gouda cheese wheel"
    night.loc[night["product_id"] == "p0130", "title"] = "sourdough rye loaf"
    added = pd.DataFrame([{"product_id": f"n{i}", "title": t, "description": "", "image": "", "domain": "supplier", "category": c}
                          for i, (t, c) in enumerate([("ripe kiwi fruit", "fruit"), ("skimmed milk bottle", "dairy"), ("cinnamon bun", "bakery")])])
    night = pd.concat([night, added], ignore_index=True)
    night.to_csv(catalog, index=False)
    cfg = _cfg(catalog, out)
    second = run_pipeline(cfg)
    kept = second["keep_heads"]
    assert kept["kept"] and kept["from_run"] == first["run_id"] == kept["fitted_by"]
    assert kept["products_scored"] == 5 and kept["products_carried_over"] == 98 and kept["products_removed"] == 0
    assert _manifest(out, second)["heads_basis"]["fitted_by"] == first["run_id"]

    # (a) no head was fitted: the same model ids, no new entry in the heads cache, the first run's weights linked
    assert [m["model_id"] for m in _manifest(out, second)["models"]] == [m["model_id"] for m in _manifest(out, first)["models"]]
    assert sorted(p.name for p in heads_cache.iterdir()) == fitted
    head = Path(_manifest(out, second)["models"][0]["path"])
    assert head.parent == _run_dir(out, second) / "models" and head.is_dir()

    p1 = pd.read_parquet(_run_dir(out, first) / "predictions.parquet")
    p2 = pd.read_parquet(_run_dir(out, second) / "predictions.parquet")
    unchanged = sorted(set(frame.loc[frame["domain"] == "supplier", "product_id"]) - set(changed))
    # (b) the unchanged products' rows are the first run's, verbatim
    pd.testing.assert_frame_equal(_rows(p2, unchanged), _rows(p1, unchanged))
    # (c) the changed and added products' rows are what `prodkg predict` gives with the first run's saved model
    scored_ids = changed + added["product_id"].tolist()
    feed = tmp_path / "changed.csv"
    night[night["product_id"].isin(scored_ids)].to_csv(feed, index=False)
    reference = score_catalog(load_saved_model(_run_dir(out, first)), str(feed), domains=["supplier"]).predictions
    mine, theirs = _rows(p2, scored_ids), _rows(reference, scored_ids)
    assert len(mine) >= len(scored_ids)
    pd.testing.assert_frame_equal(mine.drop(columns="confidence"), theirs.drop(columns="confidence"))
    np.testing.assert_allclose(mine["confidence"], theirs["confidence"], rtol=1e-6)
    assert not _rows(p1, changed).equals(_rows(p2, changed))  # the retitled products were scored anew, not carried

    # (d) the graph was updated incrementally, and holds what a full rebuild of the same tables holds
    assert second["graph_update"]["path"] == "incremental", second["graph_update"]
    assert second["changes"] == {"added": 3, "changed": 2, "removed": 0, "unchanged": 158}
    _full_rebuild(cfg, second, catalog, tmp_path / "full")
    inc, full = _content(out), _content(tmp_path / "full")
    if not isomorphic(inc, full):
        _, only_inc, only_full = graph_diff(to_isomorphic(inc), to_isomorphic(full))
        pytest.fail(f"only incremental:\n{only_inc.serialize(format='nt')}\nonly full rebuild:\n{only_full.serialize(format='nt')}")
    assert len(inc) > 1000

    # (e) a changed source label refits, and says why
    relabelled = night.copy()
    relabelled.loc[relabelled["product_id"] == "p0003", "category"] = "bakery"
    relabelled.to_csv(catalog, index=False)
    third = run_pipeline(_cfg(catalog, out))
    assert third["keep_heads"] == {"kept": False, "reason": f"the source rows (ids, labels or features) differ from run {second['run_id']}'s"}
    assert _manifest(out, third)["keep_heads"] == third["keep_heads"]
    assert _manifest(out, third)["heads_basis"]["fitted_by"] == third["run_id"]
    assert sorted(p.name for p in heads_cache.iterdir()) != fitted  # a head was fitted

    # ... and so does drift beyond the bound, counted against the run that fitted the heads: 8 then 5 more of 103
    drift = relabelled.copy()
    retitle = drift["product_id"].isin([f"p{i:04d}" for i in range(70, 78)])
    drift.loc[retitle, "title"] = drift.loc[retitle, "title"] + " refill"
    drift.to_csv(catalog, index=False)
    fourth = run_pipeline(_cfg(catalog, out))
    assert fourth["keep_heads"]["kept"] and fourth["keep_heads"]["fitted_by"] == third["run_id"]
    assert fourth["keep_heads"]["target_drift"]["share"] == round(8 / 103, 6)
    retitle = drift["product_id"].isin([f"p{i:04d}" for i in range(80, 85)])
    drift.loc[retitle, "title"] = drift.loc[retitle, "title"] + " refill"
    drift.to_csv(catalog, index=False)
    fifth = run_pipeline(_cfg(catalog, out))
    assert fifth["keep_heads"] == {"kept": False, "reason": f"13 of 103 target products added, changed or removed since run {third['run_id']} "
                                                             "fitted the heads (12.6%, more than the bound of 10%)"}

    # (f) a run that refits and is then killed after publishing is never the one heads are kept from
    other = drift.copy()
    other.loc[other["product_id"] == "p0006", "category"] = "dairy"
    other.to_csv(catalog, index=False)

    def killed(name: str) -> None:
        if name == "after-graph":
            raise RuntimeError("killed after the graph stage")

    monkeypatch.setattr("prodkg.flows.pipeline.failpoint", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(_cfg(catalog, out))
    monkeypatch.undo()
    failed = [p for p in (out / "runs").iterdir() if not (p / "manifest.json").is_file()]
    assert len(failed) == 1 and (failed[0] / "models").is_dir()  # its heads are there, and its graph is live
    drift.to_csv(catalog, index=False)  # the feed of the fifth night again
    seventh = run_pipeline(_cfg(catalog, out))
    assert seventh["keep_heads"]["kept"] and seventh["keep_heads"]["from_run"] == fifth["run_id"]
    assert seventh["keep_heads"]["products_scored"] == 0
    assert [m["model_id"] for m in _manifest(out, seventh)["models"]] == [m["model_id"] for m in _manifest(out, fifth)["models"]]
    pd.testing.assert_frame_equal(pd.read_parquet(_run_dir(out, seventh) / "predictions.parquet"),
                                  pd.read_parquet(_run_dir(out, fifth) / "predictions.parquet"))


def test_kept_fold_heads_are_linked_inside_their_head(tmp_path):
    from prodkg.flows.keep_heads import _link_models

    prev = tmp_path / "runs" / "r1"
    head = prev / "models" / "category"
    for d in (head, head / "folds" / "0", head / "folds" / "2"):
        d.mkdir(parents=True)
        (d / "weights.pt").write_bytes(d.name.encode())
    entry = {"task": "category", "path": str(head),
             "folds": [{"fold": 0, "path": str(head / "folds" / "0")}, {"fold": 2, "path": str(head / "folds" / "2")}]}
    new = tmp_path / "runs" / "r2" / "models"
    out = _link_models([entry], prev, new)
    assert [f["path"] for f in out[0]["folds"]] == [str(new / "category" / "folds" / "0"), str(new / "category" / "folds" / "2")]
    assert (new / "category" / "folds" / "2" / "weights.pt").read_bytes() == b"2"
    assert sorted(p.name for p in new.iterdir()) == ["category"]  # nothing linked beside the head
    assert entry["folds"][0]["path"] == str(head / "folds" / "0")  # the previous manifest's record is left as read
