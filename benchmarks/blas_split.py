#!/usr/bin/env python
"""A measured prototype: the floor's products split over the cores by us, with no Python in the loop.

`split_step.py` splits a whole training step over two Python threads and
finds the second thread's Python, the GIL and the barriers eating the gain.
This script takes all of that away and asks the question that is left: on
this machine, can two cores run the model's products faster when *we* split
them than when OpenBLAS does?

It runs only the floor's eleven matrix products of an epoch (784-400-20,
batch 128, float32; ``bench_epoch.Floor``), in three ways, alternating
epochs in one process, medians over ``--epochs``:

* ``floor``: ``bench_epoch.Floor`` as ``bench_epoch.py`` times it, NumPy's
  ``matmul`` with OpenBLAS on 2 threads;
* ``floor, 1 thread``: the same, with OpenBLAS on 1 thread;
* ``split``: the whole epoch loop compiled by Numba. Each step is two
  parallel loops over the cores (``prange``), each core calling
  ``cblas_sgemm`` of the very OpenBLAS NumPy loaded, on one thread, through
  its address, as npvae's fused step does (``npvae._blas``,
  ``npvae.fused``). The first loop gives each core its share of the batch's
  rows for the seven products that work row by row (the forward pass and the
  gradients carried down); the second gives each core its share of the rows
  of the four weight gradients, over the whole batch, so nothing is summed.
  Loop fusion is turned off: fused, the two loops would run as one, and a
  core would read rows of the other's first loop before they were written.

Before timing, one step of ``split`` is checked against NumPy's products of
the same arrays (every output filled with NaN first): each of the eleven
outputs must agree to 1e-5 of its largest entry.

Printed: the median seconds of each, and ``split/floor`` and ``floor, 1
thread/floor``. This is a measurement, not part of npvae: it covers the
products alone, in float32, for one architecture, and needs the BLAS NumPy
loaded to be an OpenBLAS that ``npvae._blas`` finds (otherwise it says so
and exits 0).

    python benchmarks/blas_split.py                   # 30,000 examples, 7 timed epochs each
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from bench_epoch import INPUT, LATENT, Floor  # noqa: E402

from npvae import _blas  # noqa: E402
from npvae.fused import _gemm as mm  # noqa: E402  (row-major C = op(A) @ op(B) through gemm's address)

HIDDEN, BATCH = 400, 128
#: The outputs of one step, in the order of ``Floor.epoch``'s products.
OUTPUTS = ("h1", "ml", "h3", "out", "dW4", "dh3", "dW3", "dz", "dW2", "dh1", "dW1")


@numba.njit(parallel={"prange": True, "fusion": False}, nogil=True)
def split_epoch(x, n_steps, W1, W2, W3, W4, dW1, dW2, dW3, dW4,  # type: ignore[no-untyped-def]
                h1, ml, z, h3, out, d, dh3, dz, dml, dh1, gemm, wide, parts, run_parts):
    """The epoch loop: see the module docstring. ``gemm``, ``wide``: :class:`npvae._blas.Blas`'s for float32.

    ``run_parts < parts`` leaves parts undone: only for the test that the check notices.
    """
    b, p, h, k2 = h1.shape[0], W1.shape[0], W1.shape[1], W2.shape[1]
    k = k2 // 2
    f = 4  # bytes per float32
    one, zero = np.float32(1.0), np.float32(0.0)
    for s in range(n_steps):
        xa = x.ctypes.data + s * b * p * f
        for i in numba.prange(run_parts):
            r0, r1 = i * b // parts, (i + 1) * b // parts
            m = r1 - r0
            mm(gemm, wide, False, False, m, h, p, xa + r0 * p * f, p, W1.ctypes.data, h,
               h1.ctypes.data + r0 * h * f, h, one, zero)
            mm(gemm, wide, False, False, m, k2, h, h1.ctypes.data + r0 * h * f, h, W2.ctypes.data, k2,
               ml.ctypes.data + r0 * k2 * f, k2, one, zero)
            mm(gemm, wide, False, False, m, h, k, z.ctypes.data + r0 * k * f, k, W3.ctypes.data, h,
               h3.ctypes.data + r0 * h * f, h, one, zero)
            mm(gemm, wide, False, False, m, p, h, h3.ctypes.data + r0 * h * f, h, W4.ctypes.data, p,
               out.ctypes.data + r0 * p * f, p, one, zero)
            mm(gemm, wide, False, True, m, h, p, d.ctypes.data + r0 * p * f, p, W4.ctypes.data, p,
               dh3.ctypes.data + r0 * h * f, h, one, zero)
            mm(gemm, wide, False, True, m, k, h, dh3.ctypes.data + r0 * h * f, h, W3.ctypes.data, h,
               dz.ctypes.data + r0 * k * f, k, one, zero)
            mm(gemm, wide, False, True, m, h, k2, dml.ctypes.data + r0 * k2 * f, k2, W2.ctypes.data, k2,
               dh1.ctypes.data + r0 * h * f, h, one, zero)
        for i in numba.prange(run_parts):
            # rows [c0, c1) of dW = A.T @ D are columns [c0, c1) of A, over the whole batch
            c0, c1 = i * h // parts, (i + 1) * h // parts
            mm(gemm, wide, True, False, c1 - c0, p, b, h3.ctypes.data + c0 * f, h, d.ctypes.data, p,
               dW4.ctypes.data + c0 * p * f, p, one, zero)
            mm(gemm, wide, True, False, c1 - c0, k2, b, h1.ctypes.data + c0 * f, h, dml.ctypes.data, k2,
               dW2.ctypes.data + c0 * k2 * f, k2, one, zero)
            c0, c1 = i * k // parts, (i + 1) * k // parts
            mm(gemm, wide, True, False, c1 - c0, h, b, z.ctypes.data + c0 * f, k, dh3.ctypes.data, h,
               dW3.ctypes.data + c0 * h * f, h, one, zero)
            c0, c1 = i * p // parts, (i + 1) * p // parts
            mm(gemm, wide, True, False, c1 - c0, h, b, xa + c0 * f, p, dh1.ctypes.data, h,
               dW1.ctypes.data + c0 * h * f, h, one, zero)


class Split:
    """``Floor``'s arrays, products and batches, run by :func:`split_epoch`."""

    def __init__(self, floor: Floor, blas: _blas.Blas) -> None:
        if floor.x.dtype != np.float32 or not floor.x.flags.c_contiguous:
            raise ValueError("the split runs float32, C-contiguous data only")
        self.floor, self.blas = floor, blas
        self.w = floor.ws[floor.batch]

    def arrays(self) -> tuple[np.ndarray, ...]:
        W, G, w = self.floor.W, self.floor.G, self.w
        return (W["W1"], W["W2"], W["W3"], W["W4"], G["dW1"], G["dW2"], G["dW3"], G["dW4"],
                w["h1"], w["ml"], w["z"], w["h3"], w["out"], w["d"], w["dh3"], w["dz"], w["dml"], w["dh1"])

    def epoch(self, parts: int, run_parts: int | None = None, n_steps: int | None = None) -> float:
        """Seconds for the epoch's full batches (or ``n_steps`` of them), BLAS on one thread per call."""
        steps = self.floor.x.shape[0] // self.floor.batch if n_steps is None else n_steps
        with threadpool_limits(limits=1, user_api="blas"):
            t0 = time.perf_counter()
            split_epoch(self.floor.x, steps, *self.arrays(), self.blas.gemm[np.dtype(np.float32)], self.blas.wide,
                        parts, parts if run_parts is None else run_parts)
            return time.perf_counter() - t0

    def check(self, parts: int, run_parts: int | None = None) -> float:
        """Largest difference, relative to each output's largest entry, between one split step and NumPy."""
        w, W, G = self.w, self.floor.W, self.floor.G
        for name in OUTPUTS:
            (G if name.startswith("dW") else w)[name].fill(np.nan)
        self.epoch(parts, run_parts, n_steps=1)
        xb = self.floor.x[:self.floor.batch]
        want = {"h1": xb @ W["W1"], "ml": w["h1"] @ W["W2"], "h3": w["z"] @ W["W3"], "out": w["h3"] @ W["W4"],
                "dW4": w["h3"].T @ w["d"], "dh3": w["d"] @ W["W4"].T, "dW3": w["z"].T @ w["dh3"],
                "dz": w["dh3"] @ W["W3"].T, "dW2": w["h1"].T @ w["dml"], "dh1": w["dml"] @ W["W2"].T,
                "dW1": xb.T @ w["dh1"]}
        worst = 0.0
        for name, ref in want.items():
            got = (G if name.startswith("dW") else w)[name]
            err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
            worst = max(worst, err if np.isfinite(err) else np.inf)
        return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=7, help="timed epochs of each, alternating")
    ap.add_argument("--data", default=_common.DEFAULT_DATA)
    args = ap.parse_args(argv)

    blas = _blas.numpy_blas()
    if blas is None:
        print("nothing to measure: NumPy's BLAS here is not an OpenBLAS whose cblas gemm npvae can find")
        return 0
    x, source = _common.load_bench_data(args.data, args.examples)
    x = np.ascontiguousarray(x, dtype=np.float32)
    floor = Floor(x, BATCH, HIDDEN, np.dtype(np.float32))
    if x.shape[0] % BATCH:  # the split runs full batches only; so does the floor here, for the same work
        floor = Floor(np.ascontiguousarray(x[:x.shape[0] - x.shape[0] % BATCH]), BATCH, HIDDEN,
                      np.dtype(np.float32))
    split = Split(floor, blas)
    parts = numba.get_num_threads()
    err = split.check(parts)
    print(f"one split step against NumPy's products: largest relative difference {err:.1e}")
    if not err <= 1e-5:
        print("the split does not compute the floor's products")
        return 1

    runs: dict[str, list[float]] = {"floor": [], "floor, 1 thread": [], "split": []}

    def floor_on(n: int) -> float:
        with threadpool_limits(limits=n, user_api="blas"):
            return floor.epoch()

    timers = {"floor": lambda: floor_on(2), "floor, 1 thread": lambda: floor_on(1),
              "split": lambda: split.epoch(parts)}
    for epoch in range(args.epochs + 1):  # the first round warms each up, untimed
        for name, fn in timers.items():
            time.sleep(0.25)  # spinning worker threads (OpenBLAS's, OpenMP's) settle before the next epoch
            s = fn()
            if epoch:
                runs[name].append(s)
    print(f"{floor.x.shape[0]:,} examples ({source}), {INPUT}-{HIDDEN}-{LATENT}, batch {BATCH}, float32; "
          f"split over {parts} cores (Numba threading layer {numba.threading_layer()}); seconds per epoch")
    med = {name: statistics.median(s) for name, s in runs.items()}
    for name, s in runs.items():
        print(f"{name:>16}: {' '.join(f'{t:.3f}' for t in s)}   median {med[name]:.3f}")
    print(f"split/floor: {med['split'] / med['floor']:.3f}   "
          f"floor, 1 thread/floor: {med['floor, 1 thread'] / med['floor']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
