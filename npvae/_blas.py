"""The BLAS that NumPy loaded, called directly: ``cblas_?gemm``'s address and the thread count.

:mod:`npvae.fused` splits a training step over the cores itself and runs
each matrix product on one core, from compiled code. It needs the very
``gemm`` NumPy's ``matmul`` uses (so both paths compute the same products
the same way) and a way to keep that library from starting threads of its
own meanwhile. Both are found here, once, by name, in the OpenBLAS that
threadpoolctl reports as loaded. NumPy's own wheels ship OpenBLAS with its
symbols renamed (``scipy_cblas_sgemm64_``, 64-bit integers); a plain build
has ``cblas_sgemm`` (32-bit integers) and is found too. Anything else (MKL,
Accelerate, an OpenMP build of OpenBLAS) gives ``None``, and training keeps
to the layer-by-layer path. Compiled code calls ``gemm`` through its address
(:func:`npvae.fused.call_gemm`): a plain integer argument, which keeps the
compiled step cacheable and its calls cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# (prefix, suffix, integer type of sizes and strides) of the naming schemes known
_SCHEMES = (("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64), ("", "", ctypes.c_int32))

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@dataclass(frozen=True)
class Blas:
    """NumPy's OpenBLAS: the address of ``cblas_?gemm`` per dtype, its integer width, its thread count.

    ``wide`` is True when sizes and strides are 64-bit integers (ILP64), False for 32-bit.
    """

    filepath: str
    gemm: dict[np.dtype, int]
    wide: bool
    _get_threads: Any
    _set_threads: Any

    def get_num_threads(self) -> int:
        return int(self._get_threads())

    def set_num_threads(self, n: int) -> None:
        self._set_threads(n)

    @contextlib.contextmanager
    def one_thread(self) -> Iterator[None]:
        """This BLAS on one thread in the body, its thread count restored after."""
        threads = self.get_num_threads()
        self.set_num_threads(1)
        try:
            yield
        finally:
            self.set_num_threads(threads)


_found: list[Blas | None] = []


def numpy_blas() -> Blas | None:
    """The OpenBLAS NumPy uses, with ``sgemm``, ``dgemm`` and thread control; ``None`` if not found."""
    if not _found:
        _found.append(_find())
    return _found[0]


def _find() -> Blas | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    for info in threadpool_info():
        if info.get("internal_api") != "openblas" or info.get("threading_layer") != "pthreads":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for prefix, suffix, size in _SCHEMES:
            names = {"s": f"{prefix}cblas_sgemm{suffix}", "d": f"{prefix}cblas_dgemm{suffix}",
                     "get": f"{prefix}openblas_get_num_threads{suffix}",
                     "set": f"{prefix}openblas_set_num_threads{suffix}"}
            found = {k: getattr(lib, name, None) for k, name in names.items()}
            fns = {k: f for k, f in found.items() if f is not None}
            if len(fns) < len(found):
                continue
            fns["get"].argtypes, fns["get"].restype = [], ctypes.c_int
            fns["set"].argtypes, fns["set"].restype = [ctypes.c_int], None
            addr = {np.dtype(t): _address(fns[k]) for k, t in (("s", np.float32), ("d", np.float64))}
            return Blas(info["filepath"], addr, size is ctypes.c_int64, fns["get"], fns["set"])
    return None


def _address(fn: Any) -> int:
    """The address of a function found in a loaded library."""
    address = ctypes.cast(fn, ctypes.c_void_p).value
    assert address is not None  # a symbol the library exports is never at address 0
    return address
