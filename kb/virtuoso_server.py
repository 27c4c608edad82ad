"""A local Virtuoso (Debian's ``virtuoso-opensource``) started on loopback: for trying ``--store-url``, the tests and the benches.

Each instance lives in its own directory: a minimal ``virtuoso.ini``, the database files and
the log. The SQL and HTTP listeners bind 127.0.0.1 on free ports, so a system-wide Virtuoso
service (or a second test session) never collides with it. A fresh database has the account
``dba`` with password ``dba``; writes go through Virtuoso's digest-authenticated endpoints
(``/sparql-auth`` for updates, ``/sparql-graph-crud-auth`` for the Graph Store protocol) as
``dba``, so nothing is granted to the anonymous ``SPARQL`` account.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["VIRTUOSO_BINARY", "VirtuosoServer", "find_virtuoso"]

#: Where Debian's virtuoso-opensource-7-bin installs the server.
VIRTUOSO_BINARY = "/usr/bin/virtuoso-t"

DBA_USER = "dba"
DBA_PASSWORD = "dba"  # the password of a fresh database; the instance listens on loopback only

_INI = """\
[Database]
DatabaseFile       = {dir}/virtuoso.db
ErrorLogFile       = {dir}/virtuoso.log
LockFile           = {dir}/virtuoso.lck
TransactionFile    = {dir}/virtuoso.trx
xa_persistent_file = {dir}/virtuoso.pxa
FileExtend         = 200
Striping           = 0
TempStorage        = TempDatabase

[TempDatabase]
DatabaseFile    = {dir}/virtuoso-temp.db
TransactionFile = {dir}/virtuoso-temp.trx
Striping        = 0

[Parameters]
ServerPort           = 127.0.0.1:{sql_port}
DisableUnixSocket    = 1
DisableTcpSocket     = 0
CheckpointInterval   = 0
NumberOfBuffers      = {buffers}
MaxDirtyBuffers      = {dirty_buffers}
DirsAllowed          = ., {dir}
CaseMode             = 2
ThreadsPerQuery      = 2
MaxClientConnections = 8

[HTTPServer]
ServerPort            = 127.0.0.1:{http_port}
ServerRoot            = {dir}/www
ServerThreads         = 8
MaxClientConnections  = 8
MaxKeepAlives         = 8
KeepAliveTimeout      = 10
Charset               = UTF-8
EnabledGzipContent    = 0

[SPARQL]
ResultSetMaxRows      = {max_rows}
MaxQueryExecutionTime = 60
"""


def find_virtuoso() -> str | None:
    """The path of ``virtuoso-t``, or None when Virtuoso is not installed."""
    found = shutil.which("virtuoso-t")
    if found:
        return found
    return VIRTUOSO_BINARY if os.access(VIRTUOSO_BINARY, os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VirtuosoServer:
    """One Virtuoso process on loopback, with its database in ``directory``.

    Args:
        directory: an empty folder for the ini file, database, transaction log and error log.
        binary: the ``virtuoso-t`` executable (default: found on PATH or at /usr/bin).
        max_rows: the server's ``ResultSetMaxRows`` (rows a SPARQL result may hold).
        buffers: 8 KiB pages of its buffer cache (``NumberOfBuffers``; 10,000 is about 80 MiB, enough for
            tests; Virtuoso's guide suggests about 340,000 for a 4 GiB share of memory, for bulk loads).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, directory: Path, binary: str | None = None, *, max_rows: int = 1_000_000, buffers: int = 10_000) -> None:
        self.directory = Path(directory)
        self.binary = binary or find_virtuoso()
        if self.binary is None:
            raise FileNotFoundError("virtuoso-t is not installed (Debian package virtuoso-opensource)")
        self.max_rows = max_rows
        self.buffers = buffers
        self.http_port = _free_port()
        self.sql_port = _free_port()
        while self.sql_port == self.http_port:
            self.sql_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.user, self.password = DBA_USER, DBA_PASSWORD

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sparql_url(self) -> str:
        """The public, read-only SPARQL endpoint."""
        return f"{self.base_url}/sparql"

    @property
    def update_url(self) -> str:
        """SPARQL queries and updates, HTTP digest authentication."""
        return f"{self.base_url}/sparql-auth"

    @property
    def gsp_url(self) -> str:
        """The Graph Store protocol, HTTP digest authentication."""
        return f"{self.base_url}/sparql-graph-crud-auth"

    @property
    def log_path(self) -> Path:
        return self.directory / "virtuoso.log"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        return "(no log)"

    def start(self, timeout: float = 90.0) -> VirtuosoServer:
        """Write the ini file, start ``virtuoso-t`` and wait until ``/sparql`` answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "www").mkdir(exist_ok=True)
        ini = self.directory / "virtuoso.ini"
        ini.write_text(
            _INI.format(dir=self.directory, sql_port=self.sql_port, http_port=self.http_port, max_rows=self.max_rows,
                        buffers=self.buffers, dirty_buffers=self.buffers * 3 // 5),
            encoding="utf-8",
        )
        stdout = open(self.directory / "stdout.txt", "wb")  # noqa: SIM115 - the child keeps writing to it
        try:
            self.process = subprocess.Popen(
                [self.binary, "+foreground", "+configfile", str(ini)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for pytest does not reach the server first
            )
        finally:
            stdout.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"virtuoso-t exited with status {self.process.returncode} while starting; log:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get(self.sparql_url, params={"query": "ASK {}"})
                    if response.status_code == 200:
                        return self
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Virtuoso did not answer on {self.sparql_url} within {timeout:.0f}s; log:\n{self.log_tail()}")
                time.sleep(0.25)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its pid: SIGTERM (a clean shutdown), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def __enter__(self) -> VirtuosoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
