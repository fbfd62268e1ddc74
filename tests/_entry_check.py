"""Every entry of every gradient of ``loss_and_grads`` against its own extrapolated central difference.

Shared by the gradient tests of the gated layer, the bounded logvar and the IWAE bound (the dense
ELBO's own version, with its kink handling, is test_vae_gradients.test_full_loss_gradient_every_entry).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RTOL = 1e-6


def entry_gradcheck(vae, x: np.ndarray, eps: np.ndarray, *, h: float = 1e-3,
                    at_each_point: Callable[[str, tuple, float], None] | None = None,
                    min_resolved: float = 0.75) -> tuple[float, int]:
    """Check each entry: ``|a - n| <= RTOL * max(|n|, scale)``, and return (worst resolved error, entries).

    ``n`` is Richardson's extrapolation of the central differences at h and 2h, ``scale`` the derivative
    the differences cannot resolve to RTOL (12 eps_machine max|f| / h / RTOL), and at least
    ``min_resolved`` of the entries must be above it (held to RTOL relative). ``at_each_point(key, index,
    step)`` runs at every shifted point (to assert, say, that no kink or bound is crossed).
    """
    loss, grads = vae.loss_and_grads(x, eps)
    assert grads.keys() == vae.params.keys()
    f_max, rows = abs(loss), []
    for key, p in vae.params.items():
        assert grads[key].shape == p.shape and np.all(np.isfinite(grads[key])), key
        for i in np.ndindex(p.shape):
            orig, vals = p[i], []
            for step in (h, -h, 2 * h, -2 * h):
                p[i] = orig + step
                vals.append(vae.loss_and_grads(x, eps)[0])
                if at_each_point is not None:
                    at_each_point(key, i, step)
            p[i] = orig
            f_max = max(f_max, *map(abs, vals))
            d_h, d_2h = (vals[0] - vals[1]) / (2 * h), (vals[2] - vals[3]) / (4 * h)
            rows.append((key, i, float(grads[key][i]), (4 * d_h - d_2h) / 3))
    scale = 12.0 * np.finfo(np.float64).eps * f_max / h / RTOL
    bad = [f"{k}{list(i)}: analytic {a:.12e}, numeric {n:.12e}" for k, i, a, n in rows
           if not abs(a - n) <= RTOL * max(abs(n), scale)]
    assert not bad, f"{len(bad)} of {len(rows)} entries off (scale {scale:.2e}):\n" + "\n".join(bad[:20])
    resolved = [abs(a - n) / abs(n) for _, _, a, n in rows if abs(n) > scale]
    assert len(resolved) >= min_resolved * len(rows), (f"only {len(resolved)} of {len(rows)} entries above "
                                                       f"{scale:.2e}")
    return max(resolved), len(rows)
