"""End to end in a real browser: the system Chromium, driven by Playwright, against `prodkg app` served by uvicorn."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from app_support import HOSTILE_ID, TOKEN

from prodkg.kb.curation import DecisionStore
from prodkg.layout import RunLayout

CHROMIUM = os.environ.get("PRODKG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server(demo):
    import uvicorn

    from prodkg.app.security import Auth
    from prodkg.app.server import create_app

    port = _free_port()
    app = create_app(demo, auth=Auth(tokens={TOKEN: None}))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the app did not start"
    yield f"http://127.0.0.1:{port}", demo
    srv.should_exit = True
    thread.join(timeout=10)


def test_review_in_chromium_and_decisions_are_kept(browser, server, tmp_path):
    base, out = server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(base + "/")
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)

    # a hostile product title is shown as text, and no script of the catalog runs
    page.goto(base + "/search?q=script")
    assert "<script>alert('x')</script> mug" in page.inner_text("main")
    page.goto(f"{base}/product?id={quote(HOSTILE_ID, safe='')}")
    assert page.inner_text("#title") == "<script>alert('x')</script> mug"
    assert dialogs == []

    page.goto(base + "/browse")
    page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)
    page.goto(base + "/run")
    assert page.inner_text("#accuracy")
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    # sign in, then review three products with the keyboard
    page.goto(base + "/login")
    page.fill("#login-name", "Ada Lovelace")
    page.fill("#login-token", TOKEN)
    page.click("#login-submit")
    page.wait_for_url(base + "/review")
    assert page.inner_text("#reviewer") == "Ada Lovelace"
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
    if os.environ.get("PRODKG_DOCS_SCREENSHOT"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / "app-review.png"))

    first = page.get_attribute("#current", "data-product")
    first_prediction = page.inner_text("#current-prediction")
    with page.expect_navigation():
        page.keyboard.press("a")  # accept
    second = page.get_attribute("#current", "data-product")
    assert second != first
    page.keyboard.press("c")  # type another category, Enter sets it
    page.keyboard.type("backpack")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    third = page.get_attribute("#current", "data-product")
    assert third not in (first, second)
    with page.expect_navigation():
        page.keyboard.press("o")  # outside the taxonomy

    # reload: the decisions are kept, in the store and on the pages
    page.reload()
    assert page.get_attribute("#current", "data-product") not in (first, second, third)
    latest = DecisionStore(RunLayout(out).decisions).latest()
    assert {p: (d.verdict, d.category, d.reviewer) for p, d in latest.items()} == {
        first: ("accept", first_prediction, "Ada Lovelace"), second: ("relabel", "backpack", "Ada Lovelace"),
        third: ("outside", None, "Ada Lovelace")}
    page.goto(f"{base}/product?id={second}")
    assert "Reviewed by Ada Lovelace" in page.inner_text("#decision")
    assert "reviewer" in page.inner_text("#facts")
    page.screenshot(path=str(tmp_path / "product.png"), full_page=True)
    assert dialogs == []
    for name in ("home", "browse", "run", "review", "product"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
    # the screenshots stay with the test's tmp dir; copy them where a person can look
    keep = os.environ.get("PRODKG_KEEP_SCREENSHOTS")
    if keep:
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
