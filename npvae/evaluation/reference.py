"""Plain NumPy twins of :mod:`npvae.evaluation.kernels`, and of the whole estimator.

These are the definitions the tests compare the kernels against: short,
vectorized, written straight from docs/derivation.md, Eq. (L1), and sharing
no code with the kernels (nor with :mod:`npvae.kernels`): the decoder is run
from ``vae.params`` with NumPy products and activations. They allocate
freely and are meant for small inputs.
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels import LOGVAR_MAX

__all__ = ["decoder_forward", "draw_codes", "log_likelihood_reference", "log_px", "logsumexp"]


def draw_codes(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Twin of :func:`kernels.draw_codes` for one example's rows: ``z`` (float64) and ``log p(z) - log q(z|x)``.

    ``mu``, ``logvar``: (K,) or broadcastable to ``eps`` (rows, K).
    """
    z = mu + np.exp(0.5 * logvar) * eps
    k = eps.shape[-1]
    log_p = -0.5 * np.sum(z**2, axis=-1) - 0.5 * k * math.log(2 * math.pi)
    log_q = (-0.5 * np.sum(eps**2, axis=-1) - 0.5 * np.sum(logvar * np.ones_like(eps), axis=-1)
             - 0.5 * k * math.log(2 * math.pi))
    return z, log_p - log_q


def log_px(out: np.ndarray, x: np.ndarray, likelihood: str, sigma_dec: float = 1.0) -> np.ndarray:
    """``log p(x | z)`` per row of the decoder's output ``out`` (rows, P) against ``x`` (rows, P), float64.

    Bernoulli: ``sum x*l - softplus(l)`` with ``softplus`` as ``np.logaddexp(0, l)``;
    Gaussian: the full normal log-density with standard deviation ``sigma_dec``.
    """
    out = np.asarray(out, np.float64)
    x = np.asarray(x, np.float64)
    if likelihood == "bernoulli":
        return np.sum(x * out - np.logaddexp(0.0, out), axis=-1)
    p = out.shape[-1]
    return (-np.sum((x - out) ** 2, axis=-1) / (2 * sigma_dec**2)
            - p * (math.log(sigma_dec) + 0.5 * math.log(2 * math.pi)))


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(sum(exp(a)))`` along ``axis``, shifted by the maximum (float64)."""
    a = np.asarray(a, np.float64)
    top = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def _activate(v: np.ndarray, name: str, alpha: float) -> np.ndarray:
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "leaky_relu":
        return np.where(v > 0, v, alpha * v)
    if name == "tanh":
        return np.tanh(v)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-v))
    if name == "softplus":
        return np.logaddexp(0.0, v)
    if name == "identity":
        return v
    raise ValueError(f"unknown activation {name!r}")


def decoder_forward(vae: object, z: np.ndarray) -> np.ndarray:
    """The decoder of a dense ``npvae.VAE`` in float64 NumPy, from ``vae.params``: logits or mean (rows, P)."""
    params = vae.params  # type: ignore[attr-defined]
    n_hidden = len(vae.hidden_dims)  # type: ignore[attr-defined]
    h = np.asarray(z, np.float64)
    for i in range(n_hidden):
        h = _activate(h @ params[f"decoder.{i}.W"].astype(np.float64) + params[f"decoder.{i}.b"],
                      vae.activation, vae.alpha)  # type: ignore[attr-defined]
    return h @ params["decoder.out.W"].astype(np.float64) + params["decoder.out.b"]


def log_likelihood_reference(vae: object, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    r"""The estimate of Eq. (L1) with given noise, in float64 NumPy: (n,) nats.

    .. math::
        \log \hat p(x_i) = \log \frac1k \sum_{s=1}^{k}
            \frac{p(x_i \mid z_{is})\,p(z_{is})}{q(z_{is} \mid x_i)},\qquad
        z_{is} = \mu_i + e^{\mathrm{logvar}_i/2} \epsilon_{is}

    ``eps`` has shape (n, k, K). ``mu`` and ``logvar`` come from
    ``vae.encode`` (logvar clamped at ``LOGVAR_MAX`` and to
    ``vae.logvar_bounds`` when the model has them, as the model's sampler does);
    the decoder runs in float64 from the parameters (:func:`decoder_forward`).
    """
    mu, logvar = (np.asarray(a, np.float64) for a in vae.encode(x))  # type: ignore[attr-defined]
    bounds = getattr(vae, "logvar_bounds", None)
    if bounds is not None:
        logvar = np.clip(logvar, bounds[0], bounds[1])
    logvar = np.minimum(logvar, LOGVAR_MAX)
    n, k, kdim = eps.shape
    z, lpq = draw_codes(mu[:, None, :], logvar[:, None, :], eps)  # (n, k, K), (n, k)
    out = decoder_forward(vae, z.reshape(n * k, kdim))
    xr = np.repeat(np.asarray(x, np.float64), k, axis=0)  # example-major: row i*k + s
    lw = lpq + log_px(out, xr, vae.likelihood, vae.sigma_dec).reshape(n, k)  # type: ignore[attr-defined]
    return logsumexp(lw, axis=1) - math.log(k)
