"""Fused elementwise kernels around the matrix products (Numba).

Each function here is plain Python over arrays, compiled once by
:func:`npvae._jit.jit` on first call. Each reads and writes every array as
few times as it can: the bias add and the activation happen in one pass, the
activation's backward and the bias gradient in one pass, the Bernoulli loss
and its gradient in one pass, and so on. :mod:`npvae.reference` holds the
plain NumPy version of each, and the tests check that the two agree.

Conventions
-----------
* Scalars are passed already cast to the arrays' dtype by the caller: a
  Python float in a float32 loop would promote it to float64 and halve the
  SIMD width.
* Sums that become a loss are accumulated in float64 whatever the dtype.
* ``kind`` selects the activation (see :data:`ACTIVATIONS`); the branch on it
  sits outside the loops so each loop stays simple enough to vectorize.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import by_precision, jit

IDENTITY, RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS = range(6)

#: Activation names and the integer code the kernels use for each.
ACTIVATIONS: dict[str, int] = {
    "identity": IDENTITY,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "tanh": TANH,
    "sigmoid": SIGMOID,
    "softplus": SOFTPLUS,
}


def _exp_nonpositive(x: float) -> float:
    """``exp(x)`` for ``x <= 0`` in float64, written so that loops vectorize.

    Numba's ``math.exp`` is a scalar libm call that stops a loop from using
    SIMD. This version reduces ``x = k ln 2 + r`` with ``|r| <= ln(2)/2``
    (Cody-Waite: ln 2 split in two parts so ``r`` is exact), evaluates a
    degree-13 Taylor polynomial of ``exp(r)`` (truncation below 1e-17), and
    builds ``2**-k`` from its bits. Relative error is below 1e-15; arguments
    below -708 are clamped (their exp, < 1e-307, is negligible next to 1
    wherever npvae uses it).
    """
    x = max(x, -708.0)
    ki = np.int64(x * -1.4426950408889634 + 0.5)
    k = np.float64(ki)
    r = (x + k * 0.6931471803691238) + k * 1.9082149292705877e-10
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (
            1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (
                1.0 / 479001600 + r / 6227020800.0))))))))))))
    return p * np.int64((1023 - ki) << 52).view(np.float64)


_exp_nonpositive = jit(_exp_nonpositive, exact=True)


_F = np.float32
_EXP32_COEF = (_F(1.0), _F(1.0), _F(1 / 2), _F(1 / 6), _F(1 / 24), _F(1 / 120), _F(1 / 720), _F(1 / 5040))
_LN2_HI32, _LN2_LO32, _INV_LN2_32 = _F(0.693359375), _F(-2.12194440e-4), _F(1.44269504)
_EXP32_MIN, _HALF32 = _F(-87.0), _F(0.5)


def _exp_nonpositive_f32(x: float) -> float:
    """``exp(x)`` for float32 ``x <= 0``, in float32 arithmetic (8 SIMD lanes instead of 4).

    The same construction as :func:`_exp_nonpositive` with float32 constants
    and a degree-7 polynomial: relative error about 6e-8, one float32
    rounding. Arguments below -87 are clamped (exp(-87) is 1.6e-38).
    """
    c = _EXP32_COEF
    x = max(x, _EXP32_MIN)
    ki = np.int32(x * -_INV_LN2_32 + _HALF32)
    k = np.float32(ki)
    r = (x + k * _LN2_HI32) + k * _LN2_LO32
    p = c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * (c[6] + r * c[7]))))))
    return p * np.int32((127 - ki) << 23).view(np.float32)


_exp_nonpositive_f32 = jit(_exp_nonpositive_f32, exact=True)

#: ``exp(x)`` for ``x <= 0`` in the precision of ``x``.
_exp_nonpositive_any = by_precision(_exp_nonpositive_f32, _exp_nonpositive)


def _exp_any_f64(x: float) -> float:
    """``exp(x)`` of either sign in float64, vectorizable: ``t = exp(-|x|)``, and ``1 / t`` for ``x > 0``.

    One more rounding than :func:`_exp_nonpositive` for positive ``x``;
    ``|x|`` beyond the clamp (708) saturates instead of giving 0 or inf.
    npvae calls it with ``logvar / 2 <= 15``.
    """
    t = _exp_nonpositive(-abs(x))
    return t if x <= 0.0 else 1.0 / t


def _exp_any_f32(x: float) -> float:
    """:func:`_exp_any_f64` in float32 (clamp at 87)."""
    t = _exp_nonpositive_f32(-abs(x))
    return t if x <= _F(0) else _F(1) / t


_exp_any_f64, _exp_any_f32 = jit(_exp_any_f64), jit(_exp_any_f32)

#: ``exp(x)`` of either sign in the precision of ``x``.
_exp_any = by_precision(_exp_any_f32, _exp_any_f64)


def _activate(v: float, kind: int, alpha: float) -> float:
    """One activation value; ``kind`` is constant over the calling loop."""
    if kind == RELU:
        return max(v, 0.0)
    if kind == LEAKY_RELU:
        return v if v > 0 else alpha * v
    if kind == TANH:
        return math.tanh(v)
    if kind == SIGMOID:
        if v >= 0:
            return 1.0 / (1.0 + math.exp(-v))
        e = math.exp(v)
        return e / (1.0 + e)
    if kind == SOFTPLUS:
        return max(v, 0.0) + math.log1p(math.exp(-abs(v)))
    return v


_activate = jit(_activate)


def bias_act_forward(y: np.ndarray, b: np.ndarray, kind: int, alpha: float) -> None:
    """``y = f(y + b)`` in place, row by row; ``y``: (n, d), ``b``: (d,).

    In place on purpose: called with a separate output that is the same
    array as the input, LLVM's runtime alias check sent the loop to its
    scalar version (43.7 us instead of 8.6 us for a 128x400 ReLU). ReLU and
    identity get their own loops because they are the hot path and
    vectorize; the others call :func:`_activate`.
    """
    n, d = y.shape
    if kind == RELU:
        zero = y.dtype.type(0)
        for r in range(n):
            yr = y[r]
            for j in range(d):
                yr[j] = max(yr[j] + b[j], zero)
    elif kind == IDENTITY:
        for r in range(n):
            yr = y[r]
            for j in range(d):
                yr[j] += b[j]
    else:
        for r in range(n):
            yr = y[r]
            for j in range(d):
                yr[j] = _activate(yr[j] + b[j], kind, alpha)


bias_act_forward = jit(bias_act_forward)


def _add_row(acc: np.ndarray, row: np.ndarray) -> None:
    """``acc += row`` for 1-D arrays: a column sum is built one row at a time while the row is in L1."""
    for j in range(acc.size):
        acc[j] += row[j]


_add_row = jit(_add_row)


def act_backward_cols(dy: np.ndarray, y: np.ndarray, dpre: np.ndarray, db: np.ndarray, kind: int, alpha: float,
                      c0: int, hi: int) -> None:
    """:func:`act_backward` on columns ``[c0, hi)`` of every row alone; only ``db[c0:hi]`` is written.

    ``dpre[:, c0:hi] = dy[:, c0:hi] * f'(.)`` and ``db[c0:hi]`` its column
    sums (docs/derivation.md, Eqs. (A1)-(A6) and (D1)); the arrays are
    (n, d) and ``db`` (d,). The fused step splits the output layer's input
    gradient over the cores by columns (Eq. (E2)), and each core applies the
    activation's derivative to its own.
    """
    n = dy.shape[0]
    zero = db.dtype.type(0)
    one = db.dtype.type(1)
    dbc = db[c0:hi]
    for j in range(hi - c0):
        dbc[j] = zero
    if kind == RELU:
        for r in range(n):
            dyr, yr, dr = dy[r, c0:hi], y[r, c0:hi], dpre[r, c0:hi]
            for j in range(hi - c0):
                dr[j] = dyr[j] if yr[j] > zero else zero
            _add_row(dbc, dr)
    elif kind == IDENTITY:
        for r in range(n):
            dyr, dr = dy[r, c0:hi], dpre[r, c0:hi]
            for j in range(hi - c0):
                dr[j] = dyr[j]
            _add_row(dbc, dr)
    else:
        for r in range(n):
            dyr, yr, dr = dy[r, c0:hi], y[r, c0:hi], dpre[r, c0:hi]
            for j in range(hi - c0):
                v = yr[j]
                if kind == LEAKY_RELU:
                    s = one if v > zero else alpha
                elif kind == TANH:
                    s = one - v * v
                elif kind == SIGMOID:
                    s = v * (one - v)
                else:  # softplus: sigmoid(x) = 1 - exp(-y)
                    s = -math.expm1(-v)
                dr[j] = dyr[j] * s
            _add_row(dbc, dr)


act_backward_cols = jit(act_backward_cols)


def act_backward(dy: np.ndarray, y: np.ndarray, dpre: np.ndarray, db: np.ndarray, kind: int, alpha: float) -> None:
    """``dpre = dy * f'(.)`` from the cached output ``y``, and ``db = sum_rows dpre``.

    The derivative is written in terms of the output (docs/derivation.md,
    Eqs. (A1)-(A6)), so forward caches only ``y``. ``dpre`` may be ``dy``.

    Each row is two short loops, ``dpre`` and then its sum into ``db``
    while the row is in L1: one loop doing both ran at half the speed
    (LLVM cannot rule out that ``db`` overlaps ``dpre``).
    """
    act_backward_cols(dy, y, dpre, db, kind, alpha, 0, dy.shape[1])


act_backward = jit(act_backward)


#: Upper clamp on logvar. exp(logvar) must stay finite in float32 (max 3.4e38)
#: through the KL gradient and everything downstream of z; at 30, sigma is
#: 3.3e6, far beyond any posterior a trained model uses (the prior has 1).
#: Above it the loss is flat in logvar and the gradient is zero.
LOGVAR_MAX = 30.0

_CHUNK = 128  # columns per running product in bernoulli_nll: at most 2**128, far from float64's limit


def _log1p_sum(t: np.ndarray, p: int) -> float:
    """``sum(log(1 + t[:p]))`` for ``t`` in [0, 1], as the logs of float64 running products of ``_CHUNK`` factors.

    One log per 128 columns instead of one per column; each product is at most
    2**128. The softplus term of the Bernoulli log-likelihood (Eq. (B1)),
    with ``t = exp(-|l|)``.
    """
    logs = 0.0
    n_chunks = p // _CHUNK
    for c in range(n_chunks):
        base = c * _CHUNK
        prod = 1.0
        for j in range(_CHUNK):  # a constant trip count: LLVM vectorizes this product, not a variable one
            prod *= 1.0 + np.float64(t[base + j])
        logs += math.log(prod)
    prod = 1.0
    for j in range(n_chunks * _CHUNK, p):
        prod *= 1.0 + np.float64(t[j])
    return logs + math.log(prod)


_log1p_sum = jit(_log1p_sum)


def bernoulli_nll(logits: np.ndarray, x: np.ndarray, dlogits: np.ndarray, scale: float, db: np.ndarray,
                  tmp: np.ndarray) -> float:
    r"""Bernoulli negative log-likelihood with logits, its gradient and bias gradient, in one pass.

    .. math::
        \ell = \sum_{r,j} \max(l_{rj}, 0) - x_{ij} l_{rj} + \log(1 + e^{-|l_{rj}|}),
        \qquad
        \mathrm{dlogits}_{rj} = s\,(\sigma(l_{rj}) - x_{ij})

    (docs/derivation.md, Eq. (B1)), with ``i = r mod B`` so that the ``L``
    Monte Carlo samples of an example (rows ``l*B + i``) share its pixels.
    One ``t = exp(-|l|)`` serves the loss and the gradient, and the sum of
    ``log1p(t)`` is taken as the log of a float64 running product (one ``log``
    per 128 columns instead of one per element).

    Each row is one pass over memory in three short loops over a row buffer
    ``tmp`` (cache resident): a single loop doing everything measured 5x
    slower, because LLVM would not vectorize it. The exponential is computed
    in the arrays' precision (:func:`_exp_nonpositive_f32` for float32,
    twice as fast); row sums are added up in float64.

    Parameters
    ----------
    logits : (L*B, P)
    x : (B, P), targets in [0, 1]
    dlogits : (L*B, P), output; may be ``logits`` itself
    scale : float, ``s`` above, 1 / (B L) for the mean negative ELBO
    db : (P,), output: column sums of ``dlogits``
    tmp : (P,) scratch of the arrays' dtype

    Returns
    -------
    float
        the summed negative log-likelihood, in float64.
    """
    n, p = logits.shape
    bx = x.shape[0]
    zero = db.dtype.type(0)
    one = db.dtype.type(1)
    for j in range(p):
        db[j] = zero
    total = 0.0
    n_chunks = p // _CHUNK
    for r in range(n):
        lr, xr, dr = logits[r], x[r % bx], dlogits[r]
        row = zero
        for j in range(p):
            lv = lr[j]
            tmp[j] = _exp_nonpositive_any(-abs(lv))
            row += max(lv, zero) - xr[j] * lv
        logs = 0.0
        for c in range(n_chunks):
            base = c * _CHUNK
            prod = 1.0
            for j in range(_CHUNK):  # a constant trip count: LLVM vectorizes this product, not a variable one
                prod *= 1.0 + np.float64(tmp[base + j])
            logs += math.log(prod)
        prod = 1.0
        for j in range(n_chunks * _CHUNK, p):
            prod *= 1.0 + np.float64(tmp[j])
        logs += math.log(prod)
        for j in range(p):
            t = tmp[j]
            s = one / (one + t)
            sig = s if lr[j] >= zero else t * s
            dr[j] = (sig - xr[j]) * scale
        _add_row(db, dr)  # fused into the loop above, the sum ran at half the speed
        total += np.float64(row) + logs
    return total


bernoulli_nll = jit(bernoulli_nll)


def gaussian_sq_err(mean: np.ndarray, x: np.ndarray, dmean: np.ndarray, scale: float, db: np.ndarray) -> float:
    r"""Squared error of a Gaussian decoder, its gradient and bias gradient, in one pass.

    Returns :math:`\sum_{r,j} (x_{ij} - m_{rj})^2` (float64) and writes
    :math:`\mathrm{dmean}_{rj} = s\,(m_{rj} - x_{ij})` with
    :math:`s = 1/(\sigma_{dec}^2 B L)` (docs/derivation.md, Eq. (G1)); the
    caller adds the constant terms of the log-density. ``i = r mod B`` as in
    :func:`bernoulli_nll`. Shapes: mean, dmean (L*B, P); x (B, P); db (P,).
    """
    n, p = mean.shape
    bx = x.shape[0]
    zero = db.dtype.type(0)
    for j in range(p):
        db[j] = zero
    total = 0.0
    for r in range(n):
        mr, xr, dr = mean[r], x[r % bx], dmean[r]
        row = 0.0
        for j in range(p):
            diff = mr[j] - xr[j]
            row += np.float64(diff) * np.float64(diff)
            dr[j] = diff * scale
        _add_row(db, dr)
        total += row
    return total


gaussian_sq_err = jit(gaussian_sq_err)


def reparam_kl_forward(ml: np.ndarray, eps: np.ndarray, z: np.ndarray, sigma: np.ndarray) -> float:
    r"""Reparameterized samples and the KL to the prior, in one pass.

    With ``mu = ml[:, :K]`` and ``logvar = min(ml[:, K:], LOGVAR_MAX)``:

    .. math::
        \sigma = e^{\mathrm{logvar}/2}, \quad
        z_{lB+i} = \mu_i + \sigma_i \odot \epsilon_{l,i}, \quad
        \mathrm{KL} = \tfrac12 \sum_{i,k} \mu_{ik}^2 + \sigma_{ik}^2 - 1 - \mathrm{logvar}_{ik}

    (docs/derivation.md, Eqs. (R1) and (K1)). Shapes: ml (B, 2K); eps
    (L, B, K); z (L*B, K) output; sigma (B, K) output, cached for backward.
    Returns the KL summed over the batch, in float64.

    Each row runs as short loops over contiguous columns (sigma and the KL,
    then one loop per sample), with the vectorizable :func:`_exp_any`: a
    loop over ``c`` with the samples inside it, calling ``np.exp``, ran
    scalar (52 us for 128x20 in float32, against 6 us now).
    """
    b, k2 = ml.shape
    k = k2 // 2
    n_samples = eps.shape[0]
    lv_max = ml.dtype.type(LOGVAR_MAX)
    half = ml.dtype.type(0.5)
    total = 0.0
    for i in range(b):
        mr, sr = ml[i], sigma[i]
        for c in range(k):
            mu = mr[c]
            lv = min(mr[k + c], lv_max)
            s = _exp_any(lv * half)
            sr[c] = s
            total += 0.5 * (np.float64(mu) * mu + np.float64(s) * s - 1.0 - lv)
        for sample in range(n_samples):
            zr, er = z[sample * b + i], eps[sample, i]
            for c in range(k):
                zr[c] = mr[c] + sr[c] * er[c]
    return total


reparam_kl_forward = jit(reparam_kl_forward)


def reparam_kl_backward(dz: np.ndarray, eps: np.ndarray, ml: np.ndarray, sigma: np.ndarray,
                        dml: np.ndarray, db: np.ndarray, kl_scale: float) -> None:
    r"""Gradient of the loss with respect to ``[mu | logvar]``, and the head's bias gradient.

    .. math::
        \mathrm{dmu} = \sum_l \mathrm{dz}_l + c\,\mu, \qquad
        \mathrm{dlogvar} = \sum_l \mathrm{dz}_l \odot \epsilon_l \odot \sigma / 2
                           + c\,(\sigma^2 - 1)/2

    with ``c = beta / B`` (docs/derivation.md, Eqs. (R1), (K1)); ``dlogvar`` is
    0 where logvar was clamped at :data:`LOGVAR_MAX`. Shapes: dz
    (L*B, K); eps (L, B, K); ml, dml (B, 2K); sigma (B, K) from forward; db
    (2K,) output, the column sums of ``dml``. Row by row in short
    contiguous loops, as in :func:`reparam_kl_forward`.
    """
    b, k2 = ml.shape
    k = k2 // 2
    n_samples = eps.shape[0]
    half = ml.dtype.type(0.5)
    one = ml.dtype.type(1)
    zero = ml.dtype.type(0)
    lv_max = ml.dtype.type(LOGVAR_MAX)
    for j in range(k2):
        db[j] = zero
    for i in range(b):
        mr, sr, dr = ml[i], sigma[i], dml[i]
        for c in range(k):
            s = sr[c]
            dr[c] = kl_scale * mr[c]
            dr[k + c] = kl_scale * half * (s * s - one)
        for sample in range(n_samples):
            dzr, er = dz[sample * b + i], eps[sample, i]
            for c in range(k):
                g = dzr[c]
                dr[c] += g
                dr[k + c] += g * er[c] * sr[c] * half
        for c in range(k):
            dr[k + c] = dr[k + c] if mr[k + c] <= lv_max else zero
        _add_row(db, dr)


reparam_kl_backward = jit(reparam_kl_backward)


#: Elements per chunk in the optimizer kernels: each chunk's ``sum(g**2)`` is
#: accumulated in the arrays' own precision (so float32 keeps its full SIMD
#: width), then added to a float64 total.
_SQ_CHUNK = 512


def _adam_one(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, j: int, step: float,
              b1: float, one_minus_b1: float, b2: float, one_minus_b2: float, inv_bc2: float,
              eps: float) -> float:
    """Adam on element ``j``; returns ``g[j]**2`` in the arrays' dtype."""
    tiny = np.finfo(p.dtype).tiny
    zero = p.dtype.type(0)
    gj = g[j]
    gg = gj * gj
    mj = b1 * m[j] + one_minus_b1 * gj
    vj = b2 * v[j] + one_minus_b2 * gg
    mj = mj if abs(mj) >= tiny else zero
    vj = vj if vj >= tiny else zero
    m[j] = mj
    v[j] = vj
    p[j] -= step * mj / (np.sqrt(vj * inv_bc2) + eps)
    return gg


_adam_one = jit(_adam_one)


def adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, step: float,
                b1: float, one_minus_b1: float, b2: float, one_minus_b2: float,
                inv_bc2: float, eps: float) -> float:
    r"""One Adam step over a flat parameter array, in place, in one pass.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
        p \leftarrow p - \frac{\eta}{1-\beta_1^t} \frac{m}{\sqrt{v/(1-\beta_2^t)} + \epsilon}

    which is the textbook bias-corrected update (docs/derivation.md, Eq. (O1))
    with ``step = lr / (1 - beta1**t)`` and ``inv_bc2 = 1 / (1 - beta2**t)``.
    All arrays 1-D and of one length. Returns ``sum(g**2)`` as a float64, so
    the caller sees a non-finite gradient without another pass. Each chunk of
    :data:`_SQ_CHUNK` elements is summed in the arrays' precision (relative
    error below ``_SQ_CHUNK`` units of roundoff) and a chunk whose float32
    sum overflows is summed again in float64, so a finite gradient never
    reports an infinite norm. A float64 accumulator in the loop itself halves
    float32's SIMD width: summing by chunks instead made this kernel take
    0.65-0.76 of the time for 16,000 float32 parameters and 0.81-0.94 for
    652,824, where memory bandwidth matters more (three runs).

    Moments smaller than the dtype's smallest normal number are flushed to
    zero. A unit whose gradient has become 0 (a dead ReLU, an unused latent
    dimension) otherwise sees ``m`` decay by ``beta1`` per step through the
    denormal range, where every operation takes a microcode assist: measured,
    it doubled the epoch time after two epochs. The change to an update is
    below ``lr * 1e-38 / eps``.
    """
    n = p.size
    # ``part <= big`` is False for inf and NaN. np.isfinite(part) compiled to True in this loop:
    # Numba tests x - x, which reassociation may fold to 0. A comparison survives fastmath.
    big = np.finfo(p.dtype).max
    sq = 0.0
    for c in range(n // _SQ_CHUNK):
        base = c * _SQ_CHUNK
        part = p.dtype.type(0)
        for i in range(_SQ_CHUNK):  # a constant trip count, so LLVM vectorizes it
            part += _adam_one(p, g, m, v, base + i, step, b1, one_minus_b1, b2, one_minus_b2, inv_bc2, eps)
        sq += part if part <= big else sum_squares(g[base:base + _SQ_CHUNK])
    for j in range(n - n % _SQ_CHUNK, n):
        _adam_one(p, g, m, v, j, step, b1, one_minus_b1, b2, one_minus_b2, inv_bc2, eps)
        sq += np.float64(g[j]) * g[j]
    return sq


adam_update = jit(adam_update)


def _sgd_one(p: np.ndarray, g: np.ndarray, buf: np.ndarray, j: int, lr: float, momentum: float) -> float:
    """SGD with momentum on element ``j``; returns ``g[j]**2`` in the arrays' dtype."""
    tiny = np.finfo(p.dtype).tiny
    gj = g[j]
    bj = momentum * buf[j] + gj
    bj = bj if abs(bj) >= tiny else p.dtype.type(0)
    buf[j] = bj
    p[j] -= lr * bj
    return gj * gj


_sgd_one = jit(_sgd_one)


def sgd_momentum_update(p: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float, momentum: float) -> float:
    r"""One SGD-with-momentum step, in place: :math:`b \leftarrow \mu b + g,\ p \leftarrow p - \eta b`.

    (docs/derivation.md, Eq. (O2); PyTorch's convention.) 1-D arrays of one
    length. Returns ``sum(g**2)`` as a float64, summed by chunks as in
    :func:`adam_update`. The buffer is flushed to zero below the smallest
    normal number, as in :func:`adam_update`.
    """
    n = p.size
    big = np.finfo(p.dtype).max  # not np.isfinite: see adam_update
    sq = 0.0
    for c in range(n // _SQ_CHUNK):
        base = c * _SQ_CHUNK
        part = p.dtype.type(0)
        for i in range(_SQ_CHUNK):
            part += _sgd_one(p, g, buf, base + i, lr, momentum)
        sq += part if part <= big else sum_squares(g[base:base + _SQ_CHUNK])
    for j in range(n - n % _SQ_CHUNK, n):
        _sgd_one(p, g, buf, j, lr, momentum)
        sq += np.float64(g[j]) * g[j]
    return sq


sgd_momentum_update = jit(sgd_momentum_update)


def scale_inplace(a: np.ndarray, factor: float) -> None:
    """``a *= factor`` for a flat array (used by gradient clipping)."""
    for j in range(a.size):
        a[j] *= factor


scale_inplace = jit(scale_inplace)


def sum_squares(a: np.ndarray) -> float:
    """``sum(a**2)`` of a flat array, accumulated in float64."""
    s = 0.0
    for j in range(a.size):
        s += np.float64(a[j]) * a[j]
    return s


sum_squares = jit(sum_squares)


def gather_rows(src: np.ndarray, idx: np.ndarray, scale: float | np.floating, out: np.ndarray) -> None:
    """``out[i] = src[idx[i]] * scale``: one shuffled minibatch, in the model's dtype.

    ``src`` is the training set, float (``scale`` 1) or uint8 pixels (``scale``
    1/255, so each batch is converted as it is gathered). ``idx`` must lie in
    ``[0, len(src))``: nothing here checks it (:func:`npvae.train` passes a
    permutation). Measured against ``np.take(..., out=)`` on 128 random rows of
    Fashion-MNIST: 68 against 102 us for float32, and 44 against 77 us for
    uint8 with the scaling, which NumPy does in a second pass.
    """
    for i in range(idx.shape[0]):
        row, dst = src[idx[i]], out[i]
        for j in range(dst.shape[0]):
            dst[j] = row[j] * scale


gather_rows = jit(gather_rows)


# ---------------------------------------------------------------------------- gated dense layer, Eq. (H1)


def gated_forward(a: np.ndarray, g: np.ndarray, h: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    r"""The elementwise part of the gated layer, in one pass: ``a += b``, ``g = sigmoid(g + c)``, ``h = a * g``.

    On entry ``a = x W`` and ``g = x V`` (the two products); on exit ``a`` is
    the linear part ``x W + b``, ``g`` the gate ``sigmoid(x V + c)`` (two
    branches, Eq. (A4)) and ``h = a \odot g`` the output (docs/derivation.md,
    Eq. (H1)). ``a`` and ``g`` are what the backward needs. Shapes: a, g, h
    (n, d); b, c (d,).
    """
    n, d = a.shape
    one = a.dtype.type(1)
    zero = a.dtype.type(0)
    for r in range(n):
        ar, gr, hr = a[r], g[r], h[r]
        for j in range(d):
            av = ar[j] + b[j]
            v = gr[j] + c[j]
            t = _exp_nonpositive_any(-abs(v))
            s = one / (one + t)
            gv = s if v >= zero else t * s
            ar[j] = av
            gr[j] = gv
            hr[j] = av * gv


gated_forward = jit(gated_forward)


def gated_backward(dh: np.ndarray, a: np.ndarray, g: np.ndarray, da: np.ndarray, ds: np.ndarray,
                   db: np.ndarray, dc: np.ndarray) -> None:
    r"""Gradients of the gated layer's two pre-activations, and the bias gradients, in one pass.

    .. math::
        \mathrm{da} = \mathrm{dh} \odot g, \qquad
        \mathrm{ds} = \mathrm{dh} \odot a \odot g \odot (1 - g), \qquad
        \mathrm{db} = \textstyle\sum_{rows} \mathrm{da}, \quad
        \mathrm{dc} = \textstyle\sum_{rows} \mathrm{ds}

    with ``a = x W + b`` and ``g = sigmoid(x V + c)`` cached by
    :func:`gated_forward` (docs/derivation.md, Eq. (H1)). Shapes: dh, a, g,
    da, ds (n, d); db, dc (d,) outputs.
    """
    n, d = dh.shape
    zero = db.dtype.type(0)
    one = db.dtype.type(1)
    for j in range(d):
        db[j] = zero
        dc[j] = zero
    for r in range(n):
        dhr, ar, gr, dar, dsr = dh[r], a[r], g[r], da[r], ds[r]
        for j in range(d):
            gv = gr[j]
            u = dhr[j] * gv
            dar[j] = u
            dsr[j] = u * ar[j] * (one - gv)
        _add_row(db, dar)
        _add_row(dc, dsr)


gated_backward = jit(gated_backward)


# ---------------------------------------------------------------------------- bounded logvar, Eq. (V1)


def reparam_kl_forward_bounded(ml: np.ndarray, eps: np.ndarray, z: np.ndarray, sigma: np.ndarray,
                               lo: float, hi: float) -> float:
    r""":func:`reparam_kl_forward` with logvar passed through a hardtanh: ``logvar = min(max(raw, lo), hi)``.

    (docs/derivation.md, Eqs. (V1), (R1), (K1).) ``lo < hi <= LOGVAR_MAX``
    (the caller checks), so the built-in clamp is implied. Shapes as in
    :func:`reparam_kl_forward`; returns the KL summed over the batch (float64).
    """
    b, k2 = ml.shape
    k = k2 // 2
    n_samples = eps.shape[0]
    half = ml.dtype.type(0.5)
    total = 0.0
    for i in range(b):
        mr, sr = ml[i], sigma[i]
        for c in range(k):
            mu = mr[c]
            lv = min(max(mr[k + c], lo), hi)
            s = _exp_any(lv * half)
            sr[c] = s
            total += 0.5 * (np.float64(mu) * mu + np.float64(s) * s - 1.0 - lv)
        for sample in range(n_samples):
            zr, er = z[sample * b + i], eps[sample, i]
            for c in range(k):
                zr[c] = mr[c] + sr[c] * er[c]
    return total


reparam_kl_forward_bounded = jit(reparam_kl_forward_bounded)


def reparam_kl_backward_bounded(dz: np.ndarray, eps: np.ndarray, ml: np.ndarray, sigma: np.ndarray,
                                dml: np.ndarray, db: np.ndarray, kl_scale: float, lo: float, hi: float) -> None:
    r""":func:`reparam_kl_backward` for :func:`reparam_kl_forward_bounded`: the same formulas, and
    ``dlogvar`` is 0 unless ``lo < raw < hi`` strictly (the hardtanh's derivative, 0 at the bounds
    themselves; docs/derivation.md, Eq. (V1)). ``raw`` is the head's output, ``ml[:, K:]``.
    """
    b, k2 = ml.shape
    k = k2 // 2
    n_samples = eps.shape[0]
    half = ml.dtype.type(0.5)
    one = ml.dtype.type(1)
    zero = ml.dtype.type(0)
    for j in range(k2):
        db[j] = zero
    for i in range(b):
        mr, sr, dr = ml[i], sigma[i], dml[i]
        for c in range(k):
            s = sr[c]
            dr[c] = kl_scale * mr[c]
            dr[k + c] = kl_scale * half * (s * s - one)
        for sample in range(n_samples):
            dzr, er = dz[sample * b + i], eps[sample, i]
            for c in range(k):
                g = dzr[c]
                dr[c] += g
                dr[k + c] += g * er[c] * sr[c] * half
        for c in range(k):
            raw = mr[k + c]
            dr[k + c] = dr[k + c] if (raw > lo and raw < hi) else zero
        _add_row(db, dr)


reparam_kl_backward_bounded = jit(reparam_kl_backward_bounded)


# ------------------------------------------------------------------------ importance-weighted bound, Eqs. (IW1), (IW2)


def iwae_latent_forward(ml: np.ndarray, eps: np.ndarray, z: np.ndarray, sigma: np.ndarray, logr: np.ndarray,
                        lo: float, hi: float) -> None:
    r"""Reparameterized samples and, per sample, :math:`\log p(z) - \log q(z \mid x)`.

    With ``logvar = min(max(raw, lo), hi)`` (``lo = -inf``, ``hi = LOGVAR_MAX``
    for an unbounded model):

    .. math::
        \mathrm{sigma} = e^{\mathrm{logvar}/2}, \quad
        z_{lB+i} = \mu_i + \mathrm{sigma}_i \odot \epsilon_{l,i}, \quad
        \mathrm{logr}_{lB+i} = \sum_c \tfrac12 \big(\epsilon_{l,i,c}^2 + \mathrm{logvar}_{ic} - z_{lB+i,c}^2\big)

    (docs/derivation.md, Eq. (IW1); the ``log 2 pi`` of the two densities
    cancel). Shapes: ml (B, 2K); eps (L, B, K); z (L*B, K) output; sigma
    (B, K) output; logr (L*B,) float64 output, summed in float64 from the
    ``z`` the decoder sees.
    """
    b, k2 = ml.shape
    k = k2 // 2
    n_samples = eps.shape[0]
    half = ml.dtype.type(0.5)
    for i in range(b):
        mr, sr = ml[i], sigma[i]
        lv_sum = 0.0
        for c in range(k):
            lv = min(max(mr[k + c], lo), hi)
            sr[c] = _exp_any(lv * half)
            lv_sum += lv
        for sample in range(n_samples):
            zr, er = z[sample * b + i], eps[sample, i]
            acc = 0.0
            for c in range(k):
                zv = mr[c] + sr[c] * er[c]
                zr[c] = zv
                e64 = np.float64(er[c])
                z64 = np.float64(zv)
                acc += e64 * e64 - z64 * z64
            logr[sample * b + i] = 0.5 * (acc + lv_sum)


iwae_latent_forward = jit(iwae_latent_forward)


def bernoulli_nll_rows(logits: np.ndarray, x: np.ndarray, dlogits: np.ndarray, nll: np.ndarray,
                       tmp: np.ndarray) -> None:
    r""":func:`bernoulli_nll` row by row: ``nll[r]`` (float64) and the unscaled gradient ``sigmoid(l) - x``.

    The per-row negative log-likelihood of Eq. (B1), and its derivative with
    respect to the logits, ``dlogits = sigma(l) - x_{r mod B}``, which the
    importance weights scale row by row afterwards (:func:`scale_rows_colsum`).
    Shapes: logits, dlogits (L*B, P); x (B, P); nll (L*B,) float64; tmp (P,).
    """
    n, p = logits.shape
    bx = x.shape[0]
    zero = logits.dtype.type(0)
    one = logits.dtype.type(1)
    for r in range(n):
        lr, xr, dr = logits[r], x[r % bx], dlogits[r]
        row = zero
        for j in range(p):
            lv = lr[j]
            tmp[j] = _exp_nonpositive_any(-abs(lv))
            row += max(lv, zero) - xr[j] * lv
        logs = _log1p_sum(tmp, p)
        for j in range(p):
            t = tmp[j]
            s = one / (one + t)
            sig = s if lr[j] >= zero else t * s
            dr[j] = sig - xr[j]
        nll[r] = np.float64(row) + logs


bernoulli_nll_rows = jit(bernoulli_nll_rows)


def gaussian_sq_err_rows(mean: np.ndarray, x: np.ndarray, dmean: np.ndarray, sq: np.ndarray) -> None:
    r"""Per row, ``sq[r] = sum_j (m_rj - x_ij)^2`` (float64) and ``dmean = m - x`` (unscaled; Eq. (G1)).

    ``i = r mod B``. Shapes: mean, dmean (L*B, P); x (B, P); sq (L*B,) float64.
    """
    n, p = mean.shape
    bx = x.shape[0]
    for r in range(n):
        mr, xr, dr = mean[r], x[r % bx], dmean[r]
        row = 0.0
        for j in range(p):
            diff = mr[j] - xr[j]
            row += np.float64(diff) * np.float64(diff)
            dr[j] = diff
        sq[r] = row


gaussian_sq_err_rows = jit(gaussian_sq_err_rows)


def iwae_weights(logr: np.ndarray, nll: np.ndarray, nll_scale: float, nll_const: float, n_samples: int,
                 wt: np.ndarray) -> float:
    r"""Log-weights, their normalized weights and the summed log-mean-exp, in float64.

    .. math::
        \log w_r = \mathrm{logr}_r - (a\,\mathrm{nll}_r + c), \qquad
        \tilde w_{lB+i} = \frac{e^{\log w_{lB+i} - m_i}}{\sum_{l'} e^{\log w_{l'B+i} - m_i}}, \qquad
        m_i = \max_l \log w_{lB+i}

    and returns :math:`\sum_i \big(m_i + \log \sum_l e^{\log w_{lB+i} - m_i} - \log L\big)`, the sum
    over the batch of the log-mean-exp of each example's L weights (docs/derivation.md, Eqs. (IW1),
    (IW2)). Subtracting the maximum keeps every exponential in (0, 1], so nothing overflows, and the
    largest weight contributes exactly 1 to the sum, so it cannot underflow to 0 either.
    ``a nll_r + c`` is the row's negative log-likelihood (``a = 1, c = 0`` for
    :func:`bernoulli_nll_rows`; ``a = 1 / (2 sigma_dec^2)``, ``c = P (log sigma_dec + log(2 pi) / 2)`` for
    :func:`gaussian_sq_err_rows`). Shapes: logr, nll, wt (L*B,) float64; row ``l*B + i`` is sample
    ``l`` of example ``i``.
    """
    n = logr.shape[0]
    b = n // n_samples
    total = 0.0
    for i in range(b):
        m = -np.inf
        for sample in range(n_samples):
            r = sample * b + i
            v = logr[r] - (nll_scale * nll[r] + nll_const)
            wt[r] = v
            m = max(m, v)
        s = 0.0
        for sample in range(n_samples):
            r = sample * b + i
            e = math.exp(wt[r] - m)
            wt[r] = e
            s += e
        inv = 1.0 / s
        for sample in range(n_samples):
            wt[sample * b + i] *= inv
        total += m + math.log(s)
    return total - b * math.log(n_samples)


iwae_weights = jit(iwae_weights)


def scale_rows_colsum(d: np.ndarray, wt: np.ndarray, scale: float, db: np.ndarray) -> None:
    """``d[r] *= wt[r] * scale`` row by row, and ``db`` = the column sums of the result.

    Turns the unscaled per-row gradients of :func:`bernoulli_nll_rows` or
    :func:`gaussian_sq_err_rows` into the importance-weighted ones (Eq. (IW2)).
    Shapes: d (n, P); wt (n,) float64; db (P,) output. ``scale`` is a float64.
    """
    n, p = d.shape
    zero = db.dtype.type(0)
    for j in range(p):
        db[j] = zero
    for r in range(n):
        dr = d[r]
        c = d.dtype.type(wt[r] * scale)
        for j in range(p):
            dr[j] *= c
        _add_row(db, dr)


scale_rows_colsum = jit(scale_rows_colsum)


def iwae_latent_backward(dz: np.ndarray, eps: np.ndarray, ml: np.ndarray, sigma: np.ndarray, z: np.ndarray,
                         wt: np.ndarray, dml: np.ndarray, db: np.ndarray, inv_b: float, lo: float,
                         hi: float) -> None:
    r"""Gradient of the negative importance-weighted bound with respect to ``[mu | logvar]``.

    .. math::
        g_{lB+i} = \mathrm{dz}_{lB+i} + \frac{\tilde w_{lB+i}}{B} z_{lB+i}, \qquad
        \mathrm{dmu}_i = \sum_l g_{lB+i}, \qquad
        \mathrm{dlogvar}_i = \frac{\mathrm{sigma}_i}{2} \sum_l g_{lB+i} \odot \epsilon_{l,i} - \frac{1}{2B}

    (docs/derivation.md, Eq. (IW2)): ``dz`` is what the decoder sends back
    (its rows already weighted), the second term of ``g`` comes from
    ``log p(z)``, and ``-1/(2B)`` from ``log q``'s own ``-logvar/2``
    (``sum_l w~ = 1``). ``dlogvar`` is 0 unless ``lo < raw < hi`` strictly
    (Eq. (V1)); for an unbounded model the caller passes ``lo = -inf`` and
    ``hi`` just above ``LOGVAR_MAX``, so that, as in :func:`reparam_kl_backward`,
    the gradient passes at the clamp itself. Shapes: dz, z (L*B, K); eps
    (L, B, K); ml, dml (B, 2K); sigma (B, K); wt (L*B,) float64; db (2K,)
    output, the column sums of ``dml``. ``inv_b`` is ``1 / B`` in the arrays' dtype.
    """
    b, k2 = ml.shape
    k = k2 // 2
    n_samples = eps.shape[0]
    half = ml.dtype.type(0.5)
    zero = ml.dtype.type(0)
    direct = -half * inv_b
    for j in range(k2):
        db[j] = zero
    for i in range(b):
        mr, sr, dr = ml[i], sigma[i], dml[i]
        for c in range(k):
            dr[c] = zero
            dr[k + c] = zero
        for sample in range(n_samples):
            r = sample * b + i
            dzr, zr, er = dz[r], z[r], eps[sample, i]
            w = ml.dtype.type(wt[r]) * inv_b
            for c in range(k):
                g = dzr[c] + w * zr[c]
                dr[c] += g
                dr[k + c] += g * er[c]
        for c in range(k):
            raw = mr[k + c]
            v = dr[k + c] * sr[c] * half + direct
            dr[k + c] = v if (raw > lo and raw < hi) else zero
        _add_row(db, dr)


iwae_latent_backward = jit(iwae_latent_backward)
