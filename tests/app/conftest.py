from __future__ import annotations

import pytest

from app_support import demo_output


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory):
    return demo_output(tmp_path_factory.mktemp("demo") / "out")


@pytest.fixture
def demo(demo_template, tmp_path):
    """A fresh copy of the demo output folder per test (tests write decisions and publish)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(demo_template, out)
    return out
