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
    it, otherwise the layer path's kernels for the model's layers, logvar
    bounds or objective, and Adam's, for the model's dtype. ``False`` means
    the first training step on this machine will compile (about 10-20 s; see :func:`warm_training`); ``None`` that it
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
    else:
        checks.append(_has(_cached_signatures(kernels.gated_forward), (0, dt)))
    if getattr(vae, "objective", "elbo") == "iwae":
        checks.append(_has(_cached_signatures(kernels.iwae_latent_forward), (0, dt)))
    elif getattr(vae, "logvar_bounds", None) is not None:
        checks.append(_has(_cached_signatures(kernels.reparam_kl_forward_bounded), (0, dt)))
    if None in checks:
        return None
    return all(checks)


#: What :func:`warm_training` has already compiled or loaded in this process (see :func:`_warm_key`).
_WARMED: set[tuple] = set()


def _warm_key(cfg: dict, fused: bool, *kinds_of_data: Any) -> tuple:
    """What decides which machine code a training run needs: the model's options but its sizes, the path,
    the data's dtypes and the optimizer's kind (Numba compiles one version per combination of argument
    types)."""
    kinds = tuple(sorted((k, repr(v)) for k, v in cfg.items()
                         if k not in ("hidden_dims", "latent_dim", "input_dim", "seed", "beta", "sigma_dec")))
    return (kinds, len(cfg["hidden_dims"]), fused, *(str(d) for d in kinds_of_data))


def warm_training(vae: Any, x: np.ndarray, optimizer: Any = None, clip_norm: float | None = None,
                  scale: Any = None, *, fused: bool | None = None, binarized: bool = False,
                  x_val: np.ndarray | None = None) -> float:
    """Compile (or load from Numba's cache) what ``npvae.train(vae, x, ...)`` will run, and only that.

    A throwaway model of the same kind (the same layers, likelihood, dtype and
    options; hidden layers 8 wide, 2 latent dimensions) takes one step on the
    first rows of ``x`` and evaluates the first rows of ``x_val`` (the layer
    path also those of ``x``, as ``npvae train`` does after training), on the path
    train() will take: the fused step where ``fused`` is true (``None``:
    where it applies), for ``x``'s dtype, or for the model's when
    ``binarized`` (the batches are then gathered and binarized before the
    step); else the layer path, with the kind of optimizer given. ``vae``,
    ``optimizer`` and every Generator of the caller are not touched.
    :func:`npvae.train` calls this before its first epoch's clock starts, so
    that epoch's time is the epoch's alone; what one process has warmed
    once is not warmed again. Compiles one version of each kernel, where
    :func:`warmup` compiles all of them. Returns the seconds it took.
    """
    from .optim import SGD, Adam
    from .vae import VAE

    t0 = time.perf_counter()
    optimizer = Adam() if optimizer is None else optimizer
    cfg = vae.config() | {"hidden_dims": [8] * len(vae.hidden_dims), "latent_dim": 2, "seed": 0}
    if fused is None:
        fused = cfg.get("layer", "dense") == "dense" and _fused_applies(vae, optimizer, clip_norm)
    src_dtype = np.dtype(vae.dtype) if binarized else x.dtype
    key = _warm_key(cfg, bool(fused), src_dtype, None if x_val is None else x_val.dtype,
                    None if fused else type(optimizer).__name__)
    if key in _WARMED:
        return time.perf_counter() - t0
    tmp = VAE(**cfg)
    s = tmp.dtype.type(1 if scale is None else scale)

    def rows_of(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = np.ascontiguousarray(a[:4])
        return raw, (raw.astype(tmp.dtype) * s if raw.dtype == np.uint8 else raw.astype(tmp.dtype))

    raw, xf = rows_of(x)
    from . import kernels

    if binarized or not fused:  # the batches are gathered (the fused step otherwise gathers its own rows)
        kernels.gather_rows(raw, np.arange(raw.shape[0]), s, np.empty_like(xf))
    if not fused:
        tmp.loss_and_grads(xf)
        if clip_norm is not None:  # train()'s gradient clipping
            g = next(iter(tmp.grads.values())).reshape(-1)
            kernels.sum_squares(g)
            kernels.scale_inplace(g, g.dtype.type(1))
        (SGD(0.1, 0.9) if isinstance(optimizer, SGD) else Adam()).step(tmp.params, tmp.grads)
        tmp.evaluate(xf)
        if x_val is not None:
            tmp.evaluate(rows_of(x_val)[1])
        _WARMED.add(key)
        return time.perf_counter() - t0
    from . import fused as _fused

    step = _fused.FusedStep(tmp, Adam())
    src = xf if binarized else raw
    with step.one_blas_thread():
        step(src, np.arange(src.shape[0]), tmp.dtype.type(1) if binarized else s, np.random.default_rng(0))
    if x_val is not None:
        step.evaluate_terms(np.ascontiguousarray(x_val[:4]), scale)
    _WARMED.add(key)
    return time.perf_counter() - t0
