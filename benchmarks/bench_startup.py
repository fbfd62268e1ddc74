#!/usr/bin/env python
"""Start-up: what compiling npvae's kernels costs on a new machine, and loading them on later runs.

Numba compiles each kernel on first use and stores the machine code in its
on-disk cache; later processes load it. Each case below runs in a fresh
child process, first with an empty ``NUMBA_CACHE_DIR`` (a new machine), then
``--repeats`` more times with that directory as the first run left it
(every later run):

* ``import``: ``import npvae`` alone;
* ``warmup``: ``npvae.warmup()``, every kernel for float32 and float64,
  the fused step for float and uint8 data;
* ``warm_training``: what ``npvae train`` and ``examples/train_mnist.py``
  now do before their first epoch: ``npvae._warmup.warm_training`` for the
  default model (784-400-20, float32) on float32 data, only what
  ``npvae.train`` will run here; ``cached_before`` is
  ``npvae._warmup.training_cached``'s guess beforehand (False: the run
  says it is compiling);
* ``first_train``: a first ``npvae.train`` call, one epoch of 1,280 random
  examples with nothing warmed up: its epoch ``seconds`` then include the
  compiling (what a library user's first epoch shows);
* ``train_mnist``: ``examples/train_mnist.py --epochs 1`` end to end
  (offline data; the wall time includes its download-mirror check of up to
  3 s, data loading and the pictures), with its first epoch's seconds from
  ``history.json``.

    python benchmarks/bench_startup.py                    # every case, 2 cached runs each
    python benchmarks/bench_startup.py --cases warm_training,train_mnist
    python benchmarks/bench_startup.py --quick            # warm_training only, 1 cached run

Output: one JSON line per case, then a Markdown table (seconds: the first
run, and the median of the cached runs).
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = {
    "import": "import time; t0 = time.perf_counter(); import npvae; out = {'seconds': time.perf_counter() - t0}",
    "warmup": "import npvae; out = {'seconds': npvae.warmup()}",
    "warm_training": (
        "import time; t0 = time.perf_counter()\n"
        "import numpy as np, npvae\n"
        "from npvae import _warmup\n"
        "vae = npvae.VAE(784, (400,), 20, seed=0, dtype=np.float32)\n"
        "x = np.random.default_rng(0).random((4, 784), dtype=np.float32)\n"
        "cached = _warmup.training_cached(vae, x)\n"
        "s = _warmup.warm_training(vae, x)\n"
        "out = {'seconds': s, 'cached_before': cached, 'cached_after': _warmup.training_cached(vae, x),\n"
        "       'with_imports_s': time.perf_counter() - t0}"),
    "first_train": (
        "import numpy as np, npvae\n"
        "vae = npvae.VAE(784, (400,), 20, seed=0, dtype=np.float32)\n"
        "x = np.random.default_rng(0).random((1280, 784), dtype=np.float32)\n"
        "h = npvae.train(vae, x, epochs=1, batch_size=128, seed=0)\n"
        "out = {'seconds': h[0]['seconds']}"),
}
CASES = (*_CHILD, "train_mnist")


def run_case(case: str, cache: Path, out_dir: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    if case == "train_mnist":
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_mnist.py"), "--epochs", "1",
                               "--out", str(out_dir), "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"train_mnist.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        hist = json.loads((out_dir / "history.json").read_text())
        return {"seconds": wall, "epoch1_s": hist["history"][0]["seconds"]}
    code = _CHILD[case] + "\nimport json; print(json.dumps(out))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--repeats", type=int, default=None, help="cached runs after the first (default 2; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="warm_training only, 1 cached run")
    a = p.parse_args(argv)
    cases = ["warm_training"] if a.quick else [c for c in a.cases.split(",") if c]
    if set(cases) - set(CASES):
        p.error(f"--cases: unknown {sorted(set(cases) - set(CASES))}")
    repeats = a.repeats if a.repeats is not None else (1 if a.quick else 2)
    removed = os.environ.get("NPVAE_BENCH_REMOVED_BLAS_ENV")
    print(json.dumps({"kind": "env", "python": sys.version.split()[0], "cpus": os.cpu_count(),
                      "blas_env_removed": removed, "load_average": os.getloadavg()}), flush=True)
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="npvae-numba-cache-") as tmp:
            cache, out_dir = Path(tmp) / "cache", Path(tmp) / "run"
            cache.mkdir()
            print(f"[startup] {case}: first run (empty cache)", file=sys.stderr, flush=True)
            first = run_case(case, cache, out_dir)
            cached = []
            for r in range(repeats):
                print(f"[startup] {case}: cached run {r + 1}", file=sys.stderr, flush=True)
                cached.append(run_case(case, cache, out_dir))
        rec = {"kind": "case", "case": case, "first": first, "cached": cached,
               "first_s": first["seconds"], "cached_s": statistics.median(c["seconds"] for c in cached)}
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    print()
    print("| case | first run (empty cache) s | cached s (median) | notes |")
    print("|---|---:|---:|---|")
    for r in rows:
        notes = ""
        if r["case"] == "warm_training":
            notes = (f"cached before: {r['first'].get('cached_before')} (first), "
                     f"{r['cached'][0].get('cached_before')} (cached)")
        if r["case"] == "train_mnist":
            notes = (f"epoch 1: {r['first']['epoch1_s']:.2f} s (first), "
                     f"{statistics.median(c['epoch1_s'] for c in r['cached']):.2f} s (cached)")
        print(f"| {r['case']} | {r['first_s']:.2f} | {r['cached_s']:.2f} | {notes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
