"""The catalog managers' app: pages, escaping of hostile catalog strings, safety of writes, decisions as knowledge."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pytest
from app_support import HOSTILE_CATEGORY, HOSTILE_ID, HOSTILE_TITLE, TOKEN, csrf_of
from starlette.testclient import TestClient

from prodkg.app.queue import QueueModel, review_order
from prodkg.app.security import Auth, load_tokens
from prodkg.app.server import create_app
from prodkg.kb.curation import Decision, DecisionStore, curation_graph
from prodkg.kb.store import KnowledgeGraph
from prodkg.layout import RunLayout

PAGES = ["/", "/browse", "/search?q=mug", "/search?q=%3Cscript%3E", f"/product?id={quote(HOSTILE_ID)}", "/product?id=SUP-3", "/run",
         "/run?id=20260101T000000Z-aaaaaa", "/review", f"/category?c={quote(HOSTILE_CATEGORY)}", "/category?c=mug&which=predicted", "/login"]


def client(out, *, read_only=False, tokens=None) -> TestClient:
    auth = Auth(tokens={} if read_only else (tokens or {TOKEN: None}), read_only=read_only)
    return TestClient(create_app(out, auth=auth, warm=False, allowed_hosts=("testserver",)))


def login(c: TestClient, name: str = "Ada") -> None:
    r = c.post("/login", data={"csrf": csrf_of(c.get("/login").text), "name": name, "token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303, r.text


def decide(c: TestClient, pid: str, verdict: str, category: str = "", **extra):
    csrf = csrf_of(c.get("/login").text)
    return c.post("/review/decide", data={"csrf": csrf, "product_id": pid, "verdict": verdict, "category": category}, follow_redirects=False, **extra)


def test_every_page_answers_and_escapes_the_hostile_catalog(demo):
    c = client(demo)
    for path in PAGES:
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        body = r.text
        # no catalog string reaches the page unescaped
        assert "<script>alert" not in body and "<img src=x" not in body and "<iframe" not in body and "<svg onload" not in body, path
        assert "<b>bold</b>" not in body, path
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
    product = c.get(f"/product?id={quote(HOSTILE_ID)}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; mug" in product
    assert "&lt;iframe src=//evil&gt;" in product
    assert "&lt;b&gt;bold&lt;/b&gt;" in c.get("/browse").text
    assert HOSTILE_TITLE not in c.get("/search?q=script").text


def test_product_page_tells_facts_predictions_and_history_apart(demo):
    page = client(demo).get("/product?id=SUP-1").text
    assert 'id="facts"' in page and 'id="predictions"' in page and 'id="history"' in page
    assert "category/dann/0123456789ab" in page  # the model of the prediction
    assert page.count("20260101T000000Z-aaaaaa") >= 1 and page.count("20260102T000000Z-bbbbbb") >= 2  # both runs in the history
    assert "supplier t-shirt, new name" in page and "supplier t-shirt 1" in page  # the title before and after the rename


def test_run_page_shows_changes_quality_low_confidence_and_quarantine(demo):
    page = client(demo).get("/run").text
    assert "20260102T000000Z-bbbbbb" in page and "20260101T000000Z-aaaaaa" in page
    assert 'id="changes"' in page and "supplier t-shirt, new name" in page  # the changed product
    assert "<b>1</b> changed" in page  # and only it (a missing image in both runs is no change)
    assert 'id="quality"' in page and 'id="confusion"' in page and 'id="accuracy"' in page
    assert 'id="low"' in page and "/thumb?id=" in page
    assert "cannot decode &lt;svg onload=alert(1)&gt;" in page


def test_search_by_title_and_id(demo):
    c = client(demo)
    assert "SUP-7" in c.get("/search?q=SUP-7").text
    assert "supplier t-shirt, new name" in c.get("/search?q=NEW+NAME").text


def test_read_only_mode_refuses_every_write(demo):
    c = client(demo, read_only=True)
    assert 'action="/review/decide"' not in c.get("/review").text
    r = c.post("/review/decide", data={"product_id": "SUP-1", "verdict": "accept"})
    assert r.status_code == 403
    r = c.post("/login", data={"token": TOKEN, "name": "x"})
    assert r.status_code == 403
    assert not RunLayout(demo).decisions.exists()


def test_writes_need_a_login_and_a_csrf_token(demo):
    c = client(demo)
    assert decide(c, "SUP-1", "accept").status_code == 401  # not signed in
    bad = c.post("/login", data={"csrf": csrf_of(c.get("/login").text), "name": "Eve", "token": "wrong-token-0123456789"})
    assert bad.status_code == 401
    assert c.post("/login", data={"name": "Eve", "token": TOKEN}).status_code == 403  # no CSRF token
    login(c)
    r = c.post("/review/decide", data={"product_id": "SUP-1", "verdict": "accept"})
    assert r.status_code == 403  # signed in, but no CSRF token
    r = c.post("/review/decide", data={"csrf": "forged", "product_id": "SUP-1", "verdict": "accept"})
    assert r.status_code == 403
    assert decide(c, "SUP-1", "accept", headers={"origin": "http://evil.example"}).status_code == 403
    assert not RunLayout(demo).decisions.exists()
    assert decide(c, "SUP-1", "accept").status_code == 303


def test_host_header_must_name_this_server(demo):
    c = client(demo)
    assert c.get("/", headers={"host": "evil.example"}).status_code == 421
    assert c.get("/", headers={"host": "127.0.0.1:8765"}).status_code == 200
    strict = TestClient(create_app(demo, auth=Auth(tokens={TOKEN: None}), warm=False))  # the test client's own name is not allowed by default
    assert strict.get("/").status_code == 421


def test_a_forged_session_cookie_is_not_a_login(demo):
    c = client(demo)
    c.cookies.set("prodkg_session", "eyJ1IjoiTWFsbG9yeSIsImV4cCI6OTk5OTk5OTk5OX0.AAAA")
    assert decide(c, "SUP-1", "accept").status_code == 401


def test_a_decision_is_stored_and_becomes_a_fact_attributed_to_the_reviewer(demo):
    c = client(demo)
    login(c, "Ada Lovelace")
    assert decide(c, "SUP-3", "relabel", "backpack").status_code == 303
    assert decide(c, "SUP-0", "accept").status_code == 303
    assert decide(c, "SUP-2", "outside").status_code == 303
    assert decide(c, "SUP-4", "relabel", "no-such-category").status_code == 400
    latest = DecisionStore(RunLayout(demo).decisions).latest()
    assert {p: (d.verdict, d.category, d.reviewer) for p, d in latest.items()} == {
        "SUP-3": ("relabel", "backpack", "Ada Lovelace"), "SUP-0": ("accept", "mug", "Ada Lovelace"), "SUP-2": ("outside", None, "Ada Lovelace")}
    g = str(curation_graph())
    with KnowledgeGraph(RunLayout(demo).kg).open() as store:
        rows = store.query(f"""SELECT ?id ?label ?name WHERE {{ GRAPH <{g}> {{ ?d a pkg:Decision ; pkg:subject ?p ; prov:wasAttributedTo ?who .
            ?who a prov:Person ; schema:name ?name . ?p schema:category ?c }} ?p schema:productID ?id . ?c skos:prefLabel ?label }}""").to_frame()
        assert sorted(zip(rows["id"], rows["label"], rows["name"], strict=True)) == [("SUP-0", "mug", "Ada Lovelace"), ("SUP-3", "backpack", "Ada Lovelace")]
        # a prediction never overrides it: the run's own category fact for the decided product is gone
        facts = store.query("SELECT ?c WHERE { ?p schema:productID 'SUP-3' . ?p schema:category ?c }").to_frame()
        assert len(facts) == 1
        assert store.query("ASK { ?p schema:productID 'SUP-2' ; pkg:outsideTaxonomy true }").boolean
    page = c.get("/product?id=SUP-3").text
    assert "Reviewed by <b>Ada Lovelace</b>" in page and "reviewer" in page
    queue = c.get("/review").text
    assert 'value="SUP-3"' not in queue and 'value="SUP-0"' not in queue


def test_decisions_survive_a_rebuilt_graph(demo):
    from app_support import publish_run

    c = client(demo)
    login(c)
    decide(c, "SUP-3", "relabel", "backpack")
    # the graph is rebuilt from scratch by a new run of a renamed feed: the decisions store is outside kg/
    import shutil

    shutil.rmtree(RunLayout(demo).kg)
    latest = DecisionStore(RunLayout(demo).decisions).latest()
    publish_run(demo, "20260103T000000Z-cccccc", seed=2, catalog="feed-renamed", curation=latest)
    with KnowledgeGraph(RunLayout(demo).kg).open() as store:
        labels = store.query("SELECT ?l WHERE { ?p schema:productID 'SUP-3' ; schema:category ?c . ?c skos:prefLabel ?l }").column("l")
    assert labels == ["backpack"]


def test_the_app_publishes_decisions_the_graph_does_not_hold_yet_at_start(demo):
    store = DecisionStore(RunLayout(demo).decisions)
    store.append(Decision.make("SUP-5", "relabel", "mug", "Grace"))
    app = create_app(demo, auth=Auth(tokens={TOKEN: None}), warm=False, allowed_hosts=("testserver",))
    app.state.data.warm()
    with KnowledgeGraph(RunLayout(demo).kg).open() as s:
        assert s.query("ASK { ?d a pkg:Decision ; prov:wasAttributedTo ?w . ?w schema:name 'Grace' }").boolean


def test_decisions_export_and_import(demo, tmp_path, capsys):
    from prodkg.flows.cli import main

    store = DecisionStore(RunLayout(demo).decisions)
    store.append([Decision.make("SUP-1", "accept", "t-shirt", "Ada"), Decision.make("SUP-1", "relabel", "mug", "Bob")])
    dump = tmp_path / "decisions.jsonl"
    assert main(["decisions", "export", str(dump), "--out", str(demo)]) == 0
    other = tmp_path / "other"
    assert main(["decisions", "import", str(dump), "--out", str(other)]) == 0
    assert main(["decisions", "import", str(dump), "--out", str(other)]) == 0  # twice: nothing doubles
    imported = DecisionStore(RunLayout(other).decisions)
    assert [d.to_dict() for d in imported.all()] == [d.to_dict() for d in store.all()]
    assert imported.latest()["SUP-1"].category == "mug"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"product_id": "x", "verdict": "maybe", "reviewer": "r", "at": "2026-01-01T00:00:00+00:00"}) + "\n")
    assert main(["decisions", "import", str(bad), "--out", str(other)]) == 2
    assert len(imported.all()) == 2


def test_a_torn_last_line_is_ignored(tmp_path):
    store = DecisionStore(tmp_path / "d.jsonl")
    store.append(Decision.make("p1", "accept", "mug", "Ada"))
    with open(store.path, "a") as handle:
        handle.write('{"product_id": "p2", "verd')
    assert [d.product_id for d in store.all()] == ["p1"]


def test_tokens_from_files(tmp_path):
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(Exception, match="at least 16"):
        load_tokens(str(tmp_path / "t"))
    (tmp_path / "u").write_text("# reviewers\nAda Lovelace aaaaaaaaaaaaaaaaaaaa\nBob bbbbbbbbbbbbbbbbbbbb\n")
    tokens = load_tokens(None, str(tmp_path / "u"))
    auth = Auth(tokens=tokens)
    assert auth.check_token("aaaaaaaaaaaaaaaaaaaa", "someone else") == "Ada Lovelace"  # the name comes from the file
    assert auth.check_token("cccccccccccccccccccc", "x") is None


def test_queue_prefers_uncertain_products_with_many_unreviewed_neighbours():
    # cluster 0: 10 products, cluster 1: one outlier; equally uncertain
    model = QueueModel([f"p{i}" for i in range(11)], np.array([0] * 10 + [1]), np.ones(11), 2)
    conf = np.array([0.4] * 11)
    order, _ = review_order(model, conf, np.zeros(11, bool))
    assert order[0] != 10
    # a confident product comes after an uncertain one of the same cluster
    conf2 = conf.copy()
    conf2[0] = 0.99
    order2, _ = review_order(model, conf2, np.zeros(11, bool))
    assert list(order2).index(0) > list(order2).index(1)


def test_queue_spreads_over_clusters_and_skips_reviewed():
    model = QueueModel([f"p{i}" for i in range(30)], np.repeat([0, 1, 2], 10), np.ones(30), 3)
    conf = np.linspace(0.1, 0.5, 30)
    reviewed = np.zeros(30, bool)
    reviewed[0] = True
    order, scores = review_order(model, conf, reviewed, limit=3)
    assert 0 not in order
    assert sorted(model.cluster[order]) == [0, 1, 2]  # three answers, three clusters
    assert list(scores) == sorted(scores, reverse=True)


def test_a_new_run_is_picked_up_in_the_background_while_pages_keep_answering(demo):
    import time
    from datetime import UTC, datetime

    from app_support import publish_run

    c = client(demo)
    data = c.app.state.data
    before = data.snapshot()
    assert c.get("/").status_code == 200
    publish_run(demo, "20260104T000000Z-dddddd", seed=3, started=datetime(2026, 1, 4, tzinfo=UTC))
    assert c.get("/browse").status_code == 200  # answered from the previous store while the new one is indexed
    deadline = time.time() + 30
    while data.snapshot() is before and time.time() < deadline:
        time.sleep(0.05)
    assert data.snapshot().run_id == "20260104T000000Z-dddddd"
    assert "20260104T000000Z-dddddd" in c.get("/run").text


def _png_announcing(path, width: int, height: int) -> None:
    """A valid 8x8 PNG whose header is rewritten to announce ``width`` x ``height`` (CRC fixed): a bomb's header."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr:ihdr + 17])))
    path.write_bytes(bytes(raw))


def test_thumbnails_are_small_and_refuse_bombs_and_non_images(tmp_path):
    from PIL import Image

    from app_support import IMAGES
    from prodkg.app.server import _thumbnail

    photo = sorted(IMAGES.glob("*.png"))[0]
    thumb = _thumbnail(photo, 64)
    with Image.open(__import__("io").BytesIO(thumb)) as img:
        assert img.format == "JPEG" and max(img.size) <= 64 and min(img.size) >= 1
    bomb = tmp_path / "bomb.png"
    _png_announcing(bomb, 9_000, 9_000)  # 81 M pixels: under PIL's own bomb limit, over the cap; refused from the header
    with Image.open(bomb) as img:
        assert img.size == (9_000, 9_000)
    assert _thumbnail(bomb, 64) is None
    from prodkg.extractors.sources import ImageLimits

    with Image.open(photo) as img:
        pixels = img.size[0] * img.size[1]
    assert _thumbnail(photo, 64, ImageLimits(max_pixels=pixels - 1)) is None  # a real photo one pixel over a cap
    assert _thumbnail(photo, 64, ImageLimits(max_pixels=pixels)) is not None
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    assert _thumbnail(fake, 64) is None


def test_the_thumbnail_route_serves_a_catalog_photo(demo):
    c = client(demo, read_only=True)
    r = c.get("/thumb?id=SUP-0&s=96")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert c.get("/thumb?id=no-such-product").status_code == 404


def test_a_graph_published_under_another_base_iri_is_read_as_prodkg_graphs(tmp_path):
    from datetime import UTC, datetime

    from app_support import CLASSES, publish_run

    base = "https://shop.example.com/kg#"
    out = tmp_path / "out"
    publish_run(out, "20260101T000000Z-aaaaaa", seed=0, started=datetime(2026, 1, 1, tzinfo=UTC), base_iri=base)
    with KnowledgeGraph(RunLayout(out).kg).open() as store:
        graphs = set(store.query("SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }").column("g"))
    assert graphs and all(str(g).startswith(base) for g in graphs)  # the reference: nothing minted under the default base
    c = client(out)
    snap = c.app.state.data.snapshot()
    kinds = {f["graph"] for f in snap.facts(snap.products["SUP-1"]["iri"])}
    assert kinds == {"catalog", "run"}  # SUP-1's category is predicted above the threshold: a fact of the run's graph
    assert snap.base == base
    assert sorted(snap.taxonomy["by_key"]) == sorted(CLASSES)  # concept keys are the labels, not whole IRIs
    assert sum(n["run_facts"] for n in snap.taxonomy["nodes"].values()) == len(store_run_facts(out, base))
    assert "model (above threshold)" in c.get("/product?id=SUP-1").text
    login(c, "Ada")
    assert decide(c, "SUP-3", "relabel", "backpack").status_code == 303
    with KnowledgeGraph(RunLayout(out).kg).open() as store:
        assert store.query(f"ASK {{ GRAPH <{curation_graph(base=base)}> {{ ?d a pkg:Decision }} }}").boolean
        assert not store.query(f"ASK {{ GRAPH <{curation_graph()}> {{ ?s ?p ?o }} }}").boolean
    assert "reviewer" in c.get("/product?id=SUP-3").text


def store_run_facts(out, base: str) -> list:
    with KnowledgeGraph(RunLayout(out).kg).open() as store:
        return store.query(f"SELECT ?p WHERE {{ GRAPH ?g {{ ?p schema:category ?c }} FILTER(STRSTARTS(STR(?g), '{base}graph/run/')) }}").column("p")
