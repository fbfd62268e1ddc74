"""Input checks shared by every public entry point.

Each check raises ``TypeError`` for a wrong type and ``ValueError`` for a
wrong value, with a message that names the argument, what was expected and
what was given, so a learner's mistake surfaces at the call they made and not
as a traceback from deep inside NumPy or Numba.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of length {len(x)}"
    return f"{type(x).__name__} {x!r}"[:120]


PIXEL_HINT = " (scale integer pixels to [0, 1] first, e.g. x / 255.0)"


def show(v: float | np.floating, bound: float) -> str:
    """``v`` for a message about ``bound``: ``%g``, or all the digits its dtype needs to round-trip
    when ``%g`` would print the bound itself (float32 1.0000001 against 1 prints as 1.0000001, not 1)."""
    s = f"{float(v):g}"
    if float(s) == bound and v != bound:
        s = str(v) if isinstance(v, np.floating) else repr(float(v))
    return s


def check_data(name: str, x: object, *, width: int | None = None, ndim: int = 2,
               unit_range: bool = False, dtype: np.dtype | type | None = None,
               what: str = "", integer_hint: str = PIXEL_HINT) -> np.ndarray:
    """Check a data array and return it as a C-contiguous array of ``dtype``.

    Parameters
    ----------
    name
        The argument's name, used in messages.
    x
        What the user passed.
    width
        Required size of the last axis (the number of features), if known.
    ndim
        Required number of dimensions.
    unit_range
        Require every value in [0, 1] (pixel intensities for the Bernoulli
        decoder).
    dtype
        Convert to this float dtype (a copy only when the dtype or layout
        differs). ``None`` keeps the array's own float dtype.
    what
        What the array holds, for the dtype message (``" of latent codes"``).
    integer_hint
        Appended to the dtype message for an integer array (default: scale
        integer pixels to [0, 1]).

    Raises
    ------
    TypeError
        Not an ndarray, or not floating point (integer pixels 0..255 must be
        scaled to [0, 1] first: ``x / 255.0``).
    ValueError
        Wrong rank or width, empty, NaN or infinity, or outside [0, 1].
    """
    if not isinstance(x, np.ndarray):
        hint = " (convert with np.asarray(..., dtype=np.float32))" if isinstance(x, (list, tuple)) else ""
        raise TypeError(f"{name} must be a NumPy array, got {_describe(x)}{hint}")
    if not np.issubdtype(x.dtype, np.floating):
        hint = integer_hint if np.issubdtype(x.dtype, np.integer) else ""
        raise TypeError(f"{name} must be a floating-point array{what}, got dtype {x.dtype}{hint}")
    if x.ndim != ndim:
        want = f"(n, {width if width is not None else 'd'})" if ndim == 2 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {want}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); need at least one row")
    if width is not None and x.shape[-1] != width:
        raise ValueError(f"{name} must have {width} columns (shape (n, {width})), got shape {x.shape}")
    lo_v, hi_v = np.min(x), np.max(x)  # in the array's dtype, for the message
    lo, hi = float(lo_v), float(hi_v)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    if unit_range and (lo < 0.0 or hi > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1] for the Bernoulli likelihood, "
            f"got values in [{show(lo_v, 0.0)}, {show(hi_v, 1.0)}]"
            + (" (divide by 255?)" if hi > 1.0 else ""))
    if dtype is not None:
        x = np.ascontiguousarray(x, dtype=dtype)
    return np.ascontiguousarray(x)


def check_int(name: str, v: object, *, minimum: int = 1) -> int:
    """An integer (not bool) no smaller than ``minimum``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(v)}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def check_float(name: str, v: object, *, minimum: float = 0.0, inclusive: bool = False,
                maximum: float | None = None) -> float:
    """A finite real number above ``minimum`` (or at it, if ``inclusive``)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_describe(v)}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if v < minimum or (v == minimum and not inclusive):
        raise ValueError(f"{name} must be {'>=' if inclusive else '>'} {minimum:g}, got {show(v, minimum)}")
    if maximum is not None and v >= maximum:
        raise ValueError(f"{name} must be < {maximum:g}, got {show(v, maximum)}")
    return v


def check_rng(name: str, rng: object, default: np.random.Generator | int | None) -> np.random.Generator:
    """The Generator to draw from: ``rng`` itself, a new one seeded with ``rng`` if it is an int,
    or, when ``rng`` is ``None``, ``default`` treated the same way (``None``: unseeded).

    Never NumPy's global random state. Anything else (a ``RandomState``, a
    float, a string) is a ``TypeError``; a negative seed is a ``ValueError``.
    """
    if rng is None:
        rng = default
        if rng is None:
            return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral):
        hint = " (use np.random.default_rng(seed))" if isinstance(rng, np.random.RandomState) else ""
        raise TypeError(f"{name} must be a np.random.Generator or an int seed, got {_describe(rng)}{hint}")
    return np.random.default_rng(check_int(name, rng, minimum=0))


def check_choice(name: str, v: object, choices: Iterable[str]) -> str:
    """One of a fixed set of strings."""
    choices = tuple(choices)
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {v!r}")
    return str(v)


def check_dtype(name: str, dtype: object) -> np.dtype:
    """float32 or float64."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise TypeError(f"{name} must be np.float32 or np.float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name} must be np.float32 or np.float64, got {dt}")
    return dt
