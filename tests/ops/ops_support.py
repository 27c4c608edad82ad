"""Helpers of the operations tests: child processes in their own process group, HTTP polling with a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SERVER_START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(prefect_home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of a child process: offline, no telemetry, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so it and every child it spawns can be stopped by that id)."""
    fh = open(log, "wb")  # noqa: SIM115 - the child writes to it for its whole life; closed in stop()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    proc._log_handle = fh  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group this test started, SIGKILL it if it outlives ``grace_s``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
        except ProcessLookupError:
            pass
    # children of the group may outlive its leader
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc._log_handle.close()  # type: ignore[attr-defined]


#: Answers of a loaded or still-starting server that a retry may outlive (Prefect's own client retries the same).
TRANSIENT_HTTP_CODES = frozenset({429, 502, 503, 504})


def http_json(url: str, body: dict | None = None, timeout: float = 10.0, *, attempts: int = 6, backoff_s: float = 0.5):
    """GET (or POST ``body``) JSON; retries transient failures with bounded exponential back-off.

    Transient: HTTP 429/502/503/504, a refused or reset connection, a timeout. A loaded machine makes the local
    server answer 503 now and then; ``attempts`` tries, waiting ``backoff_s`` doubled after each (0.5 + 1 + 2 + 4
    + 8 s = 15.5 s at most by default), then the last error is raised. Other HTTP errors (404, 422) raise at once.
    Only send a non-idempotent POST through here with an idempotency key in its body.
    """
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code not in TRANSIENT_HTTP_CODES or attempt == attempts - 1:
                raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == attempts - 1:
                raise
        time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def server_healthy(api: str) -> bool:
    """One look at the Prefect server's health endpoint (no retries): True once it answers ``true``."""
    try:
        return http_json(f"{api}/health", timeout=2, attempts=1) is True
    except (OSError, ValueError):
        return False


def trigger_deployment_run(api: str, deployment_id: str, ready_timeout_s: float = 60.0, *, poll_s: float = 0.5,
                           backoff_s: float = 0.5) -> dict:
    """What `prefect deployment run` does, robust to a loaded server: wait until its health endpoint answers
    (bounded), then create the flow run, retrying transient errors. The idempotency key makes a retried POST
    whose first attempt did reach the server return that run instead of creating a second one."""
    wait_for(lambda: server_healthy(api), ready_timeout_s, "prefect server ready before triggering a run", every_s=poll_s)
    key = f"test-trigger-{deployment_id}-{uuid.uuid4()}"
    return http_json(f"{api}/deployments/{deployment_id}/create_flow_run", {"idempotency_key": key}, backoff_s=backoff_s)


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None, every_s: float = 1.0):
    """Poll ``predicate`` until it returns a truthy value; fail with the child's log when it times out or dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{log.read_text(errors='replace')[-4000:] if log else ''}")
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s\n{log.read_text(errors='replace')[-4000:] if log else ''}")
