"""The built wheel: one top-level package, every subpackage and data file inside, and the CLI starts from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_one_namespace_that_runs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, text=True)
    wheel = next((tmp_path / "dist").glob("prodkg-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"prodkg"}
    for folder in ("flows", "kb", "kb/sparql", "catalogs", "extractors", "adaptation", "prediction"):
        assert f"prodkg/{folder}/__init__.py" in names, folder
    assert "prodkg/kb/shapes/prodkg.ttl" in names and "prodkg/kb/queries/products_per_category.rq" in names
    assert "prodkg/kb/sparql/static/query.html" in names and "prodkg/kb/sparql/static/query.js" in names  # the offline query page
    # the installed files alone (not the editable checkout) give the command line
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = "import prodkg, prodkg.flows.cli as cli; print(prodkg.__file__); print(prodkg.list_components('queries'))"
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith(str(target)) and "products_per_category" in out
    helped = subprocess.run([sys.executable, "-m", "prodkg.flows.cli", "run", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    assert "--threshold" in helped.stdout and "--dataset" in helped.stdout
