"""Progress of long stages: a tqdm bar on a terminal, progress lines in the Prefect run log, nothing when quiet.

Off a terminal and outside a Prefect run (a cron job, a pipe, a log file) a long stage writes one plain line to
stderr every :data:`LINE_SECONDS` seconds, and the flow one line as each stage starts and ends, so a scheduled run is
never silent for minutes.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm.auto import tqdm

_log = logging.getLogger("prodkg.progress")

#: seconds between two progress lines on a stderr that is not a terminal
LINE_SECONDS = 5.0


def plain_lines() -> bool:
    """True when progress goes to stderr as plain lines: not a terminal (no bar) and not inside a Prefect run (its log)."""
    return not on_terminal() and run_logger() is None


def stage_line(message: str, *, enabled: bool = True) -> None:
    """One ``prodkg: ...`` line on stderr when :func:`plain_lines` holds (a stage started or ended)."""
    if enabled and plain_lines():
        _write_line(message)


def _write_line(message: str) -> None:
    try:
        print(f"prodkg: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed stderr
        pass


def on_terminal() -> bool:
    """True when stderr is a terminal: only there is a redrawn bar readable (in a log file it is noise)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def run_logger() -> logging.Logger | logging.LoggerAdapter | None:
    """The Prefect run logger when called inside a flow or task run, else None.

    Prefect is only looked up when it is already imported: a run without Prefect never pays for importing it.
    """
    if "prefect" not in sys.modules:
        return None
    from prefect import get_run_logger
    from prefect.context import FlowRunContext, TaskRunContext

    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return None
    return get_run_logger()


def warn(message: str) -> None:
    """A warning in the Prefect run log when inside a run, and in the ``prodkg`` log always."""
    _log.warning(message)
    logger = run_logger()
    if logger is not None:
        logger.warning(message)


class Progress:
    """Counts items done in one unit of work and shows it the way the context allows.

    On a terminal it draws a tqdm bar; inside a Prefect flow or task run it logs a line each time
    another ``every`` fraction of ``total`` is done (and at the end). With ``enabled=False``
    (``--quiet``) it shows nothing at all.

    Args:
        total: items this unit of work will process.
        desc: what is being done, e.g. ``"extract minilm"``.
        enabled: False silences both the bar and the log lines.
        every: fraction of ``total`` between two log lines.
        unit: name of one item, for the bar and the lines.
        logger: where the lines go (default: the Prefect run logger when inside a run, else nowhere).
    """

    def __init__(self, total: int, desc: str, *, enabled: bool = True, every: float = 0.1, unit: str = "item",
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        if not 0 < every <= 1:
            raise ValueError(f"every must be in (0, 1], got {every}")
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, every
        self.done = 0
        self.lines: list[str] = []  # what was logged, so callers and tests can see it
        self._logger = (logger or run_logger()) if enabled else None
        self._next_mark = every
        self._bar = tqdm(total=self.total, desc=desc, unit=unit, disable=not (enabled and on_terminal()))
        # neither a bar nor a run log: timed plain lines on stderr
        self._plain = enabled and self._logger is None and not on_terminal()
        self._started = self._last_line = time.monotonic()
        self._finished = False

    def update(self, n: int) -> None:
        self.done += int(n)
        self._bar.update(n)
        if self._plain:
            now = time.monotonic()
            finished = self.done >= self.total and not self._finished
            if now - self._last_line >= LINE_SECONDS or finished:
                self._last_line, self._finished = now, self._finished or finished
                line = f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done / max(self.total, 1):.0f} %, {now - self._started:.0f} s)"
                self.lines.append(line)
                _write_line(line)
            return
        if self._logger is None or not self.total:
            return
        fraction = self.done / self.total
        if fraction + 1e-12 >= self._next_mark:
            line = f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * min(fraction, 1.0):.0f} %)"
            self.lines.append(line)
            self._logger.info(line)
            # one line per crossed step, however many steps this update jumped
            while self._next_mark <= fraction + 1e-12:
                self._next_mark += self.every

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
