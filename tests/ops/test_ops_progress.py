"""Progress of long stages: log lines every 10 %, a bar only on a terminal, and --quiet silences both."""

from __future__ import annotations

import logging

import pytest

import prodkg.progress as progress
from prodkg.flows.config import load_config
from prodkg.progress import Progress
from prodkg.errors import ConfigError


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logger():
    log = logging.getLogger("test_ops_progress")
    log.setLevel(logging.INFO)
    handler = _Lines()
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)


def test_a_line_per_crossed_tenth_and_one_at_the_end(logger):
    log, handler = logger
    with Progress(25, "extract text", logger=log) as bar:
        for _ in range(6):
            bar.update(4)
        bar.update(1)
    # 4/25 = 16 % crosses 10 %; 8 → 32 % crosses 20 and 30 % (one line); ... 25 → 100 %
    assert handler.lines == [
        "extract text: 4/25 items (16 %)",
        "extract text: 8/25 items (32 %)",
        "extract text: 12/25 items (48 %)",
        "extract text: 16/25 items (64 %)",
        "extract text: 20/25 items (80 %)",
        "extract text: 24/25 items (96 %)",
        "extract text: 25/25 items (100 %)",
    ]
    assert bar.lines == handler.lines


def test_one_big_step_logs_once(logger):
    log, handler = logger
    with Progress(1000, "extract image", logger=log) as bar:
        bar.update(1000)
    assert handler.lines == ["extract image: 1000/1000 items (100 %)"]


def test_quiet_logs_nothing_and_draws_nothing(logger, monkeypatch, capsys):
    log, handler = logger
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    with Progress(10, "extract text", enabled=False, logger=log) as bar:
        bar.update(10)
    assert handler.lines == [] and bar.lines == []
    assert capsys.readouterr().err == ""


def test_bar_on_a_terminal_only(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    with Progress(8, "extract minilm") as bar:
        bar.update(8)
    assert "extract minilm" in capsys.readouterr().err
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with Progress(8, "extract minilm") as bar:
        bar.update(8)
    # off a terminal: no redrawn bar, but plain timed lines (the last one at the end)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1 and "extract minilm: 8/8 items (100 %" in err


def test_no_prefect_run_means_no_run_logger():
    assert progress.run_logger() is None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="total"):
        Progress(-1, "x")
    with pytest.raises(ValueError, match="every"):
        Progress(1, "x", every=0)


def test_scale_out_options_are_validated(sample_catalog):
    base = {"catalog": str(sample_catalog), "source": ["webshop"], "target": ["supplier"]}
    assert load_config(**base, workers=2).workers == 2
    with pytest.raises(ConfigError, match="use_prefect"):
        load_config(**base, workers=2, use_prefect=False)
    with pytest.raises(ConfigError, match="not both"):
        load_config(**base, workers=2, dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="workers"):
        load_config(**base, workers=-1)
    # where extraction runs does not change results, so it does not change the config hash
    assert load_config(**base, workers=3).fingerprint() == load_config(**base).fingerprint()
