"""What the app shows, read from the published graph and the run folders, cached per published store.

The live graph is opened read-only and reopened when a publish swaps it. Everything that costs
a scan of the whole graph (the product index, the taxonomy with its counts, the review queue's
clustering) is computed once per published store or run, so a page only runs small, bound queries.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rdflib.term import URIRef

from prodkg.errors import StoreError
from prodkg.kb.curation import Decision, DecisionStore
from prodkg.kb.iri import DEFAULT_BASE, mint, unmint
from prodkg.kb.store import KnowledgeGraph, OxigraphStore
from prodkg.kb.vocab import compact
from prodkg.layout import RunLayout

__all__ = ["AppData", "GraphSnapshot", "RunTables"]

_UNSAFE_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')


def _records(store: OxigraphStore, sparql: str, bindings: dict | None = None) -> list[dict[str, Any]]:
    return store.query(sparql, bindings).to_frame().to_dict("records")


def graph_kind(graph: str, base: str = DEFAULT_BASE) -> tuple[str, str]:
    """(kind, name) of a named graph prodkg writes under ``base``: catalog, run, taxonomy or curation."""
    try:
        kind, parts = unmint(URIRef(graph), base)
        if kind == "graph" and parts:
            return parts[0], "/".join(parts[1:])
    except (ValueError, TypeError):
        pass
    return "other", graph


class RunTables:
    """The tables of one run folder, read once."""

    def __init__(self, layout: RunLayout, run_id: str) -> None:
        self.layout, self.run_id = layout, run_id
        self.dir = layout.run_dir(run_id)

    def _table(self, name: str) -> pd.DataFrame | None:
        path = self.layout.table(self.run_id, name)
        return pd.read_parquet(path) if path.is_file() else None

    @cached_property
    def manifest(self) -> dict:
        path = self.layout.manifest(self.run_id)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @cached_property
    def products(self) -> pd.DataFrame:
        frame = self._table("products")
        return frame if frame is not None else pd.DataFrame(columns=["product_id", "title", "domain", "category"])

    @cached_property
    def quarantine(self) -> pd.DataFrame:
        frame = self._table("quarantine")
        return frame if frame is not None else pd.DataFrame(columns=["stage", "source_row", "product_id", "reason", "raw"])

    @cached_property
    def predictions(self) -> pd.DataFrame | None:
        """The run's predictions table, read once for :attr:`categories` and :attr:`unknown`."""
        return self._table("predictions")

    @cached_property
    def categories(self) -> pd.DataFrame:
        """The category predictions, indexed by product id."""
        frame = self.predictions
        if frame is None:
            return pd.DataFrame(columns=["value", "confidence", "model", "published"])
        frame = frame[frame["task"] == "category"]
        if "kind" in frame:  # the finest level of the class predictions; unknown-product rows apart (see `unknown`)
            frame = frame[frame["kind"] == "class"].sort_values("level", na_position="first", kind="stable")
        frame = frame.drop_duplicates("product_id", keep="first")
        if "published" not in frame:
            frame = frame.assign(published=frame["confidence"] >= self.threshold)
        return frame.set_index("product_id")[["value", "confidence", "model", "published"]]

    @cached_property
    def unknown(self) -> pd.DataFrame:
        """Products the run flagged as belonging to no known category (confidence: the unknown score)."""
        frame = self.predictions
        if frame is None or "kind" not in frame:
            return pd.DataFrame(columns=["confidence"])
        frame = frame[(frame["task"] == "category") & (frame["kind"] == "unknown")].drop_duplicates("product_id")
        return frame.set_index("product_id")[["confidence"]]

    @cached_property
    def target(self) -> list[str]:
        return list(self.manifest.get("target") or self.manifest.get("config", {}).get("target") or [])

    @cached_property
    def threshold(self) -> float:
        value = self.manifest.get("threshold", self.manifest.get("config", {}).get("threshold"))
        return float(value) if value is not None else 0.5  # a run with a precision target marks what it published instead

    @cached_property
    def product_rows(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self.products["product_id"].astype(str))}

    @cached_property
    def embeddings(self) -> tuple[list[str], np.ndarray] | None:
        frame = self._table("embeddings")
        if frame is None or not len(frame):
            return None
        return frame["product_id"].astype(str).tolist(), np.stack(frame["vector"].to_numpy()).astype(np.float32)

    @cached_property
    def target_ids(self) -> list[str]:
        p = self.products
        return p.loc[p["domain"].isin(self.target), "product_id"].astype(str).tolist() if "domain" in p else []


@dataclass
class GraphSnapshot:
    """One published store, open read-only, with what is computed from it once."""

    path: Path
    store: OxigraphStore
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def records(self, sparql: str, bindings: dict | None = None) -> list[dict[str, Any]]:
        return _records(self.store, sparql, bindings)

    @cached_property
    def runs(self) -> list[dict]:
        """The runs the graph records, newest first."""
        rows = self.records("SELECT ?id ?started ?catalog WHERE { ?r a pkg:Run ; pkg:runId ?id . "
                            "OPTIONAL { ?r prov:startedAtTime ?started } OPTIONAL { ?r pkg:catalog ?catalog } }")
        by_id: dict[str, dict] = {}
        for r in rows:
            cur = by_id.setdefault(r["id"], {"run_id": r["id"], "started": None, "catalog": None})
            cur["started"] = cur["started"] or r["started"]
            cur["catalog"] = cur["catalog"] or r["catalog"]
        return sorted(by_id.values(), key=lambda r: (str(r["started"] or ""), r["run_id"]), reverse=True)

    @cached_property
    def base(self) -> str:
        """The IRI base the graph was published under (``--base-iri``), read from its run resources."""
        for r in self.records("SELECT ?r ?id WHERE { ?r a pkg:Run ; pkg:runId ?id }"):
            iri, suffix = str(r["r"]), _run_suffix(str(r["id"]))
            if suffix and iri.endswith(suffix) and len(iri) > len(suffix):
                return iri[: -len(suffix)]
        return DEFAULT_BASE

    @cached_property
    def run_id(self) -> str | None:
        return self.runs[0]["run_id"] if self.runs else None

    @cached_property
    def catalog(self) -> str | None:
        return next((r["catalog"] for r in self.runs if r["catalog"]), None)

    @cached_property
    def products(self) -> dict[str, dict]:
        """product id -> {iri, title, image, domain} of every product the graph describes."""
        rows = self.records("SELECT ?p ?id ?title ?image ?domain WHERE { ?p a schema:Product ; schema:productID ?id . "
                            "OPTIONAL { ?p schema:name ?title } OPTIONAL { ?p schema:image ?image } OPTIONAL { ?p pkg:domain ?domain } }")
        out: dict[str, dict] = {}
        for r in rows:
            out.setdefault(str(r["id"]), {"iri": r["p"], "title": r["title"], "image": r["image"], "domain": r["domain"]})
        return out

    @cached_property
    def search_index(self) -> tuple[list[str], list[str]]:
        ids = sorted(self.products)
        return ids, [f"{pid}\x1f{self.products[pid]['title'] or ''}".casefold() for pid in ids]

    def search(self, text: str, limit: int = 50) -> list[str]:
        needle = text.strip().casefold()
        if not needle:
            return []
        ids, keys = self.search_index
        exact = [pid for pid in ids if pid.casefold() == needle]
        hits = exact + [pid for pid, key in zip(ids, keys, strict=True) if needle in key and pid not in exact]
        return hits[:limit]

    @cached_property
    def taxonomy(self) -> dict:
        """Concepts with labels, parents, depth and product counts (asserted by catalog or reviewer; predicted)."""
        concepts = self.records("SELECT ?c ?label WHERE { ?c a skos:Concept ; skos:prefLabel ?label }")
        broader = self.records("SELECT ?c ?parent WHERE { ?c skos:broader ?parent }")
        asserted = self.records("SELECT ?g ?c (COUNT(DISTINCT ?p) AS ?n) WHERE { GRAPH ?g { ?p schema:category ?c } } GROUP BY ?g ?c")
        predicted = self.records("SELECT ?c (COUNT(?x) AS ?n) WHERE { ?x pkg:task \"category\" ; pkg:object ?c } GROUP BY ?c")
        nodes = {r["c"]: {"iri": r["c"], "label": str(r["label"]), "parents": [], "children": [], "asserted": 0, "reviewed": 0,
                          "run_facts": 0, "predicted": 0} for r in concepts}
        for r in broader:
            if r["c"] in nodes and r["parent"] in nodes:
                nodes[r["c"]]["parents"].append(r["parent"])
                nodes[r["parent"]]["children"].append(r["c"])
        for r in asserted:
            if r["c"] in nodes:
                kind = graph_kind(r["g"], self.base)[0]
                key = {"catalog": "asserted", "curation": "reviewed", "run": "run_facts"}.get(kind)
                if key:
                    nodes[r["c"]][key] += int(r["n"])
        for r in predicted:
            if r["c"] in nodes:
                nodes[r["c"]]["predicted"] += int(r["n"])
        for node in nodes.values():
            node["children"].sort(key=lambda c: nodes[c]["label"].casefold())
            node["key"] = _concept_key(node["iri"], self.base)
        depth: dict[str, int] = {}

        def level(c: str, seen: frozenset = frozenset()) -> int:
            if c not in depth:
                ups = [p for p in nodes[c]["parents"] if p not in seen]
                depth[c] = 0 if not ups else 1 + min(level(p, seen | {c}) for p in ups)
            return depth[c]

        for c in nodes:
            nodes[c]["level"] = level(c)
        roots = sorted((c for c in nodes if not nodes[c]["parents"]), key=lambda c: nodes[c]["label"].casefold())
        by_key = {n["key"]: n for n in nodes.values()}
        return {"nodes": nodes, "roots": roots, "by_key": by_key}

    @cached_property
    def members(self) -> dict[str, dict[str, list[str]]]:
        """concept key -> {"asserted": product ids, "predicted": product ids}."""
        out: dict[str, dict[str, list[str]]] = {}
        for r in self.records("SELECT ?id ?c WHERE { ?p schema:category ?c ; schema:productID ?id }"):
            out.setdefault(_concept_key(r["c"], self.base), {"asserted": [], "predicted": []})["asserted"].append(str(r["id"]))
        for r in self.records("SELECT ?id ?c WHERE { ?x pkg:task \"category\" ; pkg:object ?c ; pkg:subject ?p . ?p schema:productID ?id }"):
            out.setdefault(_concept_key(r["c"], self.base), {"asserted": [], "predicted": []})["predicted"].append(str(r["id"]))
        for v in out.values():
            v["asserted"] = sorted(set(v["asserted"]))
            v["predicted"] = sorted(set(v["predicted"]))
        return out

    def facts(self, iri: str) -> list[dict]:
        rows = self.records(
            "SELECT ?product ?g ?p ?o ?l1 ?l2 ?pn ?pv ?qv ?qu WHERE { GRAPH ?g { ?product ?p ?o } "
            "OPTIONAL { ?o skos:prefLabel ?l1 } OPTIONAL { ?o schema:name ?l2 } "
            "OPTIONAL { ?o schema:propertyID ?pn ; schema:value ?pv } OPTIONAL { ?o schema:value ?qv ; schema:unitText ?qu } }",
            {"product": URIRef(iri)})
        out = []
        for r in rows:
            kind, name = graph_kind(r["g"], self.base)
            value = r["l1"] or r["l2"]
            if value is None and r["pn"] is not None:
                value = f"{r['pn']} = {r['pv']}"
            if value is None and r["qv"] is not None:
                value = f"{r['qv']} {r['qu']}"
            if value is None:
                value = r["o"]
            out.append({"graph": kind, "graph_name": name, "property": compact(str(r["p"])), "value": str(value),
                        "level": self.taxonomy["nodes"].get(r["o"], {}).get("level") if isinstance(r["o"], str) else None})
        order = {"curation": 0, "catalog": 1, "run": 2}
        return sorted(out, key=lambda f: (order.get(f["graph"], 3), f["property"], f["value"]))

    def predictions(self, iri: str) -> list[dict]:
        # The product's IRI is written into the query: bound as a substitution, the engine scanned every
        # prediction (200 ms on the instacart graph) instead of starting from the product. It is an IRI of the
        # graph itself (percent-encoded by mint), checked again here so it cannot leave the <...>.
        if _UNSAFE_IRI.search(iri):
            return []
        rows = self.records(
            f"SELECT ?task ?o ?label ?conf ?model_id ?run_id WHERE {{ ?x pkg:subject <{iri}> . ?x a pkg:Prediction ; pkg:task ?task ; "
            "pkg:object ?o ; pkg:confidence ?conf ; pkg:model ?m ; prov:wasGeneratedBy ?r . ?r pkg:runId ?run_id . "
            "OPTIONAL { ?m pkg:modelId ?model_id } OPTIONAL { ?o skos:prefLabel ?l1 } OPTIONAL { ?o schema:name ?l2 } "
            "BIND(COALESCE(?l1, ?l2, STR(?o)) AS ?label) }")
        nodes = self.taxonomy["nodes"]
        return sorted(({"task": r["task"], "value": str(r["label"]), "confidence": float(r["conf"]), "model": r["model_id"], "run_id": r["run_id"],
                        "level": nodes.get(r["o"], {}).get("level") if isinstance(r["o"], str) else None} for r in rows),
                      key=lambda p: (p["task"] != "category", p["task"]))

    def close(self) -> None:
        self.store.close()


def _run_suffix(run_id: str) -> str | None:
    """What :func:`mint` appends to the base for the run ``run_id`` (None: not a valid run id)."""
    try:
        return str(mint("run", run_id, base="urn:x:"))[len("urn:x:"):]
    except (ValueError, TypeError):
        return None


def _concept_key(iri: str, base: str = DEFAULT_BASE) -> str:
    try:
        kind, parts = unmint(URIRef(iri), base)
        if kind == "concept":
            return parts[-1]
    except (ValueError, TypeError):
        pass
    return iri


class AppData:
    """The app's view of one output folder: the live graph, the run folders and the decisions store."""

    def __init__(self, out: str | Path) -> None:
        self.layout = RunLayout(Path(out))
        self.kg = KnowledgeGraph(self.layout.kg)
        self.decisions = DecisionStore(self.layout.decisions)
        self._snapshot: GraphSnapshot | None = None
        self._building: Path | None = None
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, RunTables] = OrderedDict()
        self._queue_models: dict[tuple[str, int], Any] = {}

    # --- the graph ---------------------------------------------------------------------------------
    def snapshot(self) -> GraphSnapshot:
        path = self.kg.current_path()
        if path is None:
            raise StoreError(f"nothing has been published in {self.layout.kg} yet: run `prodkg run --out {self.layout.out}` first")
        with self._lock:
            if self._snapshot is None:
                self._snapshot = GraphSnapshot(path=path, store=OxigraphStore(path, read_only=True))
            elif self._snapshot.path != path and self._building != path:
                # a run published a new graph: build its indexes in the background and keep answering from the
                # previous store (still on disk: a publish keeps one generation) until they are ready
                self._building = path
                threading.Thread(target=self._swap_in, args=(path,), daemon=True).start()
            return self._snapshot

    def _swap_in(self, path: Path) -> None:
        try:
            new = GraphSnapshot(path=path, store=OxigraphStore(path, read_only=True))
            _ = new.products, new.taxonomy, new.members, new.search_index
        except Exception:  # noqa: BLE001 - e.g. the store was replaced again meanwhile; the next request retries
            with self._lock:
                self._building = None
            return
        with self._lock:
            old, self._snapshot, self._building = self._snapshot, new, None
        if old is not None:
            old.close()

    def _replace_now(self) -> GraphSnapshot:
        """Switch to the live store at once (after the app's own publish, whose indexes are carried over)."""
        path = self.kg.current_path()
        with self._lock:
            if self._snapshot is None or self._snapshot.path != path:
                old = self._snapshot
                self._snapshot = GraphSnapshot(path=path, store=OxigraphStore(path, read_only=True))
                if old is not None:
                    old.close()
            return self._snapshot

    def carry_over(self, old: GraphSnapshot) -> None:
        """After the app's own curation publish: the new store has the same products and taxonomy, so its
        snapshot starts with the old one's indexes instead of scanning the graph again (reviewed counts
        are taken from the decisions store, not from these)."""
        new = self._replace_now()
        if new is not old:
            for name in ("runs", "run_id", "base", "catalog", "products", "search_index", "taxonomy", "members"):
                if name in old.__dict__:
                    new.__dict__[name] = old.__dict__[name]

    def reviewed_counts(self) -> dict[str, int]:
        """concept key -> products a reviewer put in it (decisions in force)."""
        counts: dict[str, int] = {}
        for d in self.decisions_in_force().values():
            if d.category:
                counts[d.category] = counts.get(d.category, 0) + 1
        return counts

    def warm(self) -> None:
        """Compute the per-store and per-run caches now (the first pages are then as fast as the rest)."""
        snap = self.snapshot()
        _ = snap.products, snap.taxonomy, snap.members, snap.search_index
        if snap.run_id:
            self.queue(limit=20)
            from prodkg.app.publish import curation_in_sync, publish_curation

            if self.decisions_in_force() and not curation_in_sync(self):
                publish_curation(self)  # decisions a busy graph could not take, or a graph rebuilt since

    # --- run folders -------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        """Run folders with a manifest, oldest first (run ids sort by their start time)."""
        if not self.layout.runs.is_dir():
            return []
        return sorted(p.name for p in self.layout.runs.iterdir() if (p / "manifest.json").is_file())

    def run(self, run_id: str) -> RunTables:
        with self._lock:
            if run_id not in self._runs:
                self._runs[run_id] = RunTables(self.layout, run_id)
                while len(self._runs) > 12:
                    self._runs.popitem(last=False)
            self._runs.move_to_end(run_id)
            return self._runs[run_id]

    def previous_run(self, run_id: str) -> str | None:
        ids = self.run_ids()
        earlier = [r for r in ids if r < run_id]
        return earlier[-1] if earlier else None

    def live_run(self) -> RunTables | None:
        snap = self.snapshot()
        ids = set(self.run_ids())
        for r in snap.runs:
            if r["run_id"] in ids:
                return self.run(r["run_id"])
        return None

    # --- decisions ---------------------------------------------------------------------------------
    def decisions_in_force(self) -> dict[str, Decision]:
        return self.decisions.latest()

    def history(self, product_id: str, limit: int = 10) -> list[dict]:
        """Per run (newest first): was the product there, its title, its predicted category and confidence."""
        out = []
        for run_id in reversed(self.run_ids()[-limit:]):
            tables = self.run(run_id)
            row = tables.product_rows.get(product_id)
            entry = {"run_id": run_id, "present": row is not None, "title": None, "predicted": None, "confidence": None}
            if row is not None:
                entry["title"] = tables.products.iloc[row].get("title")
            if product_id in tables.categories.index:
                pred = tables.categories.loc[product_id]
                entry["predicted"], entry["confidence"] = pred["value"], float(pred["confidence"])
            out.append(entry)
        return out

    # --- the review queue --------------------------------------------------------------------------
    def queue(self, limit: int = 50) -> list[dict]:
        """Unreviewed target products of the live run, most useful answer first (see :mod:`app.queue`)."""
        from prodkg.app.queue import fit_queue_model, n_clusters_for, review_order

        tables = self.live_run()
        if tables is None:
            return []
        ids = tables.target_ids
        decided = self.decisions_in_force()
        reviewed = np.array([pid in decided for pid in ids], dtype=bool)
        # one cluster per answer expected by the end of this review round: refitted once per round, not per answer
        key = (tables.run_id, n_clusters_for(len(ids), int(reviewed.sum())))
        model = self._queue_models.get(key)
        if model is None:
            emb = tables.embeddings
            if emb is not None:
                index = {pid: i for i, pid in enumerate(emb[0])}
                dim = emb[1].shape[1]
                vectors = np.stack([emb[1][index[pid]] if pid in index else np.zeros(dim, np.float32) for pid in ids]) if ids else np.zeros((0, dim))
            else:
                vectors = np.zeros((len(ids), 1), np.float32)
            model = fit_queue_model(ids, vectors, n_clusters=key[1])
            self._queue_models = {key: model}
        cats = tables.categories
        conf = cats["confidence"].reindex(ids).to_numpy(dtype=float) if len(cats) else np.full(len(ids), np.nan)
        order, scores = review_order(model, conf, reviewed, limit=limit)
        out = []
        for i, score in zip(order, scores, strict=True):
            pid = ids[i]
            pred = cats.loc[pid] if pid in cats.index else None
            out.append({"product_id": pid, "score": float(score), "predicted": None if pred is None else pred["value"],
                        "confidence": None if pred is None else float(pred["confidence"]), "model": None if pred is None else pred["model"],
                        "run_id": tables.run_id, "cluster": int(model.cluster[i])})
        return out
