"""Binarization: grey levels read as the probabilities of a 1, and one fixed draw of them.

Dynamic binarization during training (a fresh draw every time an image is
used) lives in the training loop (:mod:`npvae.training.batches`); this module
gives the fixed draw that protocols use for validation and test sets.
"""

from __future__ import annotations

import numpy as np

_BINARIZE_CHUNK = 1 << 20  # uniforms drawn at a time: 8 MB of float64, whatever the size of x


def binarize(x: np.ndarray, seed: int | np.random.Generator = 0) -> np.ndarray:
    """One fixed Bernoulli draw per pixel: ``np.random.default_rng(seed).random(x.shape) < x``, as 0/1.

    Grey levels are probabilities here: a pixel of value 0.3 becomes 1 with
    probability 0.3. This is the binarization under which a Bernoulli
    decoder's log p(x) is a true log-likelihood (docs/derivation.md, Eqs.
    (B1) and (L1)): evaluate :func:`npvae.log_likelihood` on ``binarize(x)``,
    with the same ``seed`` every time, so that every model is scored on the
    same binary images.

    Parameters
    ----------
    x : np.ndarray, any shape
        Floating-point values in [0, 1], or ``uint8`` pixels 0..255, which
        are read as probabilities ``x / 255`` (so 0 stays 0 and 255 stays 1).
    seed
        An int seed (default 0) or a ``np.random.Generator``; never NumPy's
        global random state. The same seed gives the same draws.

    Returns
    -------
    np.ndarray
        Same shape and dtype as ``x`` (float32, float64 or uint8), values 0
        and 1. 0 and 1 (and uint8 0 and 255 -> 1) are fixed points: a uniform
        draw in [0, 1) is never below 0 and always below 1.

    Raises
    ------
    TypeError
        ``x`` is not an ndarray, or of another dtype than floating point or
        uint8; ``seed`` is not an int or a Generator.
    ValueError
        ``x`` holds NaN/inf or, for floats, values outside [0, 1] (pixels
        0..255 stored as floats: divide by 255 first).

    Notes
    -----
    The uniforms are drawn in chunks of 2**20 in the order of ``x``'s
    elements (C order), which gives exactly the draws of one
    ``rng.random(x.shape)`` call, in bounded memory.
    """
    from npvae._validate import check_rng, show

    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array, got {type(x).__name__}")
    if seed is None:
        raise TypeError("seed must be an int seed or a np.random.Generator, got None (binarize is meant to "
                        "give the same binary images every time)")
    rng = check_rng("seed", seed, 0)
    is_uint8 = x.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"x must be a floating-point array in [0, 1] or uint8 pixels 0..255, got dtype {x.dtype}")
    if x.size and not is_uint8:
        lo_v, hi_v = np.min(x), np.max(x)
        if not (np.isfinite(lo_v) and np.isfinite(hi_v)):
            raise ValueError(f"x contains {int(np.count_nonzero(~np.isfinite(x)))} NaN or infinite value(s)")
        if lo_v < 0 or hi_v > 1:
            raise ValueError(f"x must lie in [0, 1] (probabilities of a 1), got values in "
                             f"[{show(lo_v, 0.0)}, {show(hi_v, 1.0)}]" + (" (divide by 255?)" if hi_v > 1 else ""))
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, x.dtype)
    for start in range(0, flat.size, _BINARIZE_CHUNK):
        part = flat[start:start + _BINARIZE_CHUNK]
        u = rng.random(part.shape[0])
        p = part / 255.0 if is_uint8 else part
        np.less(u, p, out=out[start:start + part.shape[0]], casting="unsafe")
    return out.reshape(x.shape)
