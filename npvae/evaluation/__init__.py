"""Evaluating a trained VAE beyond its ELBO.

* :func:`log_likelihood`: the importance-weighted estimate of log p(x) per
  example (Burda et al. 2015; docs/derivation.md, Eq. (L1)), in bounded memory;
* :func:`diagnostics`: KL per latent dimension, rate, distortion, and the
  active units of Burda et al.

Modules: :mod:`.importance` (the estimator), :mod:`.posterior` (the
diagnostics), :mod:`.kernels` (their Numba kernels) and :mod:`.reference`
(the plain NumPy twins the tests compare the kernels with). No module is
named like a public function: importing it would rebind the function's name
on the package.
"""

from __future__ import annotations

from .importance import log_likelihood
from .posterior import diagnostics

__all__ = ["diagnostics", "log_likelihood"]
