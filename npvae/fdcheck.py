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

:func:`numerical_gradient` gives the full central-difference gradient, one
coordinate at a time, for small arrays.

Every evaluation of ``f`` or ``fun`` gets an array of its own, so a function
that changes its argument in place (``v -= v.mean()``, ``np.tanh(v, out=v)``)
is differentiated correctly, and the caller's ``x`` and ``grad`` are never
modified.

The derivative along ``u`` is the central difference
``D(h) = (f(x + h u) - f(x - h u)) / (2 h)`` extrapolated once (Richardson):
``(4 D(h) - D(2 h)) / 3``, whose truncation error is O(h^4) instead of
O(h^2). Plain central differences mistake a correct gradient for a wrong one
when the derivative along ``u`` is small next to the function's third
derivative there (a hypothesis search found such a case in the VAE's loss:
off by 5e-6 relative at h = 1e-5). Rounding adds about
``1.5 eps_machine |f| / h``: around 1e-11 relative at h = 1e-5 in float64,
1e-1 in float32, so run the checks in float64 (docs/derivation.md, Eq. (C1)).

Each direction ends in one of four outcomes, with the rounding noise of the
extrapolated difference ``z = 12 eps_machine max|f(x +- h u), f(x +- 2h u)| / h``
(1.5 from above with a safety factor of 8):

* **agree**: the two numbers agree within ``rtol`` relative;
* **within noise**: they differ by more than ``rtol`` but by less than ``z``,
  and the derivative itself is larger than ``z`` (the difference cannot
  resolve it to ``rtol``, but it does resolve it);
* **unresolved**: they differ by less than ``z`` and both are no larger than
  ``z``: the rounding noise swamps the derivative, so the differences cannot
  tell this gradient from another (``f = 1e12 + sum(v)`` with a claimed
  gradient of zero);
* **disagree**: they differ by more than ``rtol`` and by more than ``z``.

The check is *ok* when every direction agrees or agrees within noise,
*FAILED* when any direction disagrees, and otherwise *inconclusive*, which is
not ok: subtract the constant part of ``f`` (or check where its value is
smaller) and check again. :attr:`GradcheckResult.max_rel_error` reports the
plain relative error regardless.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._validate import _describe, check_float, check_int

_TINY = 1e-300
#: Rounding noise of the extrapolated difference, in units of eps_machine |f| / h: 1.5 (see the
#: module docstring), with the same safety factor of 8 as before extrapolation.
_NOISE = 12.0

Outcome = Literal["agree", "within noise", "unresolved", "disagree"]


@dataclass
class GradcheckResult:
    """Outcome of a check: analytic and numerical directional derivatives, one entry per direction.

    Attributes
    ----------
    analytic
        ``<grad, u>`` (or ``<vjp(dy), u>``) for each direction ``u``.
    numeric
        The extrapolated finite difference along ``u``.
    noise
        The rounding noise ``z`` of that difference (see the module docstring).
    rtol
        The relative tolerance asked for.
    f_scale
        The largest ``|f|`` among the values differenced, for each direction.
    h
        The step the differences used, for each direction.

    ``bool(result)`` is :attr:`ok`; :attr:`status` is ``"ok"``, ``"FAILED"``
    or ``"inconclusive"``, and ``str(result)`` explains it.
    """

    analytic: list[float] = field(default_factory=list)
    numeric: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    rtol: float = 1e-6
    f_scale: list[float] = field(default_factory=list)
    h: list[float] = field(default_factory=list)

    def add(self, analytic: float, numeric: float, f_scale: float, h: float) -> None:
        """Record one direction; ``f_scale`` is the magnitude of the values differenced, ``h`` the step."""
        self.analytic.append(analytic)
        self.numeric.append(numeric)
        self.noise.append(_NOISE * np.finfo(np.float64).eps * f_scale / h)
        self.f_scale.append(f_scale)
        self.h.append(h)

    @property
    def rel_errors(self) -> list[float]:
        """``|a - n| / max(|a|, |n|)`` for each direction (infinite where either is not finite)."""
        return [abs(a - n) / max(abs(a), abs(n), _TINY) if math.isfinite(a) and math.isfinite(n) else math.inf
                for a, n in zip(self.analytic, self.numeric, strict=True)]

    @property
    def max_rel_error(self) -> float:
        """The largest relative error over the directions."""
        return max(self.rel_errors, default=0.0)

    @property
    def outcomes(self) -> list[Outcome]:
        """What each direction showed: ``"agree"``, ``"within noise"``, ``"unresolved"`` or ``"disagree"``."""
        out: list[Outcome] = []
        for e, a, n, z in zip(self.rel_errors, self.analytic, self.numeric, self.noise, strict=True):
            if e <= self.rtol:
                out.append("agree")
            elif not abs(a - n) <= z:  # also catches NaN
                out.append("disagree")
            elif max(abs(a), abs(n)) > z:
                out.append("within noise")
            else:
                out.append("unresolved")
        return out

    @property
    def status(self) -> Literal["ok", "FAILED", "inconclusive"]:
        """``"FAILED"`` if any direction disagrees, else ``"inconclusive"`` if any is unresolved (or
        no direction was checked), else ``"ok"``."""
        outcomes = self.outcomes
        if "disagree" in outcomes:
            return "FAILED"
        if not outcomes or "unresolved" in outcomes:
            return "inconclusive"
        return "ok"

    @property
    def ok(self) -> bool:
        """Whether every direction agrees within ``rtol``, or within the rounding noise of a derivative
        larger than that noise. An inconclusive check is not ok."""
        return self.status == "ok"

    @property
    def inconclusive(self) -> bool:
        """Whether no direction disagrees but in some the rounding noise swamps the derivative, so the
        check could not decide (also when no direction was checked)."""
        return self.status == "inconclusive"

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        status, outcomes = self.status, self.outcomes
        pairs = ", ".join(f"{a:.6e} vs {n:.6e}" for a, n in zip(self.analytic, self.numeric, strict=True))
        summary = (f"max relative error {self.max_rel_error:.3e} (rtol {self.rtol:g}) over "
                   f"{len(self.analytic)} directions; analytic vs numeric: {pairs}")
        if status == "inconclusive":
            if not outcomes:
                return "gradcheck inconclusive: no direction was checked"
            k = outcomes.count("unresolved")
            idx = [i for i, o in enumerate(outcomes) if o == "unresolved"]
            return (f"gradcheck inconclusive: in {k} of {len(outcomes)} directions the derivative is no larger "
                    f"than the rounding noise of the finite differences (up to {max(self.noise[i] for i in idx):.3e},"
                    f" from |f| up to {max(self.f_scale[i] for i in idx):.3e} at h = {self.h[idx[0]]:g}), so they "
                    "cannot tell this gradient from another; subtract the constant part of f, or check where "
                    f"|f| is smaller; {summary}")
        note = ""
        if status == "ok" and (k := outcomes.count("within noise")):
            note = f" ({k} of {len(outcomes)} directions agree within the rounding noise, not within rtol)"
        return f"gradcheck {status}{note}: {summary}"


def _directions(x: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.standard_normal(x.shape) for _ in range(n)]


def _extrapolated(d_h: float, d_2h: float) -> float:
    """Richardson's extrapolation of central differences at steps h and 2h: error O(h^4)."""
    return (4.0 * d_h - d_2h) / 3.0


def _check_float64(x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        what = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else _describe(x)
        raise TypeError(f"gradient checks need a float64 NumPy array x, got {what} "
                        "(convert with np.asarray(x, dtype=np.float64))")
    return x


def _check_callable(name: str, fun: object) -> None:
    if not callable(fun):
        raise TypeError(f"{name} must be a function, got {_describe(fun)}")


def _check_rng(rng: object) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)) or None, "
                        f"got {_describe(rng)}")
    return rng


def _check_options(n_directions: object, h: object, rtol: object) -> tuple[int, float, float]:
    return (check_int("n_directions", n_directions, minimum=1), check_float("h", h),
            check_float("rtol", rtol, minimum=0.0, inclusive=True))


def _scalar(value: object, where: str) -> float:
    """``f``'s value as a float: a real number, or a real array of size 1 (any shape, via ``.item()``)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
    else:
        arr = np.asarray(value) if isinstance(value, np.ndarray) or hasattr(value, "__array__") else None
        if arr is None or arr.dtype.kind not in "iuf" or arr.size != 1:
            raise TypeError(f"f must return a scalar (a real number, or an array of size 1), got "
                            f"{_describe(value)} at {where}")
        v = float(arr.item())
    if not math.isfinite(v):
        raise ValueError(f"f returned {v} at {where}; finite differences need f finite near x")
    return v


def _array(value: object, where: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """``fun``'s value as a float64 copy, checked for type, finiteness and a constant shape."""
    try:
        y = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"fun must return an array of real numbers, got {_describe(value)} at {where} ({exc})") from exc
    if shape is not None and y.shape != shape:
        raise ValueError(f"fun returned shape {y.shape} at {where} but {shape} at x + h u: its output shape "
                         "must not depend on the input's values")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"fun returned {int(np.count_nonzero(~np.isfinite(y)))} NaN or infinite value(s) at "
                         f"{where}; finite differences need fun finite near x")
    return y


def _as_gradient(grad: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A float64 copy of ``grad`` (any array-like of real numbers with the shape of x)."""
    try:
        g = np.array(grad, dtype=None)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers with the shape of x {shape}, "
                        f"got {_describe(grad)} ({exc})") from exc
    if g.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers with the shape of x {shape}, "
                        f"got {_describe(grad)} of dtype {g.dtype}")
    if g.shape != shape:
        raise ValueError(f"{name} must have the shape of x {shape}, got {g.shape}")
    return g.astype(np.float64)


def gradcheck(f: Callable[[np.ndarray], Any], x: np.ndarray, grad: Any, *,
              rng: np.random.Generator | None = None, n_directions: int = 5, h: float = 1e-5,
              rtol: float = 1e-6) -> GradcheckResult:
    """Check ``grad`` (the claimed gradient of scalar ``f`` at ``x``) by extrapolated central differences.

    Parameters
    ----------
    f
        The function: takes an array shaped like ``x`` and returns a real
        number (or an array of size 1). It gets a fresh array each call and
        may change it.
    x
        The point, a float64 array; left unchanged.
    grad
        The claimed gradient: an array-like of real numbers shaped like ``x``
        (copied before ``f`` is first called).
    rng
        Draws the directions; default ``np.random.default_rng(0)``.
    n_directions
        How many random directions ``u`` (at least 1); ``f`` is evaluated at
        ``x +- h u`` and ``x +- 2h u`` for each.
    h
        The finite-difference step (> 0).
    rtol
        The relative tolerance for each direction.

    Returns
    -------
    GradcheckResult
        Truthy when every direction agrees (see the module docstring);
        ``.status`` is ``"ok"``, ``"FAILED"`` or ``"inconclusive"`` and
        ``str()`` explains.

    Raises
    ------
    TypeError
        ``x`` not a float64 array, ``grad`` not real numbers, ``f`` not
        returning a scalar, or a non-integer ``n_directions``.
    ValueError
        ``grad`` of another shape, ``n_directions < 1``, ``h <= 0``, or ``f``
        not finite near ``x``.
    """
    _check_callable("f", f)
    x = _check_float64(x)
    g = _as_gradient(grad, x.shape, "grad")
    n_directions, h, rtol = _check_options(n_directions, h, rtol)
    rng = _check_rng(rng)
    res = GradcheckResult(rtol=rtol)
    for k, u in enumerate(_directions(x, rng, n_directions)):
        fp = _scalar(f(x + h * u), f"x + h u (direction {k})")
        fm = _scalar(f(x - h * u), f"x - h u (direction {k})")
        fp2 = _scalar(f(x + 2 * h * u), f"x + 2h u (direction {k})")
        fm2 = _scalar(f(x - 2 * h * u), f"x - 2h u (direction {k})")
        numeric = _extrapolated((fp - fm) / (2 * h), (fp2 - fm2) / (4 * h))
        res.add(float(np.sum(g * u)), numeric, max(abs(fp), abs(fm), abs(fp2), abs(fm2)), h)
    return res


def check_vjp(fun: Callable[[np.ndarray], Any], vjp: Callable[[np.ndarray], Any], x: np.ndarray, *,
              rng: np.random.Generator | None = None, n_directions: int = 5, h: float = 1e-5,
              rtol: float = 1e-6) -> GradcheckResult:
    """Check a backward pass ``vjp(dy) -> dx`` of ``fun`` at ``x`` with random ``dy``.

    ``fun`` is evaluated at ``x +- h u`` and ``x +- 2h u``, and the
    differences are extrapolated as in :func:`gradcheck`. ``vjp`` is called
    after ``fun`` has been evaluated at (a copy of) ``x`` itself, so a layer's
    cached forward values are those of ``x``. Every call of ``fun`` gets an
    array of its own, which it may change in place (``np.tanh(v, out=v)``);
    the caller's ``x`` is never modified. Outputs of ``fun`` are copied, so
    layers that reuse their output buffers are fine, and ``vjp`` gets a copy
    of ``dy``.

    Options and the result are those of :func:`gradcheck`. Raises
    ``TypeError``/``ValueError`` like it, and ``ValueError`` when ``vjp``
    returns an array not shaped like ``x`` or ``fun``'s output shape changes.
    """
    _check_callable("fun", fun)
    _check_callable("vjp", vjp)
    x = _check_float64(x)
    n_directions, h, rtol = _check_options(n_directions, h, rtol)
    rng = _check_rng(rng)
    res = GradcheckResult(rtol=rtol)
    for k, u in enumerate(_directions(x, rng, n_directions)):
        y_plus = _array(fun(x + h * u), f"x + h u (direction {k})", None)
        y_minus = _array(fun(x - h * u), f"x - h u (direction {k})", y_plus.shape)
        y_plus2 = _array(fun(x + 2 * h * u), f"x + 2h u (direction {k})", y_plus.shape)
        y_minus2 = _array(fun(x - 2 * h * u), f"x - 2h u (direction {k})", y_plus.shape)
        x_here = x.copy()  # kept alive until vjp has run: a layer may cache a reference to its input
        y = _array(fun(x_here), "x", y_plus.shape)
        dy = rng.standard_normal(y.shape)
        dx = _as_gradient(vjp(dy.copy()), x.shape, "vjp's result")
        del x_here
        scale = float(np.sum(np.abs(dy) * np.max(np.abs([y_plus, y_minus, y_plus2, y_minus2]), axis=0)))
        numeric = _extrapolated(float(np.sum(dy * (y_plus - y_minus))) / (2 * h),
                                float(np.sum(dy * (y_plus2 - y_minus2))) / (4 * h))
        res.add(float(np.sum(dx * u)), numeric, scale, h)
    return res


def numerical_gradient(f: Callable[[np.ndarray], Any], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Full central-difference gradient of scalar ``f`` at ``x``, one coordinate at a time.

    ``2 * x.size`` calls of ``f``, so for small arrays. Each call gets a fresh
    copy of ``x`` with one coordinate moved by ``+-h``, so ``f`` may change
    its argument in place; ``x`` itself is left unchanged. ``f`` must return a
    real number or an array of size 1. Plain (not extrapolated) central
    differences: the error is O(h^2) plus rounding of about
    ``eps_machine |f| / h``.
    """
    _check_callable("f", f)
    x = _check_float64(x)
    h = check_float("h", h)
    g = np.empty_like(x)
    for i in np.ndindex(x.shape):
        xp = x.copy()
        xp[i] += h
        fp = _scalar(f(xp), f"x + h e_{list(i)}")
        xm = x.copy()
        xm[i] -= h
        fm = _scalar(f(xm), f"x - h e_{list(i)}")
        g[i] = (fp - fm) / (2 * h)
    return g
