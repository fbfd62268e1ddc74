"""Numba kernels of the evaluation package: per-sample log-densities and a running log-sum-exp.

Each function is plain Python over arrays, compiled once by
:func:`npvae._jit.jit` (``NUMBA_DISABLE_JIT=1`` runs them as written).
:mod:`npvae.evaluation.reference` holds the plain NumPy twin of each, and
the tests hold the two to 1e-12 in float64.

Row layout
----------
A chunk holds ``b`` examples and ``kc`` samples of z for each, **example-major**:
row ``r = i * kc + s`` is sample ``s`` of example ``i`` of the chunk, so the
samples of one example are contiguous (the log-sum-exp reads them in one run)
and the noise of the whole evaluation, drawn chunk after chunk, is the
``(n, k, K)`` array of one big draw (see :func:`npvae.evaluation.log_likelihood`).
This is *not* the sample-major order ``s * b + i`` of the training step (Eq. (E1)).

Every sum that becomes a log-density is accumulated in float64 whatever the
dtype of the decoder's output (docs/derivation.md, Eq. (L1)).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._jit import jit
from ..kernels import _exp_nonpositive, _exp_nonpositive_any, _log1p_sum

BERNOULLI, GAUSSIAN = 0, 1


def draw_codes(mu: np.ndarray, sigma: np.ndarray, half_logvar_sum: np.ndarray, eps: np.ndarray,
               kc: int, z: np.ndarray, lw: np.ndarray) -> None:
    r"""Codes ``z = mu + sigma * eps`` for the decoder and ``log p(z) - log q(z|x)`` per row.

    .. math::
        z_r = \mu_i + \sigma_i \odot \epsilon_r,\qquad
        \log p(z_r) - \log q(z_r \mid x_i)
          = \tfrac12 \textstyle\sum_c \big(\epsilon_{rc}^2 - z_{rc}^2 + \mathrm{logvar}_{ic}\big)

    with ``i = r // kc`` (the two ``K/2 log 2 pi`` cancel). ``z`` is computed
    in float64 and then rounded to the decoder's dtype when stored; the
    log-ratio uses the float64 value (docs/derivation.md, Eq. (L1)).

    Parameters
    ----------
    mu, sigma : (b, K) float64
        Posterior mean and standard deviation ``exp(logvar / 2)`` of the chunk's examples.
    half_logvar_sum : (b,) float64
        ``0.5 * sum_c logvar_ic`` per example.
    eps : (rows, K) float64
        Standard-normal noise, ``rows = b * kc`` or fewer (the last chunk).
    kc : int
        Samples per example in this chunk.
    z : (R, K), R >= rows, the decoder's dtype
        Output: rows ``[0, rows)`` are written, later rows are left alone.
    lw : (R,) float64
        Output: ``lw[r] = log p(z_r) - log q(z_r | x_i)`` for ``r < rows``.
    """
    rows, k = eps.shape
    for r in range(rows):
        i = r // kc
        er, zr, mr, sr = eps[r], z[r], mu[i], sigma[i]
        acc = 0.0
        for c in range(k):
            e = er[c]
            v = mr[c] + sr[c] * e
            zr[c] = v
            acc += e * e - v * v
        lw[r] = 0.5 * acc + half_logvar_sum[i]


draw_codes = jit(draw_codes)


def _bernoulli_row(lr: np.ndarray, xr: np.ndarray, tmp: np.ndarray) -> float:
    r""":math:`\log p(x \mid z) = \sum_j x_j l_j - \mathrm{softplus}(l_j)` for one row of logits, in float64.

    ``softplus(l) = max(l, 0) + log1p(exp(-|l|))`` (Eq. (B1)); ``exp(-|l|)`` is
    computed in the logits' precision into ``tmp`` (vectorized), and the sum
    of the ``log1p`` terms comes from :func:`npvae.kernels._log1p_sum`.
    """
    p = lr.shape[0]
    row = 0.0
    for j in range(p):
        lv = lr[j]
        tmp[j] = _exp_nonpositive_any(-abs(lv))
        l64 = np.float64(lv)
        row += np.float64(xr[j]) * l64 - max(l64, 0.0)
    return row - _log1p_sum(tmp, p)


_bernoulli_row = jit(_bernoulli_row)


def _sq_err_row(mr: np.ndarray, xr: np.ndarray) -> float:
    r""":math:`\sum_j (x_j - m_j)^2` for one row, in float64."""
    acc = 0.0
    for j in range(mr.shape[0]):
        d = np.float64(xr[j]) - np.float64(mr[j])
        acc += d * d
    return acc


_sq_err_row = jit(_sq_err_row)


def add_log_px(out: np.ndarray, x: np.ndarray, kc: int, rows: int, kind: int, inv_two_var: float,
               const: float, n_blocks: int, lw: np.ndarray) -> None:
    r"""``lw[r] += log p(x_i | z_r)`` for the rows ``r < rows`` of the decoder's output, ``i = r // kc``.

    Bernoulli (``kind == BERNOULLI``, ``out`` the logits):
    :math:`\sum_j x_{ij} l_{rj} - \mathrm{softplus}(l_{rj})` (Eq. (B1), stable form).
    Gaussian (``out`` the mean):
    :math:`-\mathrm{inv\_two\_var} \sum_j (x_{ij} - m_{rj})^2 + \mathrm{const}`,
    with ``inv_two_var = 1 / (2 sigma_dec^2)`` and
    ``const = -P (log sigma_dec + log(2 pi) / 2)`` (Eq. (G1)).

    The rows are split into ``n_blocks`` contiguous blocks run in parallel
    (``prange``); each block has its own row buffer. Shapes: out (R, P) with
    R >= rows, x (b, P) of the same dtype, lw (R,) float64.
    """
    p = out.shape[1]
    for blk in prange(n_blocks):
        r0 = blk * rows // n_blocks
        r1 = (blk + 1) * rows // n_blocks
        if kind == BERNOULLI:
            tmp = np.empty(p, out.dtype)
            for r in range(r0, r1):
                lw[r] += _bernoulli_row(out[r], x[r // kc], tmp)
        else:
            for r in range(r0, r1):
                lw[r] += const - inv_two_var * _sq_err_row(out[r], x[r // kc])


add_log_px = jit(add_log_px, parallel=True)


def lse_accumulate(lw: np.ndarray, kc: int, n_ex: int, m: np.ndarray, s: np.ndarray) -> None:
    r"""Fold ``kc`` log-weights per example into a running log-sum-exp, in place.

    For example ``i`` (rows ``i*kc .. i*kc+kc-1`` of ``lw``), with ``M`` the
    larger of the running maximum ``m[i]`` and the chunk's maximum:

    .. math::
        s_i \leftarrow s_i\,e^{m_i - M} + \textstyle\sum_r e^{lw_r - M},\qquad m_i \leftarrow M

    so that ``m[i] + log(s[i])`` is always ``log sum exp`` of every log-weight
    seen so far, and no exponential has a positive argument (no overflow,
    and the largest term is exactly 1, so the sum cannot underflow to 0).
    Start with ``m = -inf`` and ``s = 0``. Shapes: lw (>= n_ex*kc,), m, s (n_ex,) float64.
    """
    for i in range(n_ex):
        base = i * kc
        top = lw[base]
        for r in range(base + 1, base + kc):
            top = max(top, lw[r])
        new_m = max(m[i], top)
        acc = 0.0
        for r in range(base, base + kc):
            acc += _exp_nonpositive(lw[r] - new_m)
        old = m[i]
        # exp(-inf) must be 0 here: the first chunk's s is 0 and m is -inf, and 0 * exp(nan) would be nan
        scale = _exp_nonpositive(old - new_m) if old > -np.inf else 0.0
        s[i] = s[i] * scale + acc
        m[i] = new_m


lse_accumulate = jit(lse_accumulate)
