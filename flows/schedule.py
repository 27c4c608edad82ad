"""Nightly scheduling: the pipeline served as a Prefect deployment on a cron schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.errors import ConfigError

FLOW_NAME = "prodkg"
DEFAULT_DEPLOYMENT = "nightly"
SUMMARY_KEYS = ("run_id", "run_dir", "store", "counts", "metrics", "durations", "changes", "report")
# config keys that name local files: made absolute when scheduling, since the served runs may start elsewhere
PATH_KEYS = ("catalog", "data_home", "taxonomy", "out", "cache_dir")


@flow(name=FLOW_NAME, validate_parameters=True)
def scheduled_pipeline(config: dict[str, Any] | None = None, config_file: str | None = None) -> dict:
    """One scheduled run: the config file's ``[run]`` table overridden by ``config``, then the nightly flow as a subflow.

    The subflow picks its own task runner from the config (Dask for ``workers`` / ``dask_address``),
    so one served deployment can run on one core or a cluster. No retries here: the I/O stages inside
    carry their own, and model code is never retried.
    """
    cfg = load_config(config_file, **(config or {}))
    summary = run_pipeline(cfg)
    return {k: summary.get(k) for k in SUMMARY_KEYS}


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with local file paths made absolute (URLs and missing keys left as they are)."""
    out = dict(config)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value and "://" not in value:
            out[key] = str(Path(value).expanduser().resolve())
    return out


def api_url() -> str:
    """The Prefect API this process talks to; ConfigError when none is configured (serving needs a server)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError("no Prefect server configured: start one with `prefect server start` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (or `prefect config set PREFECT_API_URL=...`)")
    return str(url)


def nightly_schedule(cron: str, timezone: str | None = None):
    """A Prefect cron schedule; ConfigError for an invalid expression or time zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.schedules import Cron

    try:
        if timezone:
            ZoneInfo(timezone)  # Cron itself accepts any string here and fails only when the server computes a run time
        return Cron(cron, timezone=timezone)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ConfigError(f"cron must be an expression such as '0 2 * * *' (02:00 every night) with a valid time zone; "
                          f"got {cron!r} (timezone {timezone!r}): {exc}") from exc


def serve_nightly(cron: str, *, config: dict[str, Any] | None = None, config_file: str | None = None, name: str = DEFAULT_DEPLOYMENT,
                  timezone: str | None = None) -> None:
    """Register the deployment ``prodkg/<name>`` with the Prefect server and run its flow runs until stopped.

    The config is checked here, before anything is registered, so a typo fails now and not at 02:00.
    At most one run executes at a time: two nightly runs writing the same output folder would contend.

    Args:
        cron: when to run, e.g. ``"0 2 * * *"``.
        config: RunConfig keys overriding the config file (paths are made absolute).
        config_file: a TOML file with a ``[run]`` table, read again at every run.
        name: deployment name.
        timezone: IANA name the cron is read in (default: the server's, UTC).
    """
    schedule = nightly_schedule(cron, timezone)
    config = absolute_paths(config or {})
    config_file = str(Path(config_file).resolve()) if config_file else None
    load_config(config_file, **config)
    url = api_url()
    print(f"serving deployment {FLOW_NAME}/{name} on {url} (cron '{cron}'); trigger a run now with: "
          f"prefect deployment run '{FLOW_NAME}/{name}'", flush=True)
    from prefect.deployments.runner import EntrypointType

    # by module path: the flow-run processes it spawns import flows.schedule, wherever they start
    scheduled_pipeline.serve(name=name, schedule=schedule, parameters={"config": config, "config_file": config_file}, limit=1,
                             print_starting_message=False, entrypoint_type=EntrypointType.MODULE_PATH)
