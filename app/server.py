"""The catalog managers' web app: browse the graph, review what the model is unsure of, record decisions.

Server-rendered pages (Jinja2, autoescaped), one small script for keyboard shortcuts, no CDN:
everything is served from the package, so it works offline. See :mod:`prodkg.app.security`.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import parse_qs, quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from prodkg.app.data import AppData
from prodkg.app.security import CSRF_COOKIE, HEADERS, LOOPBACK_NAMES, SESSION_COOKIE, SESSION_SECONDS, Auth, host_allowed
from prodkg.errors import ConfigError, StoreError
from prodkg.kb.curation import Decision

__all__ = ["create_app", "serve"]

HERE = Path(__file__).resolve().parent
PAGE = 50
MAX_FORM = 16 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


class _Guard:
    """ASGI middleware: Host check before anything reads the request; safety headers on every answer."""

    def __init__(self, app: ASGIApp, allowed_hosts: set[str]) -> None:
        self.app, self.allowed = app, allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not host_allowed(headers.get("host"), self.allowed):
            await PlainTextResponse("Host not allowed (start the app with --allow-host NAME)", status_code=421)(scope, receive, send)
            return

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(out: str | Path, *, auth: Auth | None = None, allowed_hosts: tuple[str, ...] = (), warm: bool = True) -> Starlette:
    """The app over the output folder ``out`` (its live graph, run folders and decisions store)."""
    data = AppData(out)
    auth = auth or Auth(tokens={}, read_only=True)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x: "–" if x is None else f"{100 * float(x):.1f} %"
    env.filters["q"] = lambda s: quote(str(s), safe="")
    thumbs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
    thumbs_lock = threading.Lock()
    write_lock = threading.Lock()

    def browser_id(request: Request) -> tuple[str, bool]:
        cookie = request.cookies.get(CSRF_COOKIE)
        if cookie and 16 <= len(cookie) <= 64 and cookie.isalnum():
            return cookie, False
        return secrets.token_hex(16), True

    def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        browser, new = browser_id(request)
        reviewer = auth.reviewer(request.cookies.get(SESSION_COOKIE))
        html = env.get_template(name).render(request_path=request.url.path, reviewer=reviewer, csrf=auth.csrf_token(browser),
                                             writable=auth.writable, read_only=auth.read_only, **context)
        response = HTMLResponse(html, status_code=status)
        if new:
            response.set_cookie(CSRF_COOKIE, browser, httponly=True, samesite="strict", path="/")
        return response

    def error(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status=status, message=message)

    async def form(request: Request) -> dict[str, str] | None:
        """The urlencoded form of a write, or None when it is too big or not a form."""
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return None
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[-1] for k, v in parsed.items()}

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return False
        return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host')}"

    async def checked_form(request: Request) -> tuple[dict | None, HTMLResponse | None]:
        if not same_origin(request):
            return None, error(request, 403, "cross-origin form refused")
        fields = await form(request)
        if fields is None:
            return None, error(request, 400, "expected a small urlencoded form")
        if not auth.check_csrf(request.cookies.get(CSRF_COOKIE), fields.get("csrf")):
            return None, error(request, 403, "the form's CSRF token is missing or wrong: reload the page and try again")
        return fields, None

    def snapshot_or_error(request: Request):
        try:
            return data.snapshot(), None
        except StoreError as exc:
            return None, error(request, 503, str(exc))

    # --- pages ---------------------------------------------------------------------------------------
    def home(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        live = data.live_run()
        decisions = data.decisions_in_force()
        return render(request, "home.html", live=live, n_products=len(snap.products), n_decisions=len(decisions),
                      queue=data.queue(limit=10), runs=list(reversed(data.run_ids()))[:10], products=snap.products)

    def browse(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        return render(request, "browse.html", tax=snap.taxonomy, reviewed=data.reviewed_counts())

    def category(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        key = request.query_params.get("c", "")
        node = snap.taxonomy["by_key"].get(key)
        if node is None:
            return error(request, 404, "no such category")
        which = "predicted" if request.query_params.get("which") == "predicted" else "asserted"
        page = _page(request)
        ids = snap.members.get(key, {}).get(which, [])
        shown = ids[page * PAGE:(page + 1) * PAGE]
        return render(request, "category.html", node=node, tax=snap.taxonomy, which=which, ids=shown, total=len(ids), page=page,
                      pages=(len(ids) + PAGE - 1) // PAGE, products=snap.products)

    def search(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        q = request.query_params.get("q", "")[:200]
        return render(request, "search.html", q=q, ids=snap.search(q), products=snap.products)

    def product(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        pid = request.query_params.get("id", "")
        info = snap.products.get(pid)
        if info is None:
            return error(request, 404, "no such product in the live graph")
        decisions = [d for d in data.decisions.all() if d.product_id == pid]
        return render(request, "product.html", pid=pid, info=info, facts=snap.facts(info["iri"]), predictions=snap.predictions(info["iri"]),
                      decisions=list(reversed(decisions)), history=data.history(pid), concepts=_concept_choices(snap))

    def run_page(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        run_id = request.query_params.get("id")
        ids = data.run_ids()
        if run_id is None:
            live = data.live_run()
            run_id = live.run_id if live else (ids[-1] if ids else None)
        if run_id not in ids:
            return error(request, 404, "no such run folder")
        from prodkg.app.reports import run_report

        report = run_report(data, run_id)
        return render(request, "run.html", r=report, runs=list(reversed(ids)), products=snap.products)

    def review(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        skip = request.query_params.get("skip")
        queue = [item for item in data.queue(limit=21) if item["product_id"] != skip][:20]
        current = queue[0] if queue else None
        return render(request, "review.html", queue=queue, current=current, info=snap.products.get(current["product_id"]) if current else None,
                      concepts=_concept_choices(snap), n_decisions=len(data.decisions_in_force()), message=request.query_params.get("m"))

    async def decide(request: Request) -> Response:
        if not auth.writable:
            return error(request, 403, "this app is read-only")
        reviewer = auth.reviewer(request.cookies.get(SESSION_COOKIE))
        if reviewer is None:
            return error(request, 401, "sign in to record decisions")
        fields, err = await checked_form(request)
        if err:
            return err
        return await run_in_threadpool(record_decision, request, fields, reviewer)

    def record_decision(request: Request, fields: dict, reviewer: str) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        pid = fields.get("product_id", "")
        if pid not in snap.products:
            return error(request, 404, "no such product in the live graph")
        verdict = fields.get("verdict", "")
        live = data.live_run()
        predicted = conf = None
        if live is not None and pid in live.categories.index:
            predicted, conf = live.categories.loc[pid, "value"], float(live.categories.loc[pid, "confidence"])
        category_key = predicted if verdict == "accept" else fields.get("category", "").strip() or None
        if verdict == "relabel" and category_key not in snap.taxonomy["by_key"]:
            return error(request, 400, "pick a category of the taxonomy")
        if verdict == "accept" and category_key is None:
            return error(request, 400, "there is no prediction to accept")
        try:
            decision = Decision.make(pid, verdict, category_key, reviewer, predicted=predicted, confidence=conf,
                                     run_id=live.run_id if live else None, catalog=snap.catalog)
        except ConfigError as exc:
            return error(request, 400, str(exc))
        from prodkg.app.publish import publish_curation

        with write_lock:  # two reviewers at once: one append and one curation graph at a time
            data.decisions.append(decision)
            publish_curation(data)
        target = fields.get("next", "/review")
        if not target.startswith("/") or target.startswith("//"):
            target = "/review"
        return RedirectResponse(target, status_code=303)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return render(request, "login.html", failed=False)
        if not auth.writable:
            return error(request, 403, "this app is read-only")
        fields, err = await checked_form(request)
        if err:
            return err
        who = auth.check_token(fields.get("token", ""), fields.get("name", ""))
        if who is None:
            await asyncio.sleep(0.2)  # a little friction against guessing, without holding up other requests
            return render(request, "login.html", status=401, failed=True)
        response = RedirectResponse("/review", status_code=303)
        response.set_cookie(SESSION_COOKIE, auth.session_cookie(who), max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request) -> Response:
        fields, err = await checked_form(request)
        if err:
            return err
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def thumb(request: Request) -> Response:
        snap, err = snapshot_or_error(request)
        if err:
            return err
        pid = request.query_params.get("id", "")
        try:
            size = max(32, min(512, int(request.query_params.get("s", "160"))))
        except ValueError:
            size = 160
        info = snap.products.get(pid)
        image = info and info.get("image")
        key = (pid, size)
        with thumbs_lock:
            cached = thumbs.get(key)
        if cached is None:
            if not image or "://" in image and not image.startswith("file://"):
                return Response(status_code=404)
            cached = _thumbnail(image, size)
            if cached is None:
                return Response(status_code=404)
            with thumbs_lock:
                thumbs[key] = cached
                while len(thumbs) > 4096:
                    thumbs.popitem(last=False)
        return Response(cached, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", home), Route("/browse", browse), Route("/category", category), Route("/search", search), Route("/product", product),
        Route("/run", run_page), Route("/review", review), Route("/review/decide", decide, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]), Route("/logout", logout, methods=["POST"]), Route("/thumb", thumb),
        Route("/healthz", healthz), Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    allowed = {*LOOPBACK_NAMES, *(h.lower() for h in allowed_hosts)}
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, allowed_hosts=allowed)])
    app.state.data = data
    if warm:
        threading.Thread(target=_warm, args=(data,), daemon=True).start()
    return app


def _warm(data: AppData) -> None:
    try:
        data.warm()
    except Exception:  # noqa: BLE001 - the pages say what is wrong when they are asked
        pass


def _page(request: Request) -> int:
    try:
        return max(0, int(request.query_params.get("page", "0")))
    except ValueError:
        return 0


def _concept_choices(snap) -> list[dict]:
    nodes = snap.taxonomy["nodes"].values()
    return sorted(({"key": n["key"], "label": n["label"], "level": n["level"]} for n in nodes), key=lambda n: n["label"].casefold())


def _thumbnail(image: str | Path, size: int, limits=None) -> bytes | None:
    """A JPEG thumbnail of a catalog photo (a path or ``file:`` URL), read within the image limits of a run (a
    regular file, bytes read, pixels announced by the header, checked before decoding); ``None`` for an image
    that is not an image file, refused or unreadable."""
    from PIL import Image

    from prodkg.extractors.sources import DEFAULT_LIMITS, check_pixels, file_url_path, read_image_bytes

    limits = limits or DEFAULT_LIMITS
    try:
        path = file_url_path(image) if str(image).startswith("file:") else str(image)
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            return None
        with Image.open(io.BytesIO(read_image_bytes(path, limits))) as img:
            check_pixels(img.size, limits)
            img.draft("RGB", (size, size))  # JPEG: decode at the nearest scale at or above the thumbnail's
            rgb = img.convert("RGB")
        rgb.thumbnail((size, size))
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=82)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - a refused or unreadable image is shown as none
        return None


def serve(out: str | Path, *, host: str = "127.0.0.1", port: int = 8765, auth: Auth | None = None, allowed_hosts: tuple[str, ...] = ()) -> None:
    import uvicorn

    app = create_app(out, auth=auth, allowed_hosts=(*allowed_hosts, host))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
