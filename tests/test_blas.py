"""The BLAS lookup the fused step needs: it must find NumPy's own OpenBLAS where NumPy ships one.

tests/test_fused.py skips itself when the lookup finds nothing (a NumPy on
another BLAS); this test makes sure a broken lookup cannot pass for that on
the platform CI runs, Linux with NumPy's OpenBLAS wheel.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from npvae import _blas


def numpys_own_openblas() -> list[dict]:
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure NumPy's BLAS is loaded
    return [i for i in threadpool_info() if i.get("internal_api") == "openblas" and "numpy" in i.get("filepath", "")]


def test_the_lookup_finds_numpys_openblas_on_linux():
    if sys.platform != "linux" or not numpys_own_openblas():
        pytest.skip("not Linux with the OpenBLAS that NumPy's wheel ships")
    blas = _blas.numpy_blas()
    assert blas is not None, f"NumPy ships OpenBLAS here ({numpys_own_openblas()[0]['filepath']}) but it was not found"
