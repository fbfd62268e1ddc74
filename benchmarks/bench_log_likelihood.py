#!/usr/bin/env python
"""Throughput of npvae.log_likelihood: k importance samples per image on the MNIST test set.

The default 784-400-20 ReLU Bernoulli VAE (float32, seed 0, untrained unless
``--model`` names a saved one: the cost does not depend on the weights) on
the first ``--n`` of the 10,000 MNIST test images, binarized once with
``npvae.datasets.binarize(x, seed=0)``, at ``--k`` samples each (default
5000, the usual figure in papers). Reported: examples x samples per second
(decoder passes per second), seconds for the run, and the seconds the whole
test set would take at that rate (``--n 10000`` measures it instead of
extrapolating). Compilation is done in a warm-up call beforehand and not
timed.

Before NumPy loads, the environment's forced ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` are removed (benchmarks/_realblas.py when present), so
OpenBLAS runs the kernel it picks for this CPU; the output names that kernel
as threadpoolctl reports it.

    python benchmarks/bench_log_likelihood.py                 # 1,000 images, k = 5000, rate extrapolated
    python benchmarks/bench_log_likelihood.py --n 10000       # the whole test set (197 s on 2 cores, 2026-12-02)
    python benchmarks/bench_log_likelihood.py --threads 1

Output: one JSON line on stdout, then a short summary.
"""

from __future__ import annotations

import os
import sys

_FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if __name__ == "__main__":  # before NumPy loads
    try:
        import _realblas  # re-executes without the forced variables (another script's helper)

        _realblas.use_real_blas()
        _REMOVED = _realblas.removed()
    except ImportError:  # the helper is absent: drop them from this process before OpenBLAS reads them
        _REMOVED = ",".join(f"{k}={os.environ.pop(k)}" for k in _FORCED if k in os.environ) or None
else:
    _REMOVED = None

import argparse  # noqa: E402 - after the environment is fixed, before NumPy loads
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:  # run from a checkout without installing npvae
    sys.path.insert(0, str(BENCH_DIR.parent))

import numpy as np  # noqa: E402

import npvae  # noqa: E402

DEFAULT_DATA = BENCH_DIR.parents[1] / "shared" / "data" / "mnist"
TEST_SET = 10_000


def _cpu() -> str:
    """The CPU's model name where ``_realblas`` can read it, else what ``platform`` says."""
    try:
        import _realblas
    except ImportError:
        return platform.processor() or platform.machine()
    return _realblas.cpu() or platform.processor() or platform.machine()


def blas_kernel() -> list[str]:
    from threadpoolctl import threadpool_info

    return [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')}, {d.get('num_threads')} threads)"
            for d in threadpool_info() if d.get("user_api") == "blas"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with the MNIST test files (default %(default)s)")
    ap.add_argument("--n", type=int, default=1000, help="test images to evaluate (default %(default)s; 10000: all)")
    ap.add_argument("--k", type=int, default=5000, help="importance samples per image (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS and Numba threads (default: all)")
    ap.add_argument("--model", default=None, help="a model saved by VAE.save (default: untrained 784-400-20)")
    args = ap.parse_args(argv)

    x, _ = npvae.load_mnist("test", root=args.data, download=False)
    if not 1 <= args.n <= x.shape[0]:
        ap.error(f"--n must be in 1..{x.shape[0]}, got {args.n}")
    xb = npvae.datasets.binarize(x[:args.n], seed=0)
    vae = npvae.VAE.load(args.model) if args.model else npvae.VAE(784, (400,), 20, seed=0)

    import numba
    from threadpoolctl import threadpool_limits

    threads = args.threads or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        npvae.log_likelihood(vae, xb[:2], k=min(args.k, 50))  # compile (or load from the cache)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        ll = npvae.log_likelihood(vae, xb, k=args.k)
        seconds = time.perf_counter() - t0
        blas = blas_kernel()
    rate = args.n * args.k / seconds
    record = {
        "kind": "log_likelihood", "n": args.n, "k": args.k, "dtype": vae.dtype.name,
        "model": f"{vae.input_dim}-{'-'.join(map(str, vae.hidden_dims))}-{vae.latent_dim} {vae.likelihood}",
        "trained": bool(args.model), "seconds": round(seconds, 3), "warmup_seconds": round(warm, 3),
        "examples_x_samples_per_s": round(rate), "test_set_seconds": round(TEST_SET * args.k / rate, 1),
        "test_set_extrapolated": args.n != TEST_SET, "mean_log_likelihood": round(float(ll.mean()), 4),
        "threads": threads, "blas": blas, "blas_env_removed": _REMOVED,
        "cpu": _cpu(), "numpy": np.__version__, "numba": numba.__version__,
    }
    print(json.dumps(record))
    how = "extrapolated" if args.n != TEST_SET else "measured"
    print(f"log_likelihood, k = {args.k}, {args.n} binarized MNIST test images, {record['model']} {vae.dtype.name}: "
          f"{seconds:.1f} s, {rate:,.0f} examples x samples per second; the 10,000 test images: "
          f"{record['test_set_seconds']:.0f} s ({how}). BLAS: {'; '.join(blas)}; removed from the environment: "
          f"{_REMOVED}. Mean estimate {ll.mean():.2f} nats ({'trained' if args.model else 'untrained'} model).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
