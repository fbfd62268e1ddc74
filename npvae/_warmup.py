"""Compile every kernel once, up front."""

from __future__ import annotations

import time
from typing import Any

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


def _cached_signatures(dispatcher: Any) -> list[tuple] | None:
    """The argument types Numba's on-disk cache holds machine code for, for the current source of
    ``dispatcher`` (an index written for an older source counts as empty); ``None`` if it cannot tell."""
    try:
        index = dispatcher._cache._cache_file._load_index()  # Numba internals: guarded, a guess at worst
        return [tuple(key[0]) for key in index]
    except Exception:  # noqa: BLE001 - no cache, JIT disabled, another Numba: cannot tell
        return None


def _has(sigs: list[tuple] | None, *wanted: tuple[int, Any]) -> bool | None:
    """Whether a signature in ``sigs`` has, at each position given, an array (or scalar) of that dtype."""
    if sigs is None:
        return None
    import numba

    def dtype_at(sig: tuple, i: int) -> Any:
        t = sig[i] if i < len(sig) else None
        return getattr(t, "dtype", t)

    return any(all(dtype_at(sig, i) == numba.from_dtype(np.dtype(dt)) for i, dt in wanted) for sig in sigs)


def _fused_applies(vae: Any, optimizer: Any, clip_norm: float | None) -> bool:
    from . import fused

    return fused.unsupported(vae, optimizer, clip_norm) is None


def training_cached(vae: Any, x: np.ndarray, optimizer: Any = None, clip_norm: float | None = None) -> bool | None:
    """Whether the machine code :func:`npvae.train` would run for ``vae`` on ``x`` is in Numba's on-disk cache.

    A cheap guess from the cache's index files (no compiling, no loading):
    the fused step for this model's dtype and ``x``'s when train() would take
    it, otherwise the layer path's dense kernels and Adam's for the model's
    dtype. ``False`` means the first training step on this machine will
    compile (about 10-20 s; see :func:`warm_training`); ``None`` that it
    cannot tell (Numba's JIT disabled, or its internals changed).
    """
    from . import kernels
    from ._jit import jit_disabled
    from .optim import Adam

    if jit_disabled():
        return None
    optimizer = Adam() if optimizer is None else optimizer
    dt = vae.dtype
    if _fused_applies(vae, optimizer, clip_norm):
        from . import fused

        return _has(_cached_signatures(fused.fused_step), (1, x.dtype), (4, dt))
    checks = [_has(_cached_signatures(kernels.adam_update), (0, dt))]
    if getattr(vae, "layer", "dense") == "dense":
        checks.append(_has(_cached_signatures(kernels.bias_act_forward), (0, dt)))
    if None in checks:
        return None
    return all(checks)


def warm_training(vae: Any, x: np.ndarray, optimizer: Any = None, clip_norm: float | None = None,
                  scale: Any = None) -> float:
    """Compile (or load from Numba's cache) what ``npvae.train(vae, x, ...)`` will run, and only that.

    A throwaway model of the same kind (the same layers, likelihood, dtype and
    options; hidden layers 8 wide, 2 latent dimensions) takes one step and an
    evaluation on the first rows of ``x``, on the path train() will take
    (the fused step, for ``x``'s dtype, where it applies; else the layer
    path). ``vae`` itself is not touched. Training after it starts with its
    kernels ready, so its first epoch's time is the epoch's alone. Compiles
    one version of each kernel, where :func:`warmup` compiles all of them.
    Returns the seconds it took.
    """
    from .optim import Adam
    from .vae import VAE

    t0 = time.perf_counter()
    optimizer = Adam() if optimizer is None else optimizer
    cfg = vae.config() | {"hidden_dims": [8] * len(vae.hidden_dims), "latent_dim": 2, "seed": 0}
    tmp = VAE(**cfg)
    rows = np.ascontiguousarray(x[:4])
    xf = rows.astype(tmp.dtype) * (1 if scale is None else tmp.dtype.type(scale))
    if cfg.get("layer", "dense") != "dense" or not _fused_applies(tmp, Adam(), clip_norm):
        tmp.loss_and_grads(xf)
        Adam().step(tmp.params, tmp.grads)
        tmp.evaluate(xf)
        return time.perf_counter() - t0
    from . import fused

    step = fused.FusedStep(tmp, Adam())
    with step.one_blas_thread():
        step(rows, np.arange(rows.shape[0]), tmp.dtype.type(1 if scale is None else scale), np.random.default_rng(0))
    step.evaluate_terms(rows, scale)
    tmp.evaluate(xf)  # the layer path's evaluation, which train() may still use (e.g. for x_val's last chunk)
    return time.perf_counter() - t0
