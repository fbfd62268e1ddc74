#!/usr/bin/env python
"""A measured prototype: one thread pool for OpenBLAS's products *and* Adam.

`adam_threads.py` shows why npvae's Adam stays on one core: after every
matrix product OpenBLAS's worker thread spins on the second core, so a second
Adam thread only gets that core in scheduler slices. This script removes the
conflict instead of working around it. OpenBLAS (0.3.27 and later) can hand
its parallel jobs to the application (`openblas_set_threads_callback_function`).
Here a Numba ``cfunc`` takes them and gives all but the first to one worker
thread of ours (a Numba loop that releases the GIL), and the same worker
runs half of each Adam update. Both cores then serve whichever kind of work
comes next.

Two copies of the default model (784-400-20, batch 128, float32, Adam
lr 1e-3) start from the same weights and train on the same batches with the
same noise, alternating epochs in one process:

* ``default``: ``npvae.train(..., fused=False)`` with ``npvae.Adam`` (the layer
  path: serial, OpenBLAS's own threads);
* ``pool``: the same ``npvae.train``, its parameters and gradients laid out in
  one flat block so one Adam call covers them, the update split in two halves
  and the products run by the shared pool.

Printed: the median milliseconds per training step of each epoch (from
``on_batch`` timestamps), their medians and the ratio. At the end the two
models' parameters must be bit-identical (the pool changes who computes,
not what), or the script fails.

This is a measurement, not part of npvae: the worker spins while training
runs and never sleeps, it serves exactly two threads, and it is not
re-entrant. What a production version needs is in benchmarks/README.md.

    python benchmarks/shared_pool.py                  # 30,000 examples, 8 epochs each
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import ctypes
import statistics
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import npvae  # noqa: E402
from npvae import kernels  # noqa: E402
from npvae.optim import adam_kernel_args  # noqa: E402

SETTERS = ("scipy_openblas_set_threads_callback_function64_", "openblas_set_threads_callback_function")


def find_callback_setter() -> ctypes._CFuncPtr | None:
    """OpenBLAS's ``set_threads_callback_function`` in the library NumPy loaded, or None."""
    for info in threadpool_info():
        if info.get("internal_api") != "openblas":
            continue
        lib = ctypes.CDLL(info["filepath"])
        for name in SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_void_p], None
                return fn
    return None


# ---------------------------------------------------------------- LLVM-level helpers
@intrinsic
def _call_job(typingctx, fn, index, data, flag):  # type: ignore[no-untyped-def]
    """Call OpenBLAS's ``void dojob(int, void *, int)`` through its address."""
    sig = types.void(types.int64, types.int32, types.int64, types.int32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32), i8p, ir.IntType(32)])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1], builder.inttoptr(args[2], i8p), args[3]])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _load(typingctx, addr):  # type: ignore[no-untyped-def]
    """An acquiring 64-bit load (the spin loops must re-read memory every time)."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.load_atomic(builder.inttoptr(args[0], ir.IntType(64).as_pointer()), "acquire", 8)

    return sig, codegen


@intrinsic
def _store(typingctx, addr, value):  # type: ignore[no-untyped-def]
    """A releasing 64-bit store."""
    sig = types.void(types.int64, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.store_atomic(args[1], builder.inttoptr(args[0], ir.IntType(64).as_pointer()), "release", 8)
        return context.get_dummy_value()

    return sig, codegen


# The control block: state, then a BLAS job's function, data and flag, then an Adam half's range.
IDLE, BLAS_JOB, DONE, ADAM_JOB, QUIT = 0, 1, 2, 3, -1
CTL = np.zeros(8, np.int64)
CTL_ADDR = CTL.ctypes.data
S_STATE, S_FN, S_DATA, S_FLAG, S_LO, S_HI = (8 * i for i in range(6))


@numba.njit(nogil=True)
def _worker(ctl, p, g, m, v, sc, sq):  # type: ignore[no-untyped-def]
    while True:
        state = _load(ctl + S_STATE)
        if state == BLAS_JOB:
            _call_job(_load(ctl + S_FN), np.int32(1), _load(ctl + S_DATA), np.int32(_load(ctl + S_FLAG)))
            _store(ctl + S_STATE, DONE)
        elif state == ADAM_JOB:
            lo, hi = _load(ctl + S_LO), _load(ctl + S_HI)
            sq[0] = kernels.adam_update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi],
                                        sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6])
            _store(ctl + S_STATE, DONE)
        elif state == QUIT:
            return


@numba.cfunc(types.void(types.int32, types.int64, types.int32, types.uint64, types.int64, types.int32), nogil=True)
def _blas_callback(sync, fn, n_jobs, job_size, jobs, flag):  # type: ignore[no-untyped-def]
    """OpenBLAS's jobs for one product: job 1 to the worker, job 0 here, then wait."""
    ctl = CTL_ADDR
    if n_jobs > 1:  # the pool has two threads, so OpenBLAS (limited to 2) never sends more than 2
        _store(ctl + S_FN, fn)
        _store(ctl + S_DATA, jobs + job_size)
        _store(ctl + S_FLAG, flag)
        _store(ctl + S_STATE, BLAS_JOB)
    _call_job(fn, np.int32(0), jobs, np.int32(flag))
    if n_jobs > 1:
        while _load(ctl + S_STATE) != DONE:
            pass
        _store(ctl + S_STATE, IDLE)


@numba.njit(nogil=True)
def _adam_two_halves(ctl, p, g, m, v, sc, sq):  # type: ignore[no-untyped-def]
    n = p.size
    half = n // 2 // 512 * 512  # whole chunks of the kernel's gradient-norm sum on this side
    _store(ctl + S_LO, half)
    _store(ctl + S_HI, n)
    _store(ctl + S_STATE, ADAM_JOB)
    mine = kernels.adam_update(p[:half], g[:half], m[:half], v[:half], sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6])
    while _load(ctl + S_STATE) != DONE:
        pass
    _store(ctl + S_STATE, IDLE)
    return mine + sq[0]


# ---------------------------------------------------------------- the model laid out flat
def flatten(vae: npvae.VAE) -> tuple[np.ndarray, np.ndarray]:
    """Move every parameter and gradient of ``vae`` into one flat array each (values kept)."""
    total = vae.n_params
    flat_p, flat_g = np.zeros(total, vae.dtype), np.zeros(total, vae.dtype)
    offset = 0
    for name, layer in vae._named_layers():
        for k in ("W", "b"):
            a = layer.params[k]
            p = flat_p[offset:offset + a.size].reshape(a.shape)
            p[...] = a
            g = flat_g[offset:offset + a.size].reshape(a.shape)
            vae._rebind_param(f"{name}.{k}", p, g)  # in the layer and in both mappings (they are read-only)
            offset += a.size
    return flat_p, flat_g


class PooledAdam:
    """Adam (the same kernel, the same scalars as ``npvae.Adam``) over flat arrays, in two halves."""

    def __init__(self, flat_p: np.ndarray, flat_g: np.ndarray, lr: float = 1e-3) -> None:
        self.p, self.g = flat_p, flat_g
        self.m, self.v = np.zeros_like(flat_p), np.zeros_like(flat_p)
        self.lr, self.betas, self.eps, self.t = lr, (0.9, 0.999), 1e-8, 0
        self.sc = np.zeros(7, flat_p.dtype)
        self.sq = np.zeros(1)

    def step(self, params: dict, grads: dict) -> float:
        self.t += 1
        self.sc[:] = adam_kernel_args(self.lr, self.betas, self.eps, self.t, self.p.dtype)
        return _adam_two_halves(CTL_ADDR, self.p, self.g, self.m, self.v, self.sc, self.sq)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=8, help="timed epochs per model, alternating")
    ap.add_argument("--data", default=_common.DEFAULT_DATA)
    args = ap.parse_args(argv)

    x, source = _common.load_bench_data(args.data, args.examples)
    npvae.warmup()
    setter = find_callback_setter()
    if setter is None:
        print("this NumPy's BLAS is not an OpenBLAS with set_threads_callback_function (0.3.27+): nothing to measure")
        return 0

    f = np.float32
    plain = npvae.VAE(784, (400,), 20, seed=0, dtype=f)
    pooled = npvae.VAE(784, (400,), 20, seed=0, dtype=f)
    pooled_opt = PooledAdam(*flatten(pooled))
    runs = {"default": (plain, npvae.Adam(lr=1e-3), False), "pool": (pooled, pooled_opt, True)}
    per_step: dict[str, list[float]] = {k: [] for k in runs}
    print(f"{args.examples:,} examples ({source}), batch 128, float32, 2 threads; ms per step, median of each epoch")
    with threadpool_limits(limits=2):
        for epoch in range(args.epochs + 1):  # epoch 0 warms both up, untimed
            for name in (list(runs) if epoch % 2 == 0 else list(reversed(runs))):
                vae, opt, use_pool = runs[name]
                stamps: list[float] = []
                worker = None
                if use_pool:  # the worker spins: it runs only during the pool's own epochs
                    CTL[0] = IDLE
                    worker = threading.Thread(target=_worker, daemon=True, args=(
                        CTL_ADDR, pooled_opt.p, pooled_opt.g, pooled_opt.m, pooled_opt.v, pooled_opt.sc, pooled_opt.sq))
                    worker.start()
                    setter(_blas_callback.address)
                try:
                    npvae.train(vae, x, epochs=1, batch_size=128, optimizer=opt, seed=epoch, fused=False,
                                on_batch=lambda *a: stamps.append(time.perf_counter()))
                finally:
                    if worker is not None:
                        setter(None)
                        CTL[0] = QUIT
                        worker.join()
                if epoch:
                    per_step[name].append(statistics.median(np.diff(stamps)) * 1e3)
    for name, ms in per_step.items():
        print(f"{name:>8}: {' '.join(f'{t:5.2f}' for t in ms)}   median {statistics.median(ms):5.2f} ms")
    ratio = statistics.median(per_step["pool"]) / statistics.median(per_step["default"])
    print(f"pool/default: {ratio:.3f}")
    same = all(np.array_equal(plain.params[k], pooled.params[k]) for k in plain.params)
    print("parameters after training:", "bit-identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
