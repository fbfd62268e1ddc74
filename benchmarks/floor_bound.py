#!/usr/bin/env python
"""How close to the floor a training step can come here: the floor's BLAS rate, and Adam's pass after the products.

The goal of at most 1.15x the floor (``bench_epoch.py``) asks whether a
step could do its products and its Adam update in little more than the
products' time. This script measures, in one run, the three things that
decide it on this machine (default configuration: 784-400-20, batch 128,
float32, 2 threads):

* ``rate``: the floor's eleven products (``bench_epoch.Floor.step``), in
  GFLOP/s, against one large product (2048 x 2048 x 2048) on the same
  threads: how much faster any product code could run. Also on 1 thread.
* ``adam``: npvae's Adam kernel (``kernels.adam_update``) over the default
  model's 651,200 weights, one flat array with half of it on each core
  (the fused step gives each core half of every matrix's rows: the same
  share). It is timed right after the same pass (its arrays warm in the
  cache) and right after one step of the floor's products (its arrays as
  a training step leaves them). There the products run on one BLAS
  thread, since OpenBLAS's second worker would keep spinning on the core
  Adam needs, and a pass over a few elements wakes Numba's workers first,
  as they are awake inside a step. ``bound`` is (floor + Adam after the
  products) / floor: what a step would take if the products ran at the
  floor's speed and everything else (loss, activations, KL, gathers) took
  no time at all.
* ``pair``: the output layer's two backward products, ``d W^T`` and
  ``h^T d``, each on one core at once (as a step that gives each core its
  own products would run them), against each split over both cores (what
  the fused step does); ``pair_over_split`` above 1 means splitting wins.
  Both arrangements are checked against NumPy's products before timing.

Every figure is the median over ``--rounds`` rounds (25), the pieces taken
in a shuffled order within a round, each after 0.1 s of idling; ``bound``
and ``pair_over_split`` are medians of ratios within a round.

    python benchmarks/floor_bound.py
    python benchmarks/floor_bound.py --quick      # smoke run (numbers not meaningful)
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from bench_epoch import Floor  # noqa: E402

import npvae  # noqa: E402
from npvae import _blas, kernels  # noqa: E402
from npvae.fused import _gemm  # noqa: E402
from npvae.optim import adam_kernel_args  # noqa: E402

BATCH, HIDDEN, LATENT, INPUT, BIG = 128, 400, 20, 784, 2048
DTYPE = np.dtype(np.float32)
GOAL = 1.15


def floor_flops(floor: Floor, batch: int) -> int:
    """Floating-point operations of one step of ``floor``'s products (2 m n k each)."""
    total = 0
    for li, (i, o, m) in enumerate(floor.layers):
        total += m * 2 * batch * i * o * (3 if li else 2)  # forward, weight gradient, input gradient (not layer 0)
    return total


def median_seconds(fn: Callable[[], object], reps: int) -> float:
    """The median of ``reps`` timed calls of ``fn``."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _compiled() -> tuple[Any, Any]:
    """Adam split by rows over ``parts`` cores, and the pair of products one core each or both split."""
    from numba import njit, prange

    @njit(parallel=True, nogil=True)
    def adam_split(parts: int, p: Any, g: Any, m: Any, v: Any, a: Any) -> None:  # pragma: no cover - compiled
        n = p.size
        for i in prange(parts):
            j0, j1 = i * n // parts, (i + 1) * n // parts
            kernels.adam_update(p[j0:j1], g[j0:j1], m[j0:j1], v[j0:j1], a[0], a[1], a[2], a[3], a[4], a[5], a[6])

    @njit(parallel=True, nogil=True)
    def backward_pair(addr: int, wide: bool, split: bool, d: Any, w: Any, h: Any, dh: Any,
                      dw: Any) -> None:  # pragma: no cover - compiled
        b, o = d.shape
        hid = w.shape[0]
        f = d.itemsize
        one, zero = d.dtype.type(1), d.dtype.type(0)
        if split:  # d W^T by columns of dh, then h^T d by rows of dW, each over both cores
            for i in prange(2):
                c0, c1 = i * hid // 2, (i + 1) * hid // 2
                _gemm(addr, wide, False, True, b, c1 - c0, o, d.ctypes.data, o, w.ctypes.data + c0 * o * f, o,
                      dh.ctypes.data + c0 * f, hid, one, zero)
            for i in prange(2):
                c0, c1 = i * hid // 2, (i + 1) * hid // 2
                _gemm(addr, wide, True, False, c1 - c0, o, b, h.ctypes.data + c0 * f, hid, d.ctypes.data, o,
                      dw.ctypes.data + c0 * o * f, o, one, zero)
        else:  # one product per core
            for i in prange(2):
                if i == 0:
                    _gemm(addr, wide, False, True, b, hid, o, d.ctypes.data, o, w.ctypes.data, o, dh.ctypes.data,
                          hid, one, zero)
                else:
                    _gemm(addr, wide, True, False, hid, o, b, h.ctypes.data, hid, d.ctypes.data, o, dw.ctypes.data,
                          o, one, zero)

    return adam_split, backward_pair


def measure(x: np.ndarray, rounds: int, reps: int, threads: int, settle: float) -> dict[str, Any]:
    """Every figure of the script, ``rounds`` rounds of ``reps`` calls each, ``settle`` s of idling before
    each; seconds."""
    blas = _blas.numpy_blas()
    if blas is None:
        raise SystemExit("floor_bound.py: NumPy's BLAS is not an OpenBLAS whose cblas gemm npvae can find")
    adam_split, backward_pair = _compiled()
    rng = np.random.default_rng(0)
    floor = Floor(x, BATCH, HIDDEN, DTYPE)
    xb = x[:BATCH]
    big = [rng.standard_normal((BIG, BIG)).astype(DTYPE) for _ in range(3)]
    n_weights = sum(i * o * m for i, o, m in floor.layers)
    p, g, m, v = (rng.standard_normal(n_weights).astype(DTYPE) * 0.01 for _ in range(4))
    v = np.abs(v)
    wake = [np.zeros(64 * threads, DTYPE) for _ in range(4)]
    opt = npvae.Adam()
    args = np.array(adam_kernel_args(opt.lr, opt.betas, opt.eps, 1000, DTYPE), DTYPE)  # a step well past warm-up
    d, w, h = (rng.standard_normal(s).astype(DTYPE) for s in ((BATCH, INPUT), (HIDDEN, INPUT), (BATCH, HIDDEN)))
    dh, dw = np.zeros((BATCH, HIDDEN), DTYPE), np.zeros((HIDDEN, INPUT), DTYPE)
    addr, wide = blas.gemm[DTYPE], bool(blas.wide)

    for split in (False, True):  # both arrangements compute the output layer's two gradients
        with blas.one_thread():
            backward_pair(addr, wide, split, d, w, h, dh, dw)
        for got, want in ((dh, d @ w.T), (dw, h.T @ d)):
            err = float(np.abs(got - want).max() / np.abs(want).max())
            if not err < 1e-5:
                raise SystemExit(f"floor_bound.py: the {'split' if split else 'paired'} products are wrong "
                                 f"(relative error {err:.2g})")

    def adam_after_products() -> float:
        times = []
        for _ in range(reps):
            with blas.one_thread():  # the BLAS's spinning workers would hold a core Adam needs (README)
                floor.step(xb)
            adam_split(threads, *wake, args)  # Numba's workers awake, as inside a step: time Adam, not a wake-up
            t0 = time.perf_counter()
            adam_split(threads, p, g, m, v, args)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def pair(split: bool) -> float:
        with blas.one_thread():
            return median_seconds(lambda: backward_pair(addr, wide, split, d, w, h, dh, dw), reps)

    pieces: dict[str, Callable[[], float]] = {
        "floor": lambda: median_seconds(lambda: floor.step(xb), reps),
        "big": lambda: median_seconds(lambda: np.matmul(big[0], big[1], out=big[2]), max(1, reps // 10)),
        "floor_1_thread": lambda: on_one_thread(lambda: median_seconds(lambda: floor.step(xb), reps)),
        "big_1_thread": lambda: on_one_thread(lambda: median_seconds(lambda: np.matmul(big[0], big[1], out=big[2]),
                                                                  max(1, reps // 10))),
        "adam_warm": lambda: median_seconds(lambda: adam_split(threads, p, g, m, v, args), reps),
        "adam_after_products": adam_after_products,
        "pair_one_core_each": lambda: pair(False),
        "pair_split": lambda: pair(True),
    }
    with _common.limit_threads(threads):
        for fn in pieces.values():  # compile and touch everything once
            fn()
        runs: dict[str, list[float]] = {k: [] for k in pieces}
        order = np.random.default_rng(1)
        for r in range(rounds):
            print(f"[floor_bound] round {r + 1}/{rounds}", file=sys.stderr, flush=True)
            for k in order.permutation(list(pieces)):
                time.sleep(settle)  # every thread that spun after the last piece is asleep again
                runs[str(k)].append(pieces[str(k)]())
    return {"runs": runs, "floor_flops": floor_flops(floor, BATCH), "big_flops": 2 * BIG ** 3, "weights": n_weights}


def on_one_thread(fn: Callable[[], float]) -> float:
    """``fn()`` with one thread for the BLAS and for Numba."""
    with _common.limit_threads(1):
        return fn()


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    """Medians (ms), rates (GFLOP/s) and the within-round ratios."""
    runs = m["runs"]
    med = {k: statistics.median(v) for k, v in runs.items()}
    rounds = range(len(runs["floor"]))
    return {
        "median_ms": {k: v * 1e3 for k, v in med.items()},
        "gflops": {"floor": m["floor_flops"] / med["floor"] / 1e9, "big": m["big_flops"] / med["big"] / 1e9,
                   "floor_1_thread": m["floor_flops"] / med["floor_1_thread"] / 1e9,
                   "big_1_thread": m["big_flops"] / med["big_1_thread"] / 1e9},
        "bound": statistics.median((runs["floor"][r] + runs["adam_after_products"][r]) / runs["floor"][r]
                                   for r in rounds),
        "adam_after_products_over_floor": statistics.median(runs["adam_after_products"][r] / runs["floor"][r]
                                                            for r in rounds),
        "pair_over_split": statistics.median(runs["pair_one_core_each"][r] / runs["pair_split"][r] for r in rounds),
        "weights": m["weights"],
    }


def table(s: dict[str, Any], threads: int) -> str:
    ms, gf = s["median_ms"], s["gflops"]
    rows = [
        f"784-400-20, batch 128, float32, {threads} threads",
        "",
        "| | ms | GFLOP/s |",
        "| --- | ---: | ---: |",
        f"| the floor's eleven products, one step | {ms['floor']:.3f} | {gf['floor']:.0f} |",
        f"| one {BIG}^3 product | {ms['big']:.1f} | {gf['big']:.0f} |",
        f"| the floor, 1 thread | {ms['floor_1_thread']:.3f} | {gf['floor_1_thread']:.0f} |",
        f"| one {BIG}^3 product, 1 thread | {ms['big_1_thread']:.1f} | {gf['big_1_thread']:.0f} |",
        f"| Adam over the {s['weights']:,} weights, warm | {ms['adam_warm']:.3f} | |",
        f"| Adam over them right after the floor's products | {ms['adam_after_products']:.3f} | |",
        f"| output layer's d W^T and h^T d, one core each | {ms['pair_one_core_each']:.3f} | |",
        f"| the same two, each split over both cores | {ms['pair_split']:.3f} | |",
        "",
        f"The floor runs at {gf['floor'] / gf['big']:.2f} of the large product's rate "
        f"({gf['floor_1_thread'] / gf['big_1_thread']:.2f} on 1 thread).",
        f"Adam after the products: {s['adam_after_products_over_floor']:.3f} x floor.",
        f"floor + Adam = {s['bound']:.3f} x floor (goal {GOAL}), with nothing else in the step.",
        f"One product per core takes {s['pair_over_split']:.3f} x the time of splitting both.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                    help="folder with fashion-mnist/ (uniform random data when it is not found)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 25; 2 with --quick)")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed calls per piece and round (default 40; 3 with --quick)")
    ap.add_argument("--threads", type=int, default=2, help="threads for the products and Adam (default 2)")
    ap.add_argument("--random-data", action="store_true", help="uniform random images instead of Fashion-MNIST")
    ap.add_argument("--quick", action="store_true", help="smoke run (numbers not meaningful)")
    a = ap.parse_args(argv)
    rounds = a.rounds if a.rounds is not None else (2 if a.quick else 25)
    reps = a.reps if a.reps is not None else (3 if a.quick else 40)
    if rounds < 1 or reps < 1 or a.threads < 1:
        ap.error("--rounds, --reps and --threads must be positive")
    if a.random_data:
        x, source = np.random.default_rng(0).random((4 * BATCH, INPUT), dtype=np.float32), "random-uniform"
    else:
        x, source = _common.load_bench_data(a.data, 4 * BATCH)
    import _realblas

    m = measure(x, rounds, reps, a.threads, 0.0 if a.quick else 0.1)
    s = summarize(m)
    print(json.dumps({"kind": "floor_bound", "threads": a.threads, "rounds": rounds, "reps": reps, "data": source,
                      **_realblas.describe(), **s, "runs_ms": {k: [t * 1e3 for t in v] for k, v in m["runs"].items()}}))
    print()
    print(table(s, a.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
