"""A fixed number of query worker processes, each with a hard deadline, following the published store.

The server hands each query to an idle worker and waits on its pipe (in a thread, never in the
request loop). A worker whose query passes its deadline is killed (SIGKILL: its CPU use stops at
once) and replaced; one whose query has used :data:`DEPRIORITISE_AFTER_S` of CPU is reniced so
short queries keep the CPU, and replaced after it answers. At most ``size`` queries run at a time and
at most ``max_waiting`` wait for a worker; past that a query is refused with 503 at once.

Workers are forked from a small server process (multiprocessing's ``forkserver``) that imported
the worker module once, so a replacement costs a fork and the opening of the store, not an
interpreter start.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
import time
from typing import Any

from prodkg.errors import QueryError, StoreError

__all__ = ["DEPRIORITISE_AFTER_S", "QueryFailed", "WorkerPool"]

log = logging.getLogger("prodkg.kb.sparql")

#: a query that has used this many CPU seconds is given the lowest CPU priority (CPU time, not wall
#: time: on a busy machine a normal query waits longer for the CPU but uses no more of it)
DEPRIORITISE_AFTER_S = 0.5
#: how often a running query's deadline and CPU use are looked at (its answer wakes the wait at once)
_POLL_S = 0.1
try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _CLOCK_TICKS = 100
#: seconds a new worker may take to open the store
START_TIMEOUT_S = 60.0

_SIGNALS = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 7: "SIGBUS", 14: "SIGALRM"}


class QueryFailed(QueryError):
    """A query answered with an HTTP error status (timeout, memory, crash, busy)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


WORKER_NAME = "prodkg-sparql-worker"


def _without_main(get_preparation_data: Any) -> Any:
    def prepare(name: str) -> dict[str, Any]:
        data = get_preparation_data(name)
        if name == WORKER_NAME:
            # a worker needs the worker module only: re-running the server's __main__ in each
            # one (a script, a test runner) would cost time and could have side effects
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    prepare._prodkg_worker = True  # type: ignore[attr-defined]
    return prepare


def _context() -> Any:
    from multiprocessing import spawn

    if not getattr(spawn.get_preparation_data, "_prodkg_worker", False):
        spawn.get_preparation_data = _without_main(spawn.get_preparation_data)
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without fork
        return mp.get_context("spawn")
    # imported once in the fork server: a new worker starts in milliseconds, not in the second
    # an import of rdflib, pandas and pyoxigraph takes
    ctx.set_forkserver_preload(["prodkg.kb.sparql.worker"])
    return ctx


class Worker:
    """One worker process and the pipe to it."""

    def __init__(self, ctx: Any, path: str, generation: int, *, writable: bool, memory_mb: int) -> None:
        from prodkg.kb.sparql.worker import worker_main

        self.path, self.generation, self.writable = path, generation, writable
        self.reusable = True
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, path, writable, memory_mb), daemon=True,
                                   name=WORKER_NAME)
        self.process.start()
        child.close()
        self.conn = parent
        self.memory_mb = memory_mb

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        try:
            ready = self.conn.poll(timeout)
            message = self.conn.recv() if ready else None
        except (EOFError, OSError):
            message = None
        if not message or message.get("status") != 0:
            self.kill()
            why = message.get("message") if message else "it did not start"
            raise StoreError(f"a query worker for {self.path} failed: {why}")

    def call(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run one job; kill the worker when it passes ``timeout``."""
        started = time.monotonic()
        try:
            self.conn.send({**job, "timeout_s": timeout})
            cpu_at_start = self._cpu_s()
            while not self.conn.poll(min(_POLL_S, max(timeout - (time.monotonic() - started), 0))):
                if time.monotonic() - started >= timeout:
                    self.kill()
                    raise QueryFailed(504, f"query timed out after {timeout:g} s and was stopped")
                if self.reusable and self._cpu_s() - cpu_at_start > DEPRIORITISE_AFTER_S:
                    self._deprioritise()
            return self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise self._crash() from None

    def _crash(self) -> QueryFailed:
        code = self.process.exitcode
        if code is not None and code < 0:
            name = _SIGNALS.get(-code, f"signal {-code}")
            if -code in (6, 9):  # an allocation past RLIMIT_AS aborts; the kernel's OOM killer sends SIGKILL
                return QueryFailed(507, f"the query was stopped ({name}): it needed more than the memory cap "
                                        f"({self.memory_mb} MiB)")
            return QueryFailed(500, f"the query crashed its worker ({name}); the server is unaffected")
        return QueryFailed(500, f"the query worker ended unexpectedly (exit status {code})")

    def _cpu_s(self) -> float:
        """CPU seconds the worker has used (user + system), from /proc; 0 where there is none."""
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (OSError, ValueError, IndexError):
            return 0.0

    def _deprioritise(self) -> None:
        self.reusable = False  # a process cannot lower its niceness again: this worker retires after the query
        with contextlib.suppress(OSError, AttributeError, TypeError):
            os.setpriority(os.PRIO_PROCESS, self.process.pid, 19)

    def kill(self) -> None:
        self.reusable = False
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if self.process.is_alive():
                self.process.kill()
        with contextlib.suppress(OSError, ValueError, AssertionError):
            self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def stop(self) -> None:
        """Let the worker end by itself (its store closed cleanly), killing it if it lingers."""
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(OSError, ValueError, AssertionError):
            self.process.join(timeout=10)
        self.kill()


class WorkerPool:
    """``size`` read-only workers over the store at ``path``; :meth:`switch` moves them to a new store."""

    def __init__(self, path: str, *, size: int, max_waiting: int, queue_wait_s: float, memory_mb: int) -> None:
        self._ctx = _context()
        self.size, self.max_waiting, self.queue_wait_s, self.memory_mb = size, max_waiting, queue_wait_s, memory_mb
        self.path, self.generation = path, 0
        self._cond = threading.Condition()
        self._idle: list[Worker] = []
        self._running: set[Worker] = set()
        self._busy = self._starting = self._waiting = 0
        self._exclusive = self._closed = False
        self.started_workers = 0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every worker and wait until each has opened the store (raises StoreError otherwise)."""
        workers = [self._new_worker(self.path, self.generation) for _ in range(self.size)]
        try:
            for worker in workers:
                worker.wait_ready()
        except StoreError:
            for worker in workers:
                worker.kill()
            raise
        with self._cond:
            self._idle.extend(workers)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            victims, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in victims:
            worker.kill()

    def _new_worker(self, path: str, generation: int, *, writable: bool = False) -> Worker:
        self.started_workers += 1
        return Worker(self._ctx, path, generation, writable=writable, memory_mb=self.memory_mb)

    def _spawn(self, path: str, generation: int) -> None:
        worker: Worker | None = None
        try:
            worker = self._new_worker(path, generation)
            worker.wait_ready()
        except Exception as exc:  # noqa: BLE001 - a worker that cannot start is logged and retried
            log.warning("query worker failed to start: %s", exc)
            worker = None
            time.sleep(1.0)
        with self._cond:
            self._starting -= 1
            if worker is not None and generation == self.generation and not (self._closed or self._exclusive):
                self._idle.append(worker)
                worker = None
            self._cond.notify_all()
        if worker is not None:
            worker.kill()
        self._replenish()

    def _replenish(self) -> None:
        with self._cond:
            if self._closed or self._exclusive:
                return
            need = self.size - (len(self._idle) + self._busy + self._starting)
            self._starting += max(need, 0)
            path, generation = self.path, self.generation
        for _ in range(max(need, 0)):
            threading.Thread(target=self._spawn, args=(path, generation), name="sparql-spawn", daemon=True).start()

    def switch(self, path: str) -> bool:
        """Serve ``path`` from now on: idle workers are replaced at once, busy ones after their query."""
        with self._cond:
            if path == self.path or self._closed:
                return False
            self.path = path
            self.generation += 1
            victims, self._idle = self._idle, []
        for worker in victims:
            worker.kill()
        self._replenish()
        return True

    # -- work ------------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"workers": self.size, "idle": len(self._idle), "busy": self._busy, "starting": self._starting,
                    "waiting": self._waiting, "started_workers": self.started_workers,
                    "pids": sorted(w.process.pid for w in [*self._idle, *self._running] if w.process.pid)}

    def _busy_error(self) -> QueryFailed:
        return QueryFailed(503, f"all {self.size} query slots are busy; retry later", {"Retry-After": "1"})

    def run(self, job: dict[str, Any], timeout: float) -> tuple[dict[str, Any], str]:
        """Run ``job`` on a worker of the current store; returns the reply and the store that answered."""
        with self._cond:
            if self._closed:
                raise QueryFailed(503, "the endpoint is shutting down")
            if self._busy + self._waiting >= self.size + self.max_waiting:
                raise self._busy_error()
            self._waiting += 1
            try:
                if not self._cond.wait_for(lambda: self._closed or (self._idle and not self._exclusive), self.queue_wait_s):
                    raise self._busy_error()
                if self._closed:
                    raise QueryFailed(503, "the endpoint is shutting down")
                worker = self._idle.pop()
                self._running.add(worker)
                self._busy += 1
            finally:
                self._waiting -= 1
        try:
            reply = worker.call(job, timeout)
            if reply.get("status", 500) >= 500:
                worker.reusable = False  # after a failure inside the engine, start afresh
            return reply, worker.path
        finally:
            with self._cond:
                self._busy -= 1
                self._running.discard(worker)
                keep = worker.reusable and worker.generation == self.generation and not (self._closed or self._exclusive)
                if keep:
                    self._idle.append(worker)
                self._cond.notify_all()
            if not keep:
                worker.kill()
                self._replenish()

    def run_exclusive(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run ``job`` (an update) in a read-write worker while no read-only worker has the store open."""
        with self._cond:
            if self._closed:
                raise QueryFailed(503, "the endpoint is shutting down")
            if self._exclusive:
                raise QueryFailed(503, "another update is running; retry later", {"Retry-After": "1"})
            self._exclusive = True
            self.generation += 1  # workers starting now are for the store as it was: they are dropped
            victims, self._idle = self._idle, []
        try:
            for worker in victims:
                worker.kill()
            with self._cond:  # queries running now end by their deadline at the latest
                if not self._cond.wait_for(lambda: self._busy == 0 and self._starting == 0, timeout + START_TIMEOUT_S):
                    raise QueryFailed(503, "queries kept the store busy; retry the update later", {"Retry-After": "1"})
            writer = self._new_worker(self.path, self.generation, writable=True)
            writer.wait_ready()
            try:
                return writer.call(job, timeout)
            finally:
                writer.stop()
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
            self._replenish()
