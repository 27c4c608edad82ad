"""Memory and time of writing ``embeddings.parquet`` (kb.publish.write_embeddings) at catalog scale.

    .venv/bin/python bench/bench_embeddings_write.py --products 1000000 --dim 384

Each measurement runs in a child process holding only random features of the given shape and the
product ids, so its peak RSS (``wait4`` ru_maxrss) is the writer's plus those inputs; the inputs
alone are measured too. ``--batch`` compares batch sizes (0: the whole table at once, as before the
writer went batch by batch). Results go to the ``embeddings-write`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, run_measured, today, write_section


def child(n: int, dim: int, batch: int, write: bool) -> None:
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from prodkg.kb.publish import write_embeddings

    feats = SimpleNamespace(blocks={"text": np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)},
                            present={"text": np.ones(n, bool)})
    products = pd.DataFrame({"product_id": [f"p{i}" for i in range(n)]})
    seconds = 0.0
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_embeddings(products, feats, Path(tmp) / "embeddings.parquet", batch=batch or n)
            seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--batch", default="0,50000,16384", help="batch sizes, comma-separated (0: all at once)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        n, batch, write = a.child
        child(n, a.dim, batch, bool(write))
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}

    def measure(batch: int, write: bool) -> tuple[float, float]:
        cmd = [sys.executable, __file__, "--dim", str(a.dim), "--child", str(a.products), str(batch), str(int(write))]
        stdout, stderr, code, _, rss = run_measured(cmd, env)
        if code != 0:
            raise SystemExit(stderr[-3000:])
        return json.loads(stdout.strip().splitlines()[-1])["seconds"], rss

    _, inputs = measure(0, False)
    rows = [(b, *measure(b, True)) for b in (int(x) for x in a.batch.split(","))]
    lines = ["## Writing embeddings.parquet: memory and time", "",
             f"Command: `.venv/bin/python bench/bench_embeddings_write.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}. Date: {today()}.  ",
             f"{a.products:,} products × {a.dim} float32 dimensions (one modality); each row a separate process. "
             f"The inputs alone (features and ids) peak at {inputs:.2f} GiB.", "",
             "| batch | write seconds | peak RSS | above the inputs |", "|---|---:|---:|---:|"]
    for batch, seconds, rss in rows:
        lines.append(f"| {'all at once' if batch == 0 else f'{batch:,}'} | {seconds:.1f} | {rss:.2f} GiB | {rss - inputs:+.2f} GiB |")
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        print("wrote", write_section("embeddings-write", body))


if __name__ == "__main__":
    main()
