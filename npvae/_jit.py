"""The one place that decides how npvae's kernels are compiled.

Every kernel in :mod:`npvae.kernels` is written as a plain Python function
and wrapped here, once, by :func:`jit`. Keeping the flags in one place means
the whole library changes together, and ``NUMBA_DISABLE_JIT=1`` turns every
kernel back into the plain Python it was written as (the tests run that way
too).

Flags
-----
``cache=True``
    compiled machine code is stored next to the source (``__pycache__``), so
    only the first run on a machine pays the compile time.
``fastmath``
    a chosen subset of LLVM's fast-math flags. ``nnan`` and ``ninf`` are left
    out on purpose: with them LLVM may assume no NaN or infinity exists and
    delete the very checks that catch a diverging run. ``reassoc`` lets
    reductions (sums) vectorize; ``contract`` allows fused multiply-add;
    ``arcp`` and ``nsz`` allow division by reciprocal and ignoring the sign of
    zero; ``afn`` allows faster approximations of math functions.
``error_model="numpy"``
    division by zero gives inf/nan as in NumPy instead of raising, and keeps
    the checks that would otherwise block vectorization out of the loops.
``parallel`` (only for :func:`npvae.fused.fused_step`)
    ``prange`` loops run on Numba's threads. Loop fusion is off: the step's
    ``prange`` loops must run one after the other, as written, because the
    second reads what every part of the first wrote, through addresses that
    Numba cannot see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

FASTMATH: frozenset[str] = frozenset({"reassoc", "contract", "arcp", "nsz", "afn"})
#: For code whose rounding is designed step by step (the range reduction in
#: ``kernels._exp_nonpositive``): reassociation would fold ``(x + k a) + k b``
#: into ``x + k (a + b)`` and lose the extra precision. LLVM keeps these flags
#: per instruction, so they hold after the function is inlined into a kernel.
FASTMATH_EXACT: frozenset[str] = frozenset({"contract", "nsz"})
CACHE: bool = True


def jit(func: F, *, exact: bool = False, parallel: bool = False) -> F:
    """Compile ``func`` with npvae's flags (``exact``: without reassociation; ``parallel``: its ``prange`` loops)."""
    import numba

    flags = FASTMATH_EXACT if exact else FASTMATH
    par: Any = {"prange": True, "fusion": False} if parallel else False
    compiled = numba.njit(cache=CACHE, fastmath=set(flags), error_model="numpy", nogil=True, parallel=par)(func)
    return cast(F, compiled)  # a Dispatcher, called with func's arguments and returning what func returns


def by_precision(f32: Callable[[Any], Any], f64: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One scalar function that runs ``f32`` on float32 arguments and ``f64`` on others.

    In compiled code the choice is made at compile time from the argument's
    type (a Numba ``overload``), so a kernel that calls it specializes per
    dtype with no branch in its loop, and stays cacheable (passing jitted
    functions as arguments is not reliably cached by Numba). Under
    ``NUMBA_DISABLE_JIT=1`` the same choice is made in Python.
    """
    import numba
    import numpy as np

    # No annotations on these two: Numba requires the overload's signature to
    # match the implementations' exactly, annotations included.
    def choose(x):
        return f32(x) if isinstance(x, np.float32) else f64(x)

    if not jit_disabled():
        from numba.extending import overload

        @overload(choose, jit_options={"fastmath": set(FASTMATH_EXACT)})
        def _choose(x):
            if isinstance(x, numba.types.Float) and x.bitwidth == 32:
                return lambda x: f32(x)
            return lambda x: f64(x)

    return choose


def jit_disabled() -> bool:
    """Whether ``NUMBA_DISABLE_JIT`` is set, so that :func:`jit` leaves functions as plain Python."""
    import numba

    # numba.config sets its attributes from the environment at run time: no type checker can see them.
    return bool(getattr(numba.config, "DISABLE_JIT", False))
