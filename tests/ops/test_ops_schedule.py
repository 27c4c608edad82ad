"""The nightly deployment: `prodkg schedule` serves it against a real Prefect server on loopback; a triggered run completes."""

from __future__ import annotations

import json
import urllib.error

import pytest
from ops_support import PYTHON, base_env, http_json, start, stop, wait_for

from prodkg.flows.cli import main

SERVE_TIMEOUT_S = 180
RUN_TIMEOUT_S = 400
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _deployment(api: str, flow: str, name: str) -> dict | None:
    try:
        return http_json(f"{api}/deployments/name/{flow}/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # not registered yet
            return None
        raise
    except OSError:
        return None


def test_scheduled_deployment_completes_a_triggered_run(prefect_server, small_catalog, shared_cache, tmp_path):
    api, home = prefect_server
    out = tmp_path / "nightly"
    log = tmp_path / "serve.log"
    serve = start([PYTHON, "-m", "prodkg.flows.cli", "schedule", "--cron", "0 2 * * *", "--name", "nightly-test", "--catalog", str(small_catalog),
                   "--source", "webshop", "--target", "supplier", "--epochs", "3", "--out", str(out), "--cache-dir", str(shared_cache)],
                  base_env(home, api), log)
    try:
        deployment = wait_for(lambda: _deployment(api, "prodkg", "nightly-test"), SERVE_TIMEOUT_S, "deployment registered", serve, log)
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["active"]
        assert deployment["parameters"]["config"]["out"] == str(out)
        assert deployment["parameters"]["config"]["catalog"] == str(small_catalog)

        # what `prefect deployment run prodkg/nightly-test` does
        run = http_json(f"{api}/deployments/{deployment['id']}/create_flow_run", {})

        def final_state():
            state = http_json(f"{api}/flow_runs/{run['id']}")["state"]["type"]
            return state if state in FINAL else None

        assert wait_for(final_state, RUN_TIMEOUT_S, "flow run finished", serve, log, every_s=2) == "COMPLETED", log.read_text(errors="replace")[-4000:]
    finally:
        stop(serve)

    (run_dir,) = (out / "runs").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["orchestrator"] == "prefect" and manifest["counts"]["products"] == 18
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
    assert "extract text (minilm): 18/18 items (100 %)" in messages
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
