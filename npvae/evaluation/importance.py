"""The importance-weighted estimate of log p(x) (Burda et al. 2015), in bounded memory.

See :func:`log_likelihood` and docs/derivation.md, Eq. (L1).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from .._validate import check_data, check_int, check_rng
from ..kernels import LOGVAR_MAX
from . import kernels as EK

#: Bytes of decoder output per chunk. The decoder's layers keep work buffers
#: for the chunk's rows (about 3.6x this for a 784-400-20 model, float32 or
#: float64), which the model keeps for its next call, as it does for evaluate.
LOGITS_BYTES = 32 * 2**20


def check_vae(vae: object) -> Any:
    """``vae`` itself if it is an :class:`npvae.VAE`, else a ``TypeError`` naming what was passed."""
    from ..vae import VAE

    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be an npvae.VAE, got {type(vae).__name__}")
    for name, p in vae.params.items():
        if not np.all(np.isfinite(p)):
            raise ValueError(f"vae.params[{name!r}] contains NaN or infinite values: the model cannot be "
                             "evaluated (a diverged training run?)")
    return vae


def model_lock(vae: Any) -> contextlib.AbstractContextManager[Any]:
    """The model's own lock (its decoder work buffers are shared with every other call on it)."""
    lock = getattr(vae, "_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def posterior(vae: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, logvar)`` of q(z | x) in float64, with logvar as the model's sampler uses it.

    That is: clipped to ``vae.logvar_bounds = (lo, hi)`` when the model has
    them (a hardtanh on the head's output), then clamped from above at
    :data:`npvae.kernels.LOGVAR_MAX` as :func:`npvae.kernels.reparam_kl_forward` does.
    Both are no-ops on a logvar already inside them, so this is right whether
    or not ``vae.encode`` applies the bounds itself.
    """
    mu, logvar = vae.encode(x)
    mu = np.asarray(mu, np.float64)
    logvar = np.asarray(logvar, np.float64)
    bounds = getattr(vae, "logvar_bounds", None)
    if bounds is not None:
        lo, hi = bounds
        logvar = np.clip(logvar, lo, hi)
    return mu, np.minimum(logvar, LOGVAR_MAX)


def likelihood_constants(vae: Any) -> tuple[int, float, float]:
    """``(kind, inv_two_var, const)`` for :func:`kernels.add_log_px` (Eqs. (B1), (G1))."""
    if vae.likelihood == "bernoulli":
        return EK.BERNOULLI, 0.0, 0.0
    s = float(vae.sigma_dec)
    return EK.GAUSSIAN, 1.0 / (2.0 * s * s), -vae.input_dim * (math.log(s) + 0.5 * math.log(2.0 * math.pi))


def check_binary_for_bernoulli(vae: Any, x: object) -> np.ndarray:
    """The data for a log-likelihood: checked, in the model's dtype, and 0/1 for a Bernoulli decoder.

    Integer or boolean arrays holding only 0 and 1 (what
    :func:`npvae.datasets.binarize` returns for uint8 pixels) are accepted
    for the Bernoulli decoder and converted.
    """
    if (vae.likelihood == "bernoulli" and isinstance(x, np.ndarray) and x.ndim == 2 and x.size
            and (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_)
            and np.all((x == 0) | (x == 1))):
        x = x.astype(vae.dtype)
    x = check_data("x", x, width=vae.input_dim, dtype=vae.dtype)
    if vae.likelihood == "bernoulli":
        bad = (x != 0) & (x != 1)
        if bad.any():
            idx = np.argwhere(bad)[0]
            lo, hi = float(np.min(x)), float(np.max(x))
            scale = " (pixels 0..255? divide by 255 first)" if hi > 1.0 else ""
            raise ValueError(
                f"x must be binary (0 or 1) for the log-likelihood of a Bernoulli decoder: got "
                f"{int(bad.sum())} other value(s), e.g. {float(x[tuple(idx)]):g} at {tuple(int(i) for i in idx)}, "
                f"values in [{lo:g}, {hi:g}]{scale}. On grey levels the Bernoulli 'likelihood' is a cross-entropy, "
                "not the log of a normalised density, so no log p(x) exists to estimate "
                "(docs/derivation.md, Eqs. (B1) and (L1)). Evaluate fixed binary draws of the images: "
                "npvae.datasets.binarize(x, seed=0)")
    return x


def plan_chunks(n: int, k: int, batch_size: int | None, max_rows: int) -> tuple[int, int]:
    """``(b, kc)``: examples per chunk and samples per example per chunk, ``b * kc <= max(max_rows, b)``.

    With ``batch_size=None``, ``b`` is the most examples whose ``k`` samples
    fit in ``max_rows`` rows (at least 1), evened out over the chunks so the
    last one is not nearly empty. When even one example's ``k`` samples do
    not fit, ``b = 1`` and the samples are split into near-equal chunks. A
    given ``batch_size`` is used as is (capped at ``n``); its samples are
    split when ``batch_size * k`` rows would not fit.
    """
    if batch_size is None:
        b_max = max(1, min(n, max_rows // k))
        b = -(-n // -(-n // b_max))
    else:
        b = min(batch_size, n)
    kc_max = max(1, min(k, max_rows // b))
    kc = -(-k // -(-k // kc_max))
    return b, kc


def log_likelihood(vae: Any, x: np.ndarray, k: int = 5000, batch_size: int | None = None,
                   rng: np.random.Generator | int | None = None) -> np.ndarray:
    r"""Importance-weighted estimate of :math:`\log p(x)` per example, in nats (docs/derivation.md, Eq. (L1)).

    .. math::
        \log \hat p_k(x) = \log \frac1k \sum_{s=1}^{k}
            \frac{p(x \mid z_s)\, p(z_s)}{q(z_s \mid x)},\qquad
        z_s = \mu + e^{\mathrm{logvar}/2} \odot \epsilon_s,\ \epsilon_s \sim \mathcal N(0, I)

    the bound of Burda et al. (2015): its expectation is at most
    :math:`\log p(x)`, never below the ELBO (k = 1), rises with ``k`` and
    tends to :math:`\log p(x)`. The log-mean-exp over the ``k`` samples is
    taken as a running log-sum-exp per example in float64, so it is exact
    however negative the log-weights are (a 784-pixel image has log-weights
    near -100 nats, whose exponential is 0 in float32 and a Gaussian
    decoder's can be far below float64's -745).

    Parameters
    ----------
    vae
        An :class:`npvae.VAE` (either likelihood, float32 or float64). Its
        ``logvar_bounds``, when it has them, and the clamp at 30 are applied
        to logvar as in training.
    x : (n, input_dim) float array
        For the Bernoulli decoder, exactly 0/1 values (see Raises); integer
        or boolean 0/1 arrays are accepted too.
    k
        Importance samples per example (an int >= 1). ``k = 1`` gives an
        unbiased one-sample estimate of the ELBO.
    batch_size
        Examples per chunk. ``None`` (the default) chooses it from ``k`` so
        that a chunk holds about :data:`LOGITS_BYTES` (32 MB) of decoder
        output; a chunk holds fewer samples per example when the ``k``
        samples of ``batch_size`` examples would exceed that.
    rng
        A Generator or an int seed for the noise; ``None`` means a fresh
        ``default_rng(0)``, so the same model and data give the same numbers.
        The noise is drawn in float64 whatever the model's dtype, example by
        example (the ``(n, k, K)`` array of ``rng.standard_normal((n, k, K))``),
        so the result does not depend on ``batch_size`` (to rounding) unless
        the samples of more than one example are split across chunks, and a
        float32 and a float64 model see the same noise.

    Returns
    -------
    np.ndarray
        Shape (n,), float64: the estimate for each example, in nats. Average
        it for the dataset's figure (the mean is what rises with ``k``).

    Raises
    ------
    TypeError
        ``vae`` is not a VAE, ``k`` or ``batch_size`` is not an int, ``x`` is
        not a float array (or 0/1 integers), ``rng`` is not a Generator or seed.
    ValueError
        ``k < 1``; ``x`` of the wrong shape, empty, or with NaN/inf; a
        Bernoulli model and ``x`` not exactly 0/1. The last is refused on
        purpose: on grey levels the Bernoulli "likelihood" is not a
        normalised density, so there is no log-likelihood to estimate
        (derivation, Eq. (B1)); binarize the data with
        :func:`npvae.datasets.binarize` and evaluate that.

    Notes
    -----
    Cost: ``n * k`` decoder passes. The decoder's products run through
    NumPy's matmul on ``(b * kc, K)`` codes (BLAS on every core), the
    log-densities in a compiled kernel split over Numba's threads. Memory is
    bounded by the chunk, not by ``n`` or ``k``.
    """
    vae = check_vae(vae)
    k = check_int("k", k)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
    x = check_binary_for_bernoulli(vae, x)
    rng = check_rng("rng", rng, 0)
    n, latent = x.shape[0], vae.latent_dim
    max_rows = max(1, LOGITS_BYTES // (vae.input_dim * vae.dtype.itemsize))
    b, kc = plan_chunks(n, k, batch_size, max_rows)
    rows_max = b * kc
    kind, inv_two_var, const = likelihood_constants(vae)

    import numba

    n_blocks = max(1, numba.get_num_threads())
    z = np.zeros((rows_max, latent), vae.dtype)
    eps_buf = np.empty((rows_max, latent), np.float64)
    lw = np.empty(rows_max, np.float64)
    m = np.full(n, -np.inf)
    s = np.zeros(n)
    with model_lock(vae):
        mu, logvar = posterior(vae, x)
        sigma = np.exp(0.5 * logvar)
        half_lv = 0.5 * logvar.sum(axis=1)
        for start in range(0, n, b):
            nb = min(b, n - start)
            sl = slice(start, start + nb)
            for s0 in range(0, k, kc):
                kcu = min(kc, k - s0)
                rows = nb * kcu
                eps = eps_buf[:rows]
                rng.standard_normal(out=eps)
                EK.draw_codes(mu[sl], sigma[sl], half_lv[sl], eps, kcu, z, lw)
                # always rows_max rows (the tail of z holds the last chunk's codes): one row count, so
                # the decoder's layers keep one set of work buffers however n and k divide
                out = vae._decode_raw(z)
                EK.add_log_px(out, x[sl], kcu, rows, kind, inv_two_var, const, min(n_blocks, rows), lw)
                EK.lse_accumulate(lw, kcu, nb, m[sl], s[sl])
    return m + np.log(s) - math.log(k)
