"""The tests' Virtuoso: the package's loopback launcher, and a start that skips (or fails, in CI) without the binary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prodkg.kb.virtuoso_server import VirtuosoServer, find_virtuoso

__all__ = ["REQUIRE_ENV", "VirtuosoServer", "start_or_skip"]

#: Set to 1 (CI does when it installed the package) to fail instead of skip when Virtuoso is missing.
REQUIRE_ENV = "PRODKG_REQUIRE_VIRTUOSO"


def start_or_skip(directory: Path, **options: object) -> VirtuosoServer:
    """A started :class:`VirtuosoServer`; the calling test is skipped when ``virtuoso-t`` is not installed."""
    if find_virtuoso() is None:
        reason = "virtuoso-t is not installed (apt-get install virtuoso-opensource); the SPARQL server tests need it"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1")
        pytest.skip(reason)
    return VirtuosoServer(directory, **options).start()  # type: ignore[arg-type]
