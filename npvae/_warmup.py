"""Compile every kernel once, up front."""

from __future__ import annotations

import time

import numpy as np


def warmup() -> float:
    """Compile (or load from Numba's on-disk cache) every kernel for float32 and float64.

    That includes :func:`npvae.fused.fused_step` for float and uint8 data,
    when NumPy's BLAS is one it can call.

    Returns the seconds it took. The first call on a machine compiles (most
    of a minute, the fused step's four versions being most of it); later
    processes load the cached machine code (about a second). Without this,
    each kernel compiles on first use.
    """
    from .optim import SGD, Adam
    from .vae import VAE

    t0 = time.perf_counter()
    for dtype in (np.float32, np.float64):
        for likelihood, activation in (("bernoulli", "relu"), ("gaussian", "tanh")):
            vae = VAE(6, (5,), 2, likelihood=likelihood, activation=activation, dtype=dtype, seed=0)
            x = np.full((3, 6), 0.5, dtype)
            vae.loss_and_grads(x)
            vae.reconstruct(x)
            Adam().step(vae.params, vae.grads)
            SGD(0.1, 0.9).step(vae.params, vae.grads)
    from . import kernels
    idx = np.arange(2)
    for dtype in (np.float32, np.float64):
        a = np.ones(4, dtype)
        kernels.scale_inplace(a, dtype(1))
        kernels.sum_squares(a)
        for src in (np.ones((3, 4), dtype), np.ones((3, 4), np.uint8)):  # train()'s float and uint8 data
            kernels.gather_rows(src, idx, dtype(1), np.empty((2, 4), dtype))
    from . import fused

    for dtype in (np.float32, np.float64):
        vae = VAE(6, (5,), 2, dtype=dtype, seed=0)
        if fused.unsupported(vae, Adam(), None, threads=False) is None:  # train()'s fast path, where it runs
            step = fused.FusedStep(vae, Adam(), parts=1)
            for src in (np.full((3, 6), 0.5, dtype), np.zeros((3, 6), np.uint8)):
                with step.one_blas_thread():
                    step(src, idx, dtype(1), np.random.default_rng(0))
    return time.perf_counter() - t0
