"""Named crash points for crash-safety tests: the process kills itself where $PRODKG_FAILPOINT says."""

from __future__ import annotations

import os
import signal

ENV = "PRODKG_FAILPOINT"


def failpoint(name: str) -> None:
    """SIGKILL this process when ``$PRODKG_FAILPOINT == name``; a no-op otherwise.

    A killed process runs no cleanup at all, exactly like a machine losing power or the
    OOM killer striking, so the tests that set these points prove the on-disk state is
    safe at every boundary, not just that exceptions are handled.
    """
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
