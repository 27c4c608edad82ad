"""Nightly scheduling: the pipeline served as a Prefect deployment on a cron schedule."""

# no `from __future__ import annotations`: Prefect builds the flow's parameter model from the real annotations
import time
from pathlib import Path
from typing import Any

from prefect import flow

from prodkg.errors import ConfigError
from prodkg.flows.config import RunConfig, build_config, load_config, read_config_file

FLOW_NAME = "prodkg"
DEFAULT_DEPLOYMENT = "nightly"
SUMMARY_KEYS = ("run_id", "run_dir", "store", "counts", "metrics", "durations", "changes", "report")
# config keys that name local files: made absolute when scheduling, since the served runs may start elsewhere
PATH_KEYS = ("catalog", "data_home", "taxonomy", "out", "cache_dir")


def resolve_config(config: RunConfig, config_file: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The run's configuration: ``config`` as it is, or, with ``config_file``, that file read again now with the
    ``overrides`` (the fields given on the command line) taken from ``config``; inputs checked either way."""
    if not config_file:
        config.check_inputs()
        return config
    values = read_config_file(config_file)
    values.update({key: getattr(config, key) for key in overrides or [] if key in RunConfig.model_fields})
    return build_config(values)


@flow(name=FLOW_NAME, validate_parameters=True)
def nightly(config: RunConfig, config_file: str | None = None, overrides: list[str] | None = None, run_id: str | None = None) -> dict:
    """One run of the pipeline, as one flow run: ingest → extract → adapt/predict → graph as its tasks.

    ``config`` is the typed run configuration (a deployment's parameters are its fields). With
    ``config_file`` the file is read again at every run and the fields named in ``overrides`` come
    from ``config``. The run's summary and metrics are published as artifacts of the flow run.
    Extraction on Dask (``workers`` / ``dask_address``) needs the Dask task runner, which a served
    deployment cannot choose per run: there, and only there, the stages run in a subflow that has it.
    """
    from prefect.context import FlowRunContext

    from prodkg.flows.artifacts import publish_artifacts
    from prodkg.flows.dask_runner import task_runner_for
    from prodkg.flows.guard import run_guard
    from prodkg.flows.pipeline import _record_total, _Runner, run_stages
    from prodkg.flows.rundir import new_run_id

    cfg = resolve_config(config, config_file, overrides)
    run_id = run_id or new_run_id()
    runner = task_runner_for(cfg)
    current = FlowRunContext.get()
    if runner is not None and current is not None and type(current.task_runner) is not type(runner):
        return nightly.with_options(task_runner=runner, flow_run_name=f"prodkg-{run_id}")(config=cfg, run_id=run_id)
    started = time.perf_counter()
    with run_guard(cfg, run_id):  # one run at a time per output folder, as for `prodkg run`
        summary = run_stages(cfg, run_id, _Runner(True))
    summary["total_seconds"] = round(time.perf_counter() - started, 3)
    _record_total(summary)
    publish_artifacts(summary)
    return summary


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
    cfg = load_config(config_file, **config)
    url = api_url()
    print(f"serving deployment {FLOW_NAME}/{name} on {url} (cron '{cron}'); trigger a run now with: "
          f"prefect deployment run '{FLOW_NAME}/{name}'", flush=True)
    from prefect.deployments.runner import EntrypointType

    # the deployment runs the nightly flow itself; its parameters are the typed RunConfig (the schema the UI shows)
    parameters = {"config": cfg.model_dump(mode="json"), "config_file": config_file, "overrides": sorted(config)}
    # by module path: the flow-run processes it spawns import flows.schedule, wherever they start
    nightly.serve(name=name, schedule=schedule, parameters=parameters, limit=1, print_starting_message=False,
                  entrypoint_type=EntrypointType.MODULE_PATH)
