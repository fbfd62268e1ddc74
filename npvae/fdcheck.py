"""Finite-difference gradient checks for your own functions.

Two checks, both along random directions (cheap for many parameters, and a
wrong entry anywhere shows up in every direction):

* :func:`gradcheck` for a scalar function ``f(x)`` and its claimed gradient:
  compares ``<grad, u>`` with the derivative of ``f`` along ``u`` by
  differences.
* :func:`check_vjp` for an array function ``y = fun(x)`` and its backward
  ``dx = vjp(dy)`` (a vector-Jacobian product), in the style of autograd's
  ``check_vjp``: with a random upstream gradient ``dy`` and direction ``u``,
  compares ``<vjp(dy), u>`` with ``<dy, d fun(x + t u) / dt>`` by differences.

The derivative along ``u`` is the central difference
``D(h) = (f(x + h u) - f(x - h u)) / (2 h)`` extrapolated once (Richardson):
``(4 D(h) - D(2 h)) / 3``, whose truncation error is O(h^4) instead of
O(h^2). Plain central differences mistake a correct gradient for a wrong one
when the derivative along ``u`` is small next to the function's third
derivative there (a hypothesis search found such a case in the VAE's loss:
off by 5e-6 relative at h = 1e-5). Rounding adds about
``1.5 eps_machine |f| / h``: around 1e-11 relative at h = 1e-5 in float64,
1e-1 in float32, so run the checks in float64 (docs/derivation.md, Eq. (C1)).

A direction passes when the two numbers agree within ``rtol`` relative, or
when they differ by less than the rounding noise of the extrapolated
difference itself, ``12 eps_machine max|f(x +- h u), f(x +- 2h u)| / h``: a
derivative that small cannot be resolved by finite differences, so
disagreement there is no evidence either way.
:attr:`GradcheckResult.max_rel_error` reports the plain relative error
regardless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_TINY = 1e-300
#: Rounding noise of the extrapolated difference, in units of eps_machine |f| / h: 1.5 (see the
#: module docstring), with the same safety factor of 8 as before extrapolation.
_NOISE = 12.0


@dataclass
class GradcheckResult:
    """Outcome of a check: analytic and numerical directional derivatives."""

    analytic: list[float] = field(default_factory=list)
    numeric: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    rtol: float = 1e-6

    def add(self, analytic: float, numeric: float, f_scale: float, h: float) -> None:
        """Record one direction; ``f_scale`` is the magnitude of the values differenced."""
        self.analytic.append(analytic)
        self.numeric.append(numeric)
        self.noise.append(_NOISE * np.finfo(np.float64).eps * f_scale / h)

    @property
    def rel_errors(self) -> list[float]:
        """``|a - n| / max(|a|, |n|)`` for each direction."""
        return [abs(a - n) / max(abs(a), abs(n), _TINY) for a, n in zip(self.analytic, self.numeric)]

    @property
    def max_rel_error(self) -> float:
        """The largest relative error over the directions."""
        return max(self.rel_errors, default=0.0)

    @property
    def ok(self) -> bool:
        """Whether every direction agrees within ``rtol`` or within the rounding noise."""
        return all(e <= self.rtol or abs(a - n) <= z
                   for e, a, n, z in zip(self.rel_errors, self.analytic, self.numeric, self.noise))

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        pairs = ", ".join(f"{a:.6e} vs {n:.6e}" for a, n in zip(self.analytic, self.numeric))
        return (f"gradcheck {verdict}: max relative error {self.max_rel_error:.3e} (rtol {self.rtol:g}) over "
                f"{len(self.analytic)} directions; analytic vs numeric: {pairs}")


def _directions(x: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.standard_normal(x.shape) for _ in range(n)]


def _extrapolated(d_h: float, d_2h: float) -> float:
    """Richardson's extrapolation of central differences at steps h and 2h: error O(h^4)."""
    return (4.0 * d_h - d_2h) / 3.0


def _check_float64(x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError(f"gradient checks need a float64 array x, got {getattr(x, 'dtype', type(x).__name__)}")


def gradcheck(f: Callable[[np.ndarray], float], x: np.ndarray, grad: np.ndarray, *,
              rng: np.random.Generator | None = None, n_directions: int = 5, h: float = 1e-5,
              rtol: float = 1e-6) -> GradcheckResult:
    """Check ``grad`` (the claimed gradient of scalar ``f`` at ``x``) by extrapolated central differences.

    ``f`` is evaluated at ``x +- h u`` and ``x +- 2h u`` for each direction
    ``u``; ``x`` itself is left unchanged.

    Returns
    -------
    GradcheckResult
        Truthy when every direction agrees within ``rtol``; ``str()`` explains.
    """
    _check_float64(x)
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {x.shape}, got {grad.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    res = GradcheckResult(rtol=rtol)
    for u in _directions(x, rng, n_directions):
        fp, fm = float(f(x + h * u)), float(f(x - h * u))
        fp2, fm2 = float(f(x + 2 * h * u)), float(f(x - 2 * h * u))
        numeric = _extrapolated((fp - fm) / (2 * h), (fp2 - fm2) / (4 * h))
        res.add(float(np.sum(grad * u)), numeric, max(abs(fp), abs(fm), abs(fp2), abs(fm2)), h)
    return res


def check_vjp(fun: Callable[[np.ndarray], np.ndarray], vjp: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *,
              rng: np.random.Generator | None = None, n_directions: int = 5, h: float = 1e-5,
              rtol: float = 1e-6) -> GradcheckResult:
    """Check a backward pass ``vjp(dy) -> dx`` of ``fun`` at ``x`` with random ``dy``.

    ``fun`` is evaluated at ``x +- h u`` and ``x +- 2h u``, and the
    differences are extrapolated as in :func:`gradcheck`. ``vjp`` is called
    after ``fun(x)`` has been evaluated at ``x`` itself, so a layer's cached
    forward values are those of ``x``. Outputs of ``fun`` are copied, so
    layers that reuse their output buffers are fine.
    """
    _check_float64(x)
    rng = rng if rng is not None else np.random.default_rng(0)
    res = GradcheckResult(rtol=rtol)
    for u in _directions(x, rng, n_directions):
        y_plus = np.array(fun(x + h * u), dtype=np.float64)
        y_minus = np.array(fun(x - h * u), dtype=np.float64)
        y_plus2 = np.array(fun(x + 2 * h * u), dtype=np.float64)
        y_minus2 = np.array(fun(x - 2 * h * u), dtype=np.float64)
        y = np.array(fun(x), dtype=np.float64)
        dy = rng.standard_normal(y.shape)
        dx = np.asarray(vjp(dy.copy()))
        if dx.shape != x.shape:
            raise ValueError(f"vjp returned shape {dx.shape}, expected the shape of x {x.shape}")
        scale = float(np.sum(np.abs(dy) * np.max(np.abs([y_plus, y_minus, y_plus2, y_minus2]), axis=0)))
        numeric = _extrapolated(float(np.sum(dy * (y_plus - y_minus))) / (2 * h),
                                float(np.sum(dy * (y_plus2 - y_minus2))) / (4 * h))
        res.add(float(np.sum(dx * u)), numeric, scale, h)
    return res


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Full central-difference gradient of scalar ``f`` at ``x``, one coordinate at a time
    (``2 * x.size`` calls: for small arrays)."""
    _check_float64(x)
    g = np.empty_like(x)
    xp = x.copy()
    for i in np.ndindex(x.shape):
        old = xp[i]
        xp[i] = old + h
        fp = float(f(xp))
        xp[i] = old - h
        fm = float(f(xp))
        xp[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g
