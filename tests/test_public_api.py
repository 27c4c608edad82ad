"""The public Python API: the README's example runs as written, and `import prodkg` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    code = _readme_example().replace("runs/api-example", str(tmp_path / "api-example"))
    monkeypatch.chdir(ROOT)  # the example names the sample catalog relative to the repository
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented example, run as a user would
    summary, frame, n = namespace["summary"], namespace["per_category"], int(namespace["n"])
    assert summary["counts"]["products"] > 0 and n == summary["counts"]["quads"] > 0
    assert {"category", "products"} <= set(frame.columns) and frame["products"].astype(int).sum() > 0
    assert "auto" in capsys.readouterr().out


def test_import_prodkg_is_light_and_bare_stage_packages_are_not_importable(tmp_path):
    script = ("import sys, prodkg\n"
              "print(sorted(m for m in ('torch', 'prefect', 'rdflib', 'pandas') if m in sys.modules))\n"
              "print(sorted(prodkg.__all__))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "['__version__', 'list_components', 'open_graph', 'query', 'run']"]
    for bare in ("kb", "flows", "catalogs", "extractors", "adaptation", "prediction"):
        done = subprocess.run([sys.executable, "-c", f"import {bare}"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, bare


def test_list_components_names_every_kind():
    import prodkg

    found = prodkg.list_components()
    assert set(found) == {"encoders", "methods", "fusions", "datasets", "queries"}
    assert "dann" in found["methods"] and "auto" in found["methods"] and "office-caltech-10" in found["datasets"]
    assert "products_per_category" in found["queries"] and "minilm" in found["encoders"]
