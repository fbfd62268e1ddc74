"""Schedules: the KL weight beta as training goes on.

KL warm-up (docs/derivation.md, Eq. (W1)) starts training as an
autoencoder with a small KL weight and raises it linearly: in epoch ``e``
(counting from 1), ``beta_e = beta * min(1, e / kl_warmup)``, the value the
protocol's code sets at the start of each epoch. Early on the encoder can
then spread its codes before the KL term pulls them to the prior, which
leaves fewer latent dimensions collapsed; the bound optimized before
``beta_e`` reaches ``beta`` is not the ELBO (it is larger), so the history
records the beta of every epoch.
"""

from __future__ import annotations


def warmup_beta(beta: float, epoch: int, kl_warmup: int) -> float:
    """The KL weight of epoch ``epoch`` (1-based) for target ``beta`` and ``kl_warmup`` epochs of warm-up
    (0: no warm-up, ``beta`` throughout). Eq. (W1)."""
    if kl_warmup <= 0:
        return beta
    return beta * min(1.0, epoch / kl_warmup)
