"""One run at a time per output folder: an OS lock on ``<out>/.lock`` plus a JSON record of its holder.

The lock is ``fcntl.flock`` on the file, so the kernel drops it the moment its holder dies, however it
dies (SIGKILL, OOM, power). The file also holds a one-line JSON record of the holder (run id, pid, host,
since when) for the message that refuses a second run. A record left by a dead run is a stale lock:
the next run takes the lock, says so, and cleans that run's leftovers. Should a lock still be held while
its recorded holder's pid is gone on this same host (a leftover child process that inherited the
descriptor), the file is replaced by a fresh one and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prodkg.errors import OutputBusyError, ResourceError
from prodkg.layout import RunLayout

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; runs are then not serialised
    fcntl = None



@dataclass(frozen=True)
class Holder:
    run_id: str
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"

    def alive(self) -> bool | None:
        """Whether the holder's process still exists; None when it ran on another host (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_holder(out: str | os.PathLike[str]) -> Holder | None:
    """The holder record in ``<out>/.lock`` (the current or the last holder), or None if absent or unreadable."""
    try:
        text = RunLayout(Path(out)).lock.read_text(encoding="utf-8").strip()
        rec = json.loads(text) if text else None
        return Holder(str(rec["run_id"]), int(rec["pid"]), str(rec["host"]), str(rec["since"])) if rec else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """The run lock of one output folder; use as a context manager, or :meth:`acquire` / :meth:`release`.

    Attributes:
        stale: the record of a dead run found when the lock was taken (its leftovers are to be cleaned).
    """

    def __init__(self, out: str | os.PathLike[str], run_id: str) -> None:
        self.out = Path(out)
        self.path = RunLayout(self.out).lock
        self.run_id = run_id
        self.stale: Holder | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise OutputBusyError naming its holder; never blocks."""
        if self._fd is not None:
            return self
        for _ in range(5):
            fd = self._open()
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = read_holder(self.out)
                if holder is not None and holder.alive() is False:
                    # the kernel still holds the lock for a process that inherited it; the run it names is dead
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    self.stale = holder
                    continue
                who = holder.describe() if holder else "another run (its holder record is not written yet)"
                raise OutputBusyError(f"output folder {self.out} is in use by {who}; wait for it to finish, or give another --out") from None
            except OSError as exc:
                os.close(fd)
                raise ResourceError(f"cannot lock output folder {self.out}: {exc.strerror or exc}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another run replaced the file between our open and our lock: lock the new one
                os.close(fd)
                continue
            break
        else:
            raise OutputBusyError(f"output folder {self.out}: could not take {self.path} (it keeps being replaced)")
        self._fd = fd
        previous = read_holder(self.out)
        if previous is not None and self.stale is None:
            self.stale = previous  # a record survives only its writer's death: we hold the flock, so it is gone
        self._write_record()
        return self

    def _open(self) -> int:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ResourceError(f"cannot create the run lock {self.path}: {exc.strerror or exc}") from None

    def _write_record(self) -> None:
        rec = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
               "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        data = (json.dumps(rec) + "\n").encode("utf-8")
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            self.release()
            raise ResourceError(f"cannot write the run lock {self.path}: {exc.strerror or exc}") from None

    def release(self) -> None:
        """Clear the holder record and let the lock go: a record found by the next run means its writer died."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def try_lock(out: str | os.PathLike[str], run_id: str) -> tuple[RunLock | None, Holder | None]:
    """The lock if free, else ``(None, holder)``: for commands (gc) that work around a live run."""
    lock = RunLock(out, run_id)
    try:
        return lock.acquire(), None
    except OutputBusyError:
        return None, read_holder(out)
