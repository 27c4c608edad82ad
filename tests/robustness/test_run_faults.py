"""One run at a time per output folder, stale locks recovered, I/O faults (disk full) giving one clear line,
and leftovers of failed or killed runs removed by the next run or `prodkg gc`, the live graph untouched."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import prodkg.flows.pipeline as pipeline
import prodkg.kb.store as kb_store
from prodkg.errors import OutputBusyError, ResourceError
from prodkg.flows.cli import main
from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.flows.runlock import RunLock, read_holder
from prodkg.kb.store import KnowledgeGraph

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = "PREFIX schema: <https://schema.org/> SELECT (COUNT(DISTINCT ?p) AS ?n) WHERE { ?p a schema:Product }"
N_PRODUCTS = 54


def _cfg(catalog: Path, out: Path, **extra):
    return load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], method="source_only", baseline=None, epochs=3,
                       out=str(out), use_prefect=False, progress=False, **extra)


@pytest.fixture(scope="module")
def _good_template(text_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "out"
    summary = run_pipeline(_cfg(text_catalog, out))
    return out, summary["run_id"]


@pytest.fixture
def good_out(_good_template, tmp_path):
    """An output folder of its own holding one good graph (a copy: one run's worth of time, once per module)."""
    template, run_id = _good_template
    out = tmp_path / "out"
    shutil.copytree(template, out, symlinks=True)
    return out, run_id


def _graph(out: Path) -> tuple[Path, int]:
    kg = KnowledgeGraph(out / "kg")
    with kg.open(read_only=True) as store:
        return kg.current_path(), int(store.query(PRODUCTS).to_frame()["n"][0])


def _leftovers(out: Path) -> list[str]:
    runs = [p.name for p in (out / "runs").iterdir() if not (p / "manifest.json").is_file()]
    tmp = [str(p.relative_to(out)) for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    return runs + tmp


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- one run at a time -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_is_refused_naming_the_holder_and_writes_nothing(good_out, text_catalog):
    out, _ = good_out
    holder = RunLock(out, "20260101T000000Z-aaaaaa").acquire()  # a run in progress (the lock is per open file, so this process counts)
    try:
        before = sorted(str(p) for p in out.rglob("*"))
        with pytest.raises(OutputBusyError) as refused:
            run_pipeline(_cfg(text_catalog, out))
        message = str(refused.value)
        assert "\n" not in message
        assert f"in use by run 20260101T000000Z-aaaaaa (pid {os.getpid()} on {socket.gethostname()}, since " in message
        assert sorted(str(p) for p in out.rglob("*")) == before  # not a file written, not one removed
    finally:
        holder.release()
    assert read_holder(out) is None  # a released lock leaves no holder record
    run_pipeline(_cfg(text_catalog, out))  # and the folder is free again


@pytest.mark.slow
def test_two_concurrent_cli_runs_on_one_folder(good_out, text_catalog, tmp_path):
    """Two real processes: the second is refused with the first's name while the first works, and the first
    publishes alone (before the lock both finished, each recording changes against the same predecessor)."""
    out, good_run = good_out
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "prodkg.flows.cli", "run", "--catalog", str(text_catalog), "--source", "webshop", "--target",
            "supplier", "--method", "source_only", "--baseline", "none", "--epochs", "3", "--no-prefect", "--quiet", "--out", str(out)]
    # the first run holds the lock while a server on 127.0.0.1 keeps one of its images waiting
    slow_catalog = tmp_path / "slow" / "catalog.csv"  # same catalog name: same graph scheme as the good run's
    slow_catalog.parent.mkdir()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    frame = pd.read_csv(text_catalog, dtype=str, keep_default_na=False)
    frame.loc[frame.index[-1], "image"] = f"http://127.0.0.1:{sock.getsockname()[1]}/slow.jpg"
    frame.to_csv(slow_catalog, index=False)
    config = tmp_path / "slow.toml"
    config.write_text("[run]\nimage_read_timeout = 8.0\n")
    first = subprocess.Popen([*base[:4], "--config", str(config), "--catalog", str(slow_catalog), *base[6:]], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while read_holder(out) is None:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        holder = read_holder(out)
        second = subprocess.run(base, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 6  # the output folder is held by another run
        lines = second.stderr.strip().splitlines()
        assert lines == [f"prodkg: error: output folder {out} is in use by run {holder.run_id} (pid {first.pid} on "
                         f"{socket.gethostname()}, since {holder.since}); wait for it to finish, or give another --out"], second.stderr
        assert first.poll() is None  # refused while the first was still working
        assert {p.name for p in (out / "runs").iterdir()} <= {good_run, holder.run_id}  # the second wrote no run folder
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
        sock.close()
    assert _graph(out)[1] == N_PRODUCTS - 1  # the slow product was quarantined after its timeout


@pytest.mark.slow
def test_a_stale_lock_of_a_killed_run_is_recovered(good_out, text_catalog, capfd):
    out, good_run = good_out
    dead = _dead_pid()
    stale_run = "20260101T000000Z-dead00"
    # what a run killed mid-extract leaves: its holder record, its run folder, a head half-stored in the cache
    (out / ".lock").write_text(json.dumps({"run_id": stale_run, "pid": dead, "host": socket.gethostname(), "since": "2026-01-01T00:00:00Z"}))
    (out / "runs" / stale_run).mkdir()
    (out / "runs" / stale_run / "products.parquet").write_bytes(b"partial")
    (out / "cache" / "heads" / f"0123abcd.tmp{dead}").mkdir(parents=True)
    # ... and a leftover child still holding its descriptor: the kernel keeps the flock, the record names a dead run
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)", str(out / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        summary = run_pipeline(_cfg(text_catalog, out))
    finally:
        holder.kill()
        holder.wait()
    err = capfd.readouterr().err
    assert f"recovered the lock of run {stale_run} (pid {dead} on {socket.gethostname()}, since 2026-01-01T00:00:00Z)" in err
    assert not (out / "runs" / stale_run).exists()
    assert not list((out / "cache" / "heads").glob("*.tmp*"))
    assert (out / "runs" / good_run / "manifest.json").is_file()
    assert summary["counts"]["products"] == N_PRODUCTS
    assert read_holder(out) is None


def test_a_lock_held_by_a_live_process_is_never_taken_over(tmp_path):
    first = RunLock(tmp_path, "run-1").acquire()
    try:
        with pytest.raises(OutputBusyError, match=r"in use by run run-1 \(pid \d+ on .*, since .*Z\)"):
            RunLock(tmp_path, "run-2").acquire()
    finally:
        first.release()
    with RunLock(tmp_path, "run-2") as second:
        assert second.stale is None and read_holder(tmp_path).run_id == "run-2"


# --- disk full --------------------------------------------------------------------------------


def _enospc_at(point: str):
    def failpoint(name: str) -> None:
        if name == point:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"/disk/{point}")
    return failpoint


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-ingest", "after-extract", "after-predict", "graph-midload"])
def test_disk_full_at_any_stage_fails_cleanly(point, good_out, text_catalog, monkeypatch):
    out, good_run = good_out
    good_path, n = _graph(out)
    monkeypatch.setattr(pipeline, "failpoint", _enospc_at(point))
    monkeypatch.setattr(kb_store, "failpoint", _enospc_at(point))
    with pytest.raises(ResourceError) as failed:
        run_pipeline(_cfg(text_catalog, out, seed=1))
    message = str(failed.value)
    assert "\n" not in message
    assert f"No space left on device (/disk/{point}) [ENOSPC]" in message and "the last good graph" in message
    assert _leftovers(out) == []  # the failed run removed its own partial files
    assert _graph(out) == (good_path, n)  # the last good graph is live and answers
    assert sorted(p.name for p in (out / "runs").iterdir()) == [good_run]


@pytest.mark.slow
def test_disk_full_reported_by_the_store_is_a_resource_error(good_out, text_catalog, monkeypatch):
    """The store wraps a failed pointer swap in StoreError; a full disk behind it is still the machine's fault."""
    from prodkg.errors import StoreError

    out, good_run = good_out
    good_path, n = _graph(out)

    def full_disk_swap(self, store_dir):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / "CURRENT"))
        except OSError as exc:
            raise StoreError(f"cannot update {self.root / 'CURRENT'}: {exc}") from exc

    monkeypatch.setattr(KnowledgeGraph, "_point_current_at", full_disk_swap)
    with pytest.raises(ResourceError, match=r"No space left on device \(.*CURRENT\) \[ENOSPC\]; the last good graph stays live"):
        run_pipeline(_cfg(text_catalog, out, seed=4))
    assert _leftovers(out) == []
    assert _graph(out) == (good_path, n)
    assert sorted(p.name for p in (out / "runs").iterdir()) == [good_run]


@pytest.mark.slow
def test_disk_full_while_storing_a_head_leaves_no_tmp_folder(good_out, text_catalog, monkeypatch):
    """torch.save reports a full disk as RuntimeError; the heads cache's .tmpPID folder must not stay behind."""
    from prodkg.adaptation import AdaptedModel

    out, _ = good_out
    good_path, n = _graph(out)

    def full_disk_save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "weights.pt").write_bytes(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(AdaptedModel, "save", full_disk_save)
    with pytest.raises(ResourceError, match="PytorchStreamWriter failed writing file data/0: file write failed"):
        run_pipeline(_cfg(text_catalog, out, seed=2))  # a new seed: the head is not in the cache, so it is stored
    assert _leftovers(out) == []
    assert _graph(out) == (good_path, n)


@pytest.mark.slow
def test_cli_disk_full_is_one_line_and_the_data_error_code(good_out, text_catalog, monkeypatch, capsys):
    out, _ = good_out
    monkeypatch.setattr(pipeline, "failpoint", _enospc_at("after-extract"))
    code = main(["run", "--catalog", str(text_catalog), "--source", "webshop", "--target", "supplier", "--method", "source_only",
                 "--baseline", "none", "--epochs", "3", "--seed", "3", "--no-prefect", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3  # data or I/O
    assert len(err) == 1 and err[0].startswith("prodkg: error: run ") and "No space left on device" in err[0], err


# --- leftovers of killed runs: prodkg gc and the next run ---------------------------------------


def _killed_run_leftovers(out: Path) -> list[Path]:
    dead = _dead_pid()
    killed = out / "runs" / "20260102T000000Z-k1ll3d"
    killed.mkdir()
    (killed / "products.parquet").write_bytes(b"x" * 100)
    partial_store = out / "kg" / "stores" / "20260102T000000Z-k1ll3d.partial"
    partial_store.mkdir()
    (partial_store / "000001.sst").write_bytes(b"x")
    heads = out / "cache" / "heads" / f"feedbeef.tmp{dead}"
    heads.mkdir(parents=True)
    pointer = out / "kg" / f".CURRENT.{dead}.tmp"
    pointer.write_text("stores/x\n")
    spool = out / "kg" / f".spool.{dead}.nq"  # a graph stage killed before its load
    spool.write_bytes(b"<urn:a> <urn:b> <urn:c> <urn:g> .\n")
    live_tmp = out / "cache" / "heads" / f"cafe.tmp{os.getpid()}"  # a live process's entry: never touched
    live_tmp.mkdir()
    return [killed, partial_store, heads, pointer, spool]


@pytest.mark.slow
def test_gc_removes_what_killed_runs_left_and_keeps_the_graph(good_out, capsys):
    out, good_run = good_out
    good_path, n = _graph(out)
    leftovers = _killed_run_leftovers(out)
    assert main(["gc", "--out", str(out), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert all(f"would remove {p}" in listed for p in leftovers), listed
    assert all(p.exists() for p in leftovers)
    assert main(["gc", "--out", str(out)]) == 0
    assert f"removed {len(leftovers)} leftover(s)" in capsys.readouterr().out
    assert not any(p.exists() for p in leftovers)
    assert (out / "cache" / "heads" / f"cafe.tmp{os.getpid()}").is_dir()
    assert (out / "runs" / good_run / "manifest.json").is_file()
    assert _graph(out) == (good_path, n)


@pytest.mark.slow
def test_the_next_run_removes_what_killed_runs_left(good_out, text_catalog):
    out, good_run = good_out
    leftovers = _killed_run_leftovers(out)
    run_pipeline(_cfg(text_catalog, out))
    assert not any(p.exists() for p in leftovers)
    assert (out / "runs" / good_run / "manifest.json").is_file()


def test_gc_spares_the_run_of_the_live_graph(tmp_path):
    """A run killed right after its graph went live has no manifest, but its folder holds the graph's embeddings."""
    from prodkg.flows import gc

    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r2").mkdir()
    (tmp_path / "kg" / "stores" / "r1").mkdir(parents=True)
    assert [item.path.name for item in gc.find_leftovers(tmp_path)] == ["r2"]


@pytest.mark.slow
def test_gc_keeps_the_files_of_a_run_in_progress(good_out, capsys):
    out, _ = good_out
    leftovers = _killed_run_leftovers(out)
    live = RunLock(out, "20260103T000000Z-l1ve00").acquire()
    (out / "runs" / live.run_id).mkdir()  # the live run's folder, no manifest yet
    try:
        assert main(["gc", "--out", str(out), "--dry-run"]) == 0
        listed = capsys.readouterr().out
        assert f"would remove {out / 'runs' / live.run_id}" not in listed
        assert f"run {live.run_id} (pid {os.getpid()}" in listed and "is in progress, its files were kept" in listed
        assert main(["gc", "--out", str(out)]) == 0
        assert f"run {live.run_id} (pid {os.getpid()}" in capsys.readouterr().out
    finally:
        live.release()
    assert (out / "runs" / live.run_id).is_dir()
    assert not any(p.exists() for p in leftovers)
