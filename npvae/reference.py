"""npvae in plain NumPy: the whole VAE in one function, then a twin of every kernel.

Read :func:`loss_and_grads` first. It computes the loss of an
:class:`npvae.VAE` and the gradient of every parameter top to bottom, one
equation of docs/derivation.md per step, with nothing fused, cached or
reused: the fast path (``VAE.loss_and_grads``, :mod:`npvae.kernels`,
:mod:`npvae.layers`) computes the same numbers, and tests/test_reference.py
holds the two to 1e-12 in float64 for every configuration.
docs/worked_example.md runs it on a model small enough to follow with a
pencil.

Below it, the twins: short, allocating freely, each the definition of one
kernel of :mod:`npvae.kernels`. The tests check each fast kernel against its
twin in float32 and float64. They return new arrays instead of writing into
outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import LOGVAR_MAX


def loss_and_grads(vae: Any, x: np.ndarray, eps: np.ndarray,
                   trace: dict | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """``(loss, grads)`` of ``vae`` on the batch ``x`` (B, P) with the noise ``eps`` (L, B, K), in float64.

    The same as ``vae.loss_and_grads(x, eps)``, for every configuration of
    :class:`npvae.VAE`: any hidden layers, ``layer="dense"`` (every
    activation) or ``"gated"``, both likelihoods, ``beta``, L =
    ``n_samples`` samples, ``logvar_bounds`` and ``objective="iwae"``. The
    loss is in nats per example, summed over pixels and averaged over the
    batch (Eq. (U1)). Pass a dict as ``trace`` to get every intermediate
    value and gradient by its name below (``dlogits``, ``dz``, ``dmu_rec``...).
    """
    P = {name: np.asarray(p, np.float64) for name, p in vae.params.items()}
    x = np.asarray(x, np.float64)
    B, K = x.shape[0], vae.latent_dim
    eps = np.asarray(eps, np.float64).reshape(-1, B, K)  # (L, B, K): an input, like x; it gets no gradient
    L = eps.shape[0]
    grads: dict[str, np.ndarray] = {}

    def layer_forward(name: str, h: np.ndarray) -> tuple[np.ndarray, tuple]:
        """One hidden layer: ``(output, what its backward needs)``, Eqs. (D1) and (A1)-(A6), or (H1)."""
        if vae.layer == "gated":  # (H1): h = (xW + b) * sigmoid(xV + c)
            a, g = h @ P[name + ".W"] + P[name + ".b"], sigmoid(h @ P[name + ".V"] + P[name + ".c"])
            return a * g, (h, a, g)
        y = activate(h @ P[name + ".W"] + P[name + ".b"], vae.activation, vae.alpha)  # (D1), (A1)-(A6)
        return y, (h, y)

    def layer_backward(name: str, dy: np.ndarray, cache: tuple) -> np.ndarray:
        """Its gradients into ``grads``, and ``dx``: Eqs. (D1) and (A1)-(A6), or (H1)."""
        if vae.layer == "gated":  # (H1)
            h, a, g = cache
            da, ds = dy * g, dy * a * g * (1 - g)
            grads[name + ".W"], grads[name + ".b"] = h.T @ da, da.sum(axis=0)
            grads[name + ".V"], grads[name + ".c"] = h.T @ ds, ds.sum(axis=0)
            return da @ P[name + ".W"].T + ds @ P[name + ".V"].T
        h, y = cache
        dpre = dy * activation_grad_from_output(y, vae.activation, vae.alpha)  # (A1)-(A6), from the output
        grads[name + ".W"], grads[name + ".b"] = h.T @ dpre, dpre.sum(axis=0)  # (D1): sums over the rows
        return dpre @ P[name + ".W"].T  # (D1)

    # ---------------------------------------------------------------- forward, top to bottom (E1)
    h_enc, enc_caches = x, []
    for i in range(len(vae.hidden_dims)):
        h_enc, cache = layer_forward(f"encoder.{i}", h_enc)
        enc_caches.append(cache)
    ml = h_enc @ P["encoder.head.W"] + P["encoder.head.b"]  # (D1), identity (A6): [mu | raw logvar], (B, 2K)
    mu, raw = ml[:, :K], ml[:, K:]
    lo, hi = vae.logvar_bounds if vae.logvar_bounds is not None else (-np.inf, LOGVAR_MAX)
    logvar = np.clip(raw, lo, hi)  # (V1); without bounds only the clamp at 30 (K1)
    sigma = np.exp(logvar / 2)  # (R1): a standard deviation, exp(logvar / 2), not exp(logvar)
    z3 = mu + sigma * eps  # (R1): (L, B, K), mu and sigma broadcast over the L samples
    z = z3.reshape(L * B, K)  # (E1): row l*B + i is sample l of example i
    h_dec, dec_caches = z, []
    for i in range(len(vae.hidden_dims)):
        h_dec, cache = layer_forward(f"decoder.{i}", h_dec)
        dec_caches.append(cache)
    out = h_dec @ P["decoder.out.W"] + P["decoder.out.b"]  # (D1), identity: logits or mean, (L*B, P)
    x_rep = np.tile(x, (L, 1))  # (E1): the target of row l*B + i is x_i
    if vae.likelihood == "bernoulli":
        nll = np.sum(np.logaddexp(0, out) - x_rep * out, axis=1)  # (B1): softplus(l) - x l, per row
        dnll = sigmoid(out) - x_rep  # (B1): d nll_r / d logits_r
    else:
        s = vae.sigma_dec
        nll = np.sum((x_rep - out) ** 2 / (2 * s**2) + np.log(s) + 0.5 * np.log(2 * np.pi), axis=1)  # (G1)
        dnll = (out - x_rep) / s**2  # (G1)
    if vae.objective == "elbo":
        kl = 0.5 * np.sum(mu**2 + np.exp(logvar) - 1 - logvar, axis=1)  # (K1): closed form, per example (B,)
        rec = nll.sum() / (B * L)  # (U1): summed over pixels, averaged over samples and examples
        loss = rec + vae.beta * kl.sum() / B  # (E1)
        dlogits = dnll / (B * L)  # (B1), (G1): the 1/(BL) of the mean, once, here
    else:
        rho = 0.5 * np.sum(eps**2 + logvar - z3**2, axis=2)  # (IW1): log p(z) - log q(z|x), (L, B)
        logw = rho - nll.reshape(L, B)  # (IW1): log importance weights
        m = logw.max(axis=0)  # (IW1): the stable log-mean-exp
        loss = -np.mean(m + np.log(np.exp(logw - m).sum(axis=0)) - np.log(L))
        w = np.exp(logw - m) / np.exp(logw - m).sum(axis=0)  # (IW2): softmax over the L samples, sums to 1
        dlogits = dnll * (w.reshape(-1, 1) / B)  # (IW2) step 1: a weight per row instead of 1/(BL)

    # ---------------------------------------------------------------- backward, bottom to top (E1)
    grads["decoder.out.W"], grads["decoder.out.b"] = h_dec.T @ dlogits, dlogits.sum(axis=0)  # (D1)
    d = dlogits @ P["decoder.out.W"].T  # (D1)
    for i in reversed(range(len(vae.hidden_dims))):
        d = layer_backward(f"decoder.{i}", d, dec_caches[i])
    dz = d.reshape(L, B, K)  # (E1) step 2: the decoder's dx is dz
    if vae.objective == "elbo":
        dmu_rec, dlogvar_rec = dz.sum(axis=0), sigma / 2 * np.sum(dz * eps, axis=0)  # (R1): summed over l
        dmu_kl = vae.beta / B * mu  # (K1), with the beta/B of (E1)
        dlogvar_kl = vae.beta / B * 0.5 * (np.exp(logvar) - 1)  # (K1)
    else:
        g = dz + w[..., None] / B * z3  # (IW2) step 3: log p(z)'s own z term
        dmu_rec, dlogvar_rec = g.sum(axis=0), sigma / 2 * np.sum(g * eps, axis=0)  # (IW2) step 4, as (R1)
        dmu_kl, dlogvar_kl = np.zeros_like(mu), np.full_like(mu, -1 / (2 * B))  # (IW2) step 5: log q's logvar
    passes = (raw > lo) & (raw < hi) if vae.logvar_bounds is not None else raw <= LOGVAR_MAX  # (V1), (K1)
    dmu = dmu_rec + dmu_kl  # the fork: mu feeds z and the KL, so the two contributions add
    dlogvar = np.where(passes, dlogvar_rec + dlogvar_kl, 0.0)  # the same fork for logvar
    dml = np.concatenate([dmu, dlogvar], axis=1)  # (E1) step 5: [dmu | dlogvar], (B, 2K)
    grads["encoder.head.W"], grads["encoder.head.b"] = h_enc.T @ dml, dml.sum(axis=0)  # (D1)
    d = dml @ P["encoder.head.W"].T  # (D1)
    for i in reversed(range(len(vae.hidden_dims))):
        d = layer_backward(f"encoder.{i}", d, enc_caches[i])  # the last d, dL/dx, is not needed
    if trace is not None:
        trace.update(locals())
    return float(loss), {name: grads[name] for name in vae.params}


# ---------------------------------------------------------------------------- the kernels' twins


def activate(x: np.ndarray, name: str, alpha: float = 0.01) -> np.ndarray:
    """Activation ``f(x)`` by name (docs/derivation.md, Eqs. (A1)-(A6))."""
    if name == "relu":
        return np.maximum(x, 0)
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    if name == "softplus":
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    if name == "identity":
        return x.copy()
    raise ValueError(f"unknown activation {name!r}")


def activation_grad_from_output(y: np.ndarray, name: str, alpha: float = 0.01) -> np.ndarray:
    """``f'(x)`` expressed through the output ``y = f(x)`` (Eqs. (A1)-(A6))."""
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name == "leaky_relu":
        return np.where(y > 0, 1, alpha).astype(y.dtype)
    if name == "tanh":
        return 1 - y * y
    if name == "sigmoid":
        return y * (1 - y)
    if name == "softplus":
        return -np.expm1(-y)
    if name == "identity":
        return np.ones_like(y)
    raise ValueError(f"unknown activation {name!r}")


def bias_act_forward(pre: np.ndarray, b: np.ndarray, name: str, alpha: float = 0.01) -> np.ndarray:
    """``f(pre + b)``."""
    return activate(pre + b, name, alpha)


def act_backward(dy: np.ndarray, y: np.ndarray, name: str, alpha: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """``(dpre, db)`` with ``dpre = dy * f'`` and ``db`` its column sums (Eqs. (A1)-(A6), (D1))."""
    dpre = dy * activation_grad_from_output(y, name, alpha)
    return dpre, dpre.sum(axis=0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return activate(x, "sigmoid")


def bernoulli_nll(logits: np.ndarray, x: np.ndarray, scale: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(sum of -log p(x|z), dlogits, db)`` for logits (L*B, P) and x (B, P) (Eq. (B1))."""
    xt = np.tile(x, (logits.shape[0] // x.shape[0], 1))
    loss = np.sum(np.maximum(logits, 0) - xt * logits + np.log1p(np.exp(-np.abs(logits))), dtype=np.float64)
    d = (sigmoid(logits) - xt) * scale
    return float(loss), d, d.sum(axis=0)


def gaussian_sq_err(mean: np.ndarray, x: np.ndarray, scale: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(sum (x - m)^2, dmean, db)`` with ``dmean = scale * (m - x)`` (Eq. (G1))."""
    xt = np.tile(x, (mean.shape[0] // x.shape[0], 1))
    diff = mean - xt
    d = diff * scale
    return float(np.sum(diff.astype(np.float64) ** 2)), d, d.sum(axis=0)


def reparam_kl_forward(ml: np.ndarray, eps: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(KL summed over the batch, z (L*B, K), sigma (B, K))`` (Eqs. (R1), (K1))."""
    k = ml.shape[1] // 2
    mu, logvar = ml[:, :k], np.minimum(ml[:, k:], LOGVAR_MAX)
    sigma = np.exp(logvar / 2)
    z = (mu[None] + sigma[None] * eps).reshape(-1, k)
    kl = 0.5 * np.sum(mu.astype(np.float64) ** 2 + sigma.astype(np.float64) ** 2 - 1 - logvar)
    return float(kl), z, sigma


def reparam_kl_backward(dz: np.ndarray, eps: np.ndarray, ml: np.ndarray, sigma: np.ndarray,
                        kl_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(dml, db)``: gradient with respect to ``[mu | logvar]`` and its column sums (Eqs. (R1), (K1))."""
    n_samples, b, k = eps.shape
    dz3 = dz.reshape(n_samples, b, k)
    dmu = dz3.sum(axis=0) + kl_scale * ml[:, :k]
    dlogvar = (dz3 * eps).sum(axis=0) * sigma / 2 + kl_scale * (sigma**2 - 1) / 2
    dlogvar = np.where(ml[:, k:] > LOGVAR_MAX, 0, dlogvar)
    dml = np.concatenate([dmu, dlogvar], axis=1)
    return dml, dml.sum(axis=0)


def adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float,
                b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Textbook bias-corrected Adam step ``t`` (1-based); returns new ``(p, m, v)`` (Eq. (O1))."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def sgd_momentum_update(p: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float,
                        momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """SGD with momentum; returns new ``(p, buf)`` (Eq. (O2))."""
    buf = momentum * buf + g
    return p - lr * buf, buf


def gather_rows(src: np.ndarray, idx: np.ndarray, scale: float, dtype: np.dtype) -> np.ndarray:
    """Rows ``idx`` of ``src``, times ``scale``, in ``dtype``: a minibatch."""
    return np.multiply(np.take(src, idx, axis=0), dtype.type(scale), dtype=dtype)


# ---------------------------------------------------------------------------- gated layer, bounded logvar, IWAE


def gated_forward(xw: np.ndarray, xv: np.ndarray, b: np.ndarray,
                  c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, g, h)``: ``a = xW + b``, ``g = sigmoid(xV + c)``, ``h = a * g`` from the two products (Eq. (H1))."""
    a = xw + b
    g = sigmoid(xv + c)
    return a, g, a * g


def gated_backward(dh: np.ndarray, a: np.ndarray,
                   g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(da, ds, db, dc)``: ``da = dh * g``, ``ds = dh * a * g * (1 - g)`` and their column sums (Eq. (H1))."""
    da = dh * g
    ds = dh * a * g * (1 - g)
    return da, ds, da.sum(axis=0), ds.sum(axis=0)


def reparam_kl_forward_bounded(ml: np.ndarray, eps: np.ndarray, lo: float,
                               hi: float) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`reparam_kl_forward` with ``logvar = clip(raw, lo, hi)`` (Eq. (V1))."""
    k = ml.shape[1] // 2
    bounded = ml.copy()
    bounded[:, k:] = np.clip(ml[:, k:], lo, hi)
    return reparam_kl_forward(bounded, eps)


def reparam_kl_backward_bounded(dz: np.ndarray, eps: np.ndarray, ml: np.ndarray, sigma: np.ndarray,
                                kl_scale: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reparam_kl_backward`, with ``dlogvar`` zero unless ``lo < raw < hi`` (Eq. (V1))."""
    k = ml.shape[1] // 2
    dml, _ = reparam_kl_backward(dz, eps, np.minimum(ml, LOGVAR_MAX), sigma, kl_scale)
    raw = ml[:, k:]
    dml[:, k:] = np.where((raw > lo) & (raw < hi), dml[:, k:], 0)
    return dml, dml.sum(axis=0)


def iwae_latent_forward(ml: np.ndarray, eps: np.ndarray, lo: float,
                        hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z (L*B, K), sigma (B, K), logr (L*B,))`` with ``logr = log p(z) - log q(z|x)`` in float64 (Eq. (IW1))."""
    k = ml.shape[1] // 2
    mu, logvar = ml[:, :k], np.clip(ml[:, k:], lo, hi)
    sigma = np.exp(logvar / 2)
    z3 = mu[None] + sigma[None] * eps
    z64, e64 = z3.astype(np.float64), eps.astype(np.float64)
    log_p = -0.5 * np.sum(z64**2, axis=-1) - 0.5 * k * np.log(2 * np.pi)
    log_q = np.sum(-0.5 * e64**2 - 0.5 * logvar.astype(np.float64)[None] - 0.5 * np.log(2 * np.pi), axis=-1)
    return z3.reshape(-1, k), sigma, (log_p - log_q).reshape(-1)


def bernoulli_nll_rows(logits: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nll per row (float64), sigmoid(logits) - x)`` (Eq. (B1) row by row)."""
    xt = np.tile(x, (logits.shape[0] // x.shape[0], 1))
    nll = (np.maximum(logits, 0) - xt * logits + np.log1p(np.exp(-np.abs(logits)))).sum(axis=1, dtype=np.float64)
    return nll, sigmoid(logits) - xt


def gaussian_sq_err_rows(mean: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sum (m - x)^2 per row (float64), m - x)`` (Eq. (G1) row by row)."""
    diff = mean - np.tile(x, (mean.shape[0] // x.shape[0], 1))
    return np.sum(diff.astype(np.float64) ** 2, axis=1), diff


def iwae_weights(logr: np.ndarray, nll: np.ndarray, nll_scale: float, nll_const: float,
                 n_samples: int) -> tuple[float, np.ndarray]:
    """``(sum_i log mean_l w_il, normalized weights (L*B,))`` with ``log w = logr - (a nll + c)``
    (Eqs. (IW1), (IW2))."""
    logw = (logr - (nll_scale * nll + nll_const)).reshape(n_samples, -1)
    m = logw.max(axis=0)
    e = np.exp(logw - m)
    s = e.sum(axis=0)
    return float(np.sum(m + np.log(s) - np.log(n_samples))), (e / s).reshape(-1)


def scale_rows_colsum(d: np.ndarray, wt: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(d * (wt * scale)[:, None], its column sums)``."""
    out = d * (wt * scale).astype(d.dtype)[:, None]
    return out, out.sum(axis=0)


def iwae_latent_backward(dz: np.ndarray, eps: np.ndarray, ml: np.ndarray, sigma: np.ndarray, z: np.ndarray,
                         wt: np.ndarray, inv_b: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """``(dml, db)`` for the negative importance-weighted bound (Eq. (IW2))."""
    n_samples, b, k = eps.shape
    g = (dz + (wt * inv_b).astype(dz.dtype)[:, None] * z).reshape(n_samples, b, k)
    dmu = g.sum(axis=0)
    dlogvar = (g * eps).sum(axis=0) * sigma / 2 - inv_b / 2
    raw = ml[:, k:]
    dlogvar = np.where((raw > lo) & (raw < hi), dlogvar, 0)
    dml = np.concatenate([dmu, dlogvar], axis=1)
    return dml, dml.sum(axis=0)
