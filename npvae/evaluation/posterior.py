"""Diagnostics of the approximate posterior: KL per latent dimension, rate, distortion, active units."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_data, check_float, check_rng
from . import kernels as EK
from .importance import check_vae, likelihood_constants, model_lock, posterior

_DECODE_CHUNK = 1024  # rows per decoder call, as VAE.evaluate uses


def diagnostics(vae: Any, x: np.ndarray, threshold: float = 0.01,
                rng: np.random.Generator | int | None = None) -> dict[str, Any]:
    r"""How the model uses its latent space on ``x``: KL per dimension, rate, distortion, active units.

    With :math:`\mu_i, \mathrm{logvar}_i` the encoder's outputs for example
    :math:`x_i` (logvar bounded as the model's sampler bounds it) and
    :math:`n` examples:

    ``kl_per_dim`` : (K,) float64
        :math:`\frac1n \sum_i \tfrac12(\mu_{ik}^2 + e^{\mathrm{logvar}_{ik}} - 1 - \mathrm{logvar}_{ik})`,
        the mean KL of each coordinate of q(z|x) to the prior N(0, 1)
        (docs/derivation.md, Eq. (K1)). A coordinate the encoder ignores
        (mu = 0, logvar = 0 for every x) has KL 0: it carries no information.
    ``rate`` : float
        ``kl_per_dim.sum()``, the mean KL(q(z|x) || p(z)) in nats per example
        (the rate of the rate-distortion view of the ELBO).
    ``distortion`` : float
        The mean reconstruction negative log-likelihood
        :math:`-\frac1n\sum_i \log p(x_i \mid z_i)` in nats per example, with
        **one** :math:`z_i \sim q(z \mid x_i)` per example drawn from ``rng``
        (Eqs. (B1), (G1)). ``distortion + rate`` is a one-sample estimate of
        the mean negative ELBO. For a Bernoulli decoder on grey levels this
        is the cross-entropy the model trains on, not a log-likelihood.
    ``activity`` : (K,) float64
        :math:`\mathrm{Var}_x(\mu_{\cdot k})`, the variance over the examples
        (population variance, divided by n) of the posterior mean, i.e.
        :math:`\mathrm{Cov}_x(\mathbb E_{q(z|x)}[z_k])`: Burda et al.'s (2015)
        measure of how much dimension k responds to its input.
    ``active_units`` : int
        The number of dimensions with ``activity > threshold`` (Burda et al.
        use 0.01).

    Parameters
    ----------
    vae
        An :class:`npvae.VAE`.
    x : (n, input_dim) float array
        In [0, 1] for the Bernoulli decoder (grey levels allowed here).
    threshold
        Activity above which a unit counts as active (a number >= 0).
    rng
        A Generator or an int seed for the one sample behind ``distortion``;
        ``None`` means ``default_rng(0)``. The noise is drawn in float64, as
        ``rng.standard_normal((n, K))``.
    """
    vae = check_vae(vae)
    x = check_data("x", x, width=vae.input_dim, unit_range=vae.likelihood == "bernoulli", dtype=vae.dtype)
    threshold = check_float("threshold", threshold, minimum=0.0, inclusive=True)
    rng = check_rng("rng", rng, 0)
    n, latent = x.shape[0], vae.latent_dim
    kind, inv_two_var, const = likelihood_constants(vae)
    import numba

    n_blocks = max(1, numba.get_num_threads())
    with model_lock(vae):
        mu, logvar = posterior(vae, x)
        kl_per_dim = np.mean(0.5 * (mu * mu + np.exp(logvar) - 1.0 - logvar), axis=0)
        activity = np.var(mu, axis=0)
        sigma = np.exp(0.5 * logvar)
        rows = min(n, _DECODE_CHUNK)
        z = np.zeros((rows, latent), vae.dtype)
        lw = np.empty(rows, np.float64)
        total = 0.0
        for start in range(0, n, rows):
            nb = min(rows, n - start)
            sl = slice(start, start + nb)
            eps = rng.standard_normal((nb, latent))
            EK.draw_codes(mu[sl], sigma[sl], np.zeros(nb), eps, 1, z, lw)
            lw[:] = 0.0  # keep only log p(x | z): draw_codes wrote the latent log-ratio
            out = vae._decode_raw(z)  # always `rows` rows: one set of decoder work buffers
            EK.add_log_px(out, x[sl], 1, nb, kind, inv_two_var, const, min(n_blocks, nb), lw)
            total += float(np.sum(lw[:nb]))
    return {"kl_per_dim": kl_per_dim, "rate": float(np.sum(kl_per_dim)), "distortion": -total / n,
            "activity": activity, "active_units": int(np.count_nonzero(activity > threshold))}
