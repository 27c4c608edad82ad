"""The nightly deployment: `prodkg schedule` serves it against a real Prefect server on loopback; a triggered run completes."""

from __future__ import annotations

import json
import urllib.error
from datetime import datetime

import pytest
from ops_support import (
    PYTHON,
    TRANSIENT_HTTP_CODES,
    base_env,
    http_json,
    start,
    stop,
    trigger_deployment_run,
    wait_for,
)

from prodkg.flows.cli import main

SERVE_TIMEOUT_S = 180
RUN_TIMEOUT_S = 400
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _deployment(api: str, flow: str, name: str) -> dict | None:
    try:
        return http_json(f"{api}/deployments/name/{flow}/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404 or exc.code in TRANSIENT_HTTP_CODES:  # not registered yet, or a server still busy after retries
            return None
        raise
    except OSError:
        return None


@pytest.mark.slow
def test_scheduled_deployment_completes_a_triggered_run(prefect_server, small_catalog, shared_cache, tmp_path):
    api, home = prefect_server
    out = tmp_path / "nightly"
    log = tmp_path / "serve.log"
    serve = start([PYTHON, "-m", "prodkg.flows.cli", "schedule", "--cron", "0 2 * * *", "--name", "nightly-test", "--catalog", str(small_catalog),
                   "--source", "webshop", "--target", "supplier", "--epochs", "3", "--shard-size", "6", "--out", str(out), "--cache-dir", str(shared_cache)],
                  base_env(home, api), log)
    try:
        deployment = wait_for(lambda: _deployment(api, "prodkg", "nightly-test"), SERVE_TIMEOUT_S, "deployment registered", serve, log)
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["active"]
        assert deployment["parameters"]["config"]["out"] == str(out)
        assert deployment["parameters"]["config"]["catalog"] == str(small_catalog)
        # typed parameters: the deployment's schema is the RunConfig model, not an untyped dict
        schema = deployment["parameter_openapi_schema"]
        config_schema = schema["definitions"]["RunConfig"] if "definitions" in schema else schema["$defs"]["RunConfig"]
        assert {"catalog", "eval_labels", "catalog_name", "threshold"} <= set(config_schema["properties"])

        # what `prefect deployment run prodkg/nightly-test` does; on a loaded machine the server may answer 503
        run = trigger_deployment_run(api, deployment["id"])

        def final_state():
            try:
                state = http_json(f"{api}/flow_runs/{run['id']}")["state"]["type"]
            except urllib.error.HTTPError as exc:
                if exc.code in TRANSIENT_HTTP_CODES:  # busy even after retries: ask again at the next poll
                    return None
                raise
            return state if state in FINAL else None

        assert wait_for(final_state, RUN_TIMEOUT_S, "flow run finished", serve, log, every_s=2) == "COMPLETED", log.read_text(errors="replace")[-4000:]
    finally:
        stop(serve)

    # one flow run per scheduled run: the deployment runs the nightly flow itself, no wrapper around a subflow
    # (the session's Prefect server also holds other tests' runs: look at this run's children, not at the whole list)
    flow_runs = http_json(f"{api}/flow_runs/filter", {"limit": 200})
    own_task_runs = {tr["id"] for tr in http_json(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})}
    assert run["id"] in [fr["id"] for fr in flow_runs]
    assert [fr["id"] for fr in flow_runs if fr.get("parent_task_run_id") in own_task_runs] == []  # no subflow under it
    # Prefect's thread runner runs the extraction shards (18 products, 6 a shard) one after another, each a task run of
    # its own: side by side they would each hold a batch of activations on the same cores
    own = http_json(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    for modality in ("image", "text"):
        spans = sorted((datetime.fromisoformat(tr["start_time"]), datetime.fromisoformat(tr["end_time"]))
                       for tr in own if tr["name"].startswith(f"extract-{modality}"))
        assert len(spans) == 3, spans
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    # the summary and the metrics are artifacts of that flow run
    artifacts = {a["key"]: a for a in http_json(f"{api}/artifacts/filter", {"limit": 50}) if a.get("flow_run_id") == run["id"]}
    assert artifacts["prodkg-summary"]["type"] == "markdown" and "prodkg run" in artifacts["prodkg-summary"]["data"]
    assert artifacts["prodkg-metrics"]["type"] == "table"

    (run_dir,) = (out / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["orchestrator"] == "prefect" and manifest["counts"]["products"] == 18
    assert manifest["features"]["text"]["shards"] == manifest["features"]["image"]["shards"] == 3
    assert (run_dir / "report.html").is_file() and not manifest["report"].get("error")

    # retries with back-off on the I/O tasks only; model code (extraction, adaptation) is never retried
    task_runs = http_json(f"{api}/task_runs/filter", {"limit": 100})
    policies = {tr["name"].rsplit("-", 1)[0]: tr["empirical_policy"] for tr in task_runs}
    assert policies["ingest"]["retries"] == 2 and policies["graph"]["retries"] == 2
    assert policies["ingest"]["retry_delay"] == [1, 5]
    for name in ("extract-image", "extract-text", "adapt-predict"):
        assert not policies[name]["retries"], name

    # progress lines of the long stages reach the server's run logs
    messages = [entry["message"] for entry in http_json(f"{api}/logs/filter", {"limit": 200})]
    assert "extract text (minilm): 6/6 items (100 %)" in messages  # a line per shard of 6
    assert any(m.startswith("adapt-predict: fitted the category head") for m in messages)


@pytest.mark.parametrize(("argv", "message"), [
    (["--cron", "every night"], "cron must be an expression"),
    (["--cron", "0 2 * * *", "--timezone", "Mars/Olympus"], "time zone"),
    (["--cron", "0 2 * * *", "--target", "webshop"], "both source and target"),
])
def test_a_bad_schedule_fails_before_anything_is_registered(argv, message, sample_catalog, monkeypatch, capsys):
    # cmd_schedule only sets these when absent; pin them so this process's Prefect settings stay as they were
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    defaults = ["--catalog", str(sample_catalog), "--source", "webshop", "--target", "supplier"]
    rc = main(["schedule", *defaults, *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def flaky_server():
    """A loopback HTTP server answering each path's scripted status codes in turn (then 200 with a JSON body)."""
    import http.server
    import threading

    script: dict[str, list[int]] = {}
    seen: list[tuple[str, str]] = []
    bodies: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            codes = script.get(self.path, [])
            code = codes.pop(0) if codes else 200
            if code != 200:
                answer = {"detail": "busy"}
            elif self.path.endswith("/health"):
                answer = True
            else:
                answer = {"path": self.path, "body": body.decode()}
            bodies.append(body.decode())
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script, seen, bodies
    finally:
        server.shutdown()
        server.server_close()


def test_http_json_retries_transient_errors_a_bounded_number_of_times(flaky_server):
    base, script, seen, _ = flaky_server
    script["/busy"] = [503, 503, 502]
    assert http_json(f"{base}/busy", {"x": 1}, backoff_s=0.01) == {"path": "/busy", "body": '{"x": 1}'}
    assert seen == [("POST", "/busy")] * 4
    script["/down"] = [503] * 10
    with pytest.raises(urllib.error.HTTPError) as info:
        http_json(f"{base}/down", attempts=3, backoff_s=0.01)
    assert info.value.code == 503 and seen.count(("GET", "/down")) == 3
    script["/missing"] = [404]
    with pytest.raises(urllib.error.HTTPError) as info:
        http_json(f"{base}/missing", backoff_s=0.01)
    assert info.value.code == 404 and seen.count(("GET", "/missing")) == 1  # not transient: no retry


def test_triggering_a_run_waits_for_health_and_retries_with_one_idempotency_key(flaky_server):
    base, script, seen, bodies = flaky_server
    script["/api/health"] = [503, 503]  # still starting: two busy answers, then healthy
    script["/api/deployments/dep-1/create_flow_run"] = [503, 503]
    run = trigger_deployment_run(f"{base}/api", "dep-1", ready_timeout_s=30, poll_s=0.01, backoff_s=0.01)
    posts = [i for i, call in enumerate(seen) if call == ("POST", "/api/deployments/dep-1/create_flow_run")]
    assert len(posts) == 3 and max(i for i, call in enumerate(seen) if call[1] == "/api/health") < posts[0]
    keys = {json.loads(bodies[i])["idempotency_key"] for i in posts}
    assert len(keys) == 1 and json.loads(run["body"])["idempotency_key"] in keys
    # a server that never becomes healthy fails the wait, bounded, and nothing is posted
    script["/api/health"] = [503] * 1000
    with pytest.raises(pytest.fail.Exception, match="ready before triggering"):
        trigger_deployment_run(f"{base}/api", "dep-2", ready_timeout_s=0.5, poll_s=0.01)
    assert ("POST", "/api/deployments/dep-2/create_flow_run") not in seen
