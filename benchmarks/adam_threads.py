#!/usr/bin/env python
"""Why npvae's Adam runs on one core: a two-thread Adam, idle and right after a BLAS product.

Adam is npvae's largest cost above the matrix products (about a fifth of an
epoch at the default configuration), and it is bound by memory bandwidth, so
two cores should nearly halve it. This script measures whether they do, for
the default model's 652,824 float32 parameters, in four situations:

* ``serial``: npvae's own ``kernels.adam_update`` over the whole array;
* ``two threads``: the same kernel on each half, the halves run by Numba's
  ``prange`` (``parallel=True``), with the threading layer Numba picks;
* each of them *idle* (nothing ran for a while) and *after a GEMM* (a
  128x784 @ 784x400 product through NumPy with 2 BLAS threads ran just
  before, as in training, where Adam follows the backward pass).

Printed: the median microseconds of each, over ``--repeats`` calls. On this
project's machine (2 cores, OpenBLAS 0.3.31 with pthreads) two threads
halve Adam when idle but are several times *slower* after a GEMM: OpenBLAS's
worker thread keeps spinning on the second core for a while after each
product, so the second Adam thread waits for a time slice there. A training
step is a GEMM every few hundred microseconds, so the spin never ends.

    python benchmarks/adam_threads.py
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from npvae import kernels

N_PARAMS = 652_824  # the default 784-400-20 VAE: 784*400 + 400 + 400*40 + 40 + 20*400 + 400 + 400*784 + 784


@numba.njit(parallel=True, nogil=True)
def _adam_two_halves(p, g, m, v, step, b1, ob1, b2, ob2, inv_bc2, eps):  # type: ignore[no-untyped-def]
    n = p.size
    total = 0.0
    for t in numba.prange(2):
        lo, hi = t * n // 2, (t + 1) * n // 2
        total += kernels.adam_update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], step, b1, ob1, b2, ob2, inv_bc2, eps)
    return total


def median_us(fn: Callable[[], object], before: Callable[[], object] | None, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    f = np.float32
    p, g, m = (rng.standard_normal(N_PARAMS).astype(f) * f(0.01) for _ in range(3))
    v = np.abs(rng.standard_normal(N_PARAMS).astype(f)) * f(1e-4)
    scalars = tuple(f(s) for s in (1e-3, 0.9, 0.1, 0.999, 0.001, 1.0, 1e-8))
    a = rng.standard_normal((128, 784)).astype(f)
    w = rng.standard_normal((784, 400)).astype(f)
    out = np.empty((128, 400), f)

    def serial() -> float:
        return kernels.adam_update(p, g, m, v, *scalars)

    def two() -> float:
        return _adam_two_halves(p, g, m, v, *scalars)

    def gemm() -> None:
        np.matmul(a, w, out=out)

    check = [x.copy() for x in (p, g, m, v)], [x.copy() for x in (p, g, m, v)]
    kernels.adam_update(*check[0], *scalars)
    _adam_two_halves(*check[1], *scalars)
    assert all(np.array_equal(a, b) for a, b in zip(*check)), "the two-thread update differs from the serial one"

    with threadpool_limits(limits=2):
        serial(), two(), gemm()
        print(f"numba threading layer: {numba.threading_layer()}, {numba.get_num_threads()} threads; "
              f"{N_PARAMS:,} float32 parameters; median of {args.repeats}")
        for label, before in (("idle", None), ("after a 2-thread GEMM", gemm)):
            s = median_us(serial, before, args.repeats)
            t = median_us(two, before, args.repeats)
            print(f"{label:>22}: serial {s:8.0f} us   two threads {t:8.0f} us   ratio {t / s:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
