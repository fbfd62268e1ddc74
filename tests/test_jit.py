"""How the kernels are compiled: as plain Python too, lazily, and cached on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import npvae

TESTS = Path(__file__).resolve().parent


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_kernel_tests_pass_without_jit():
    """The same kernel tests, with every kernel run as the plain Python it is written in."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "test_kernels.py"),
         str(TESTS / "test_layers.py")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "NUMBA_DISABLE_JIT": "1", "HYPOTHESIS_PROFILE": "nojit"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_disable_jit_really_runs_python():
    proc = run("import numpy as np; from npvae import kernels as K; "
               "print(type(K.bias_act_forward).__name__)", NUMBA_DISABLE_JIT="1")
    assert proc.stdout.strip() == "function", proc.stderr


def test_import_is_light():
    proc = run("import sys, npvae; print('numba' in sys.modules, 'matplotlib' in sys.modules)")
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_warmup_fills_the_disk_cache():
    elapsed = npvae.warmup()
    assert elapsed > 0
    cache_dir = Path(npvae.__file__).parent / "__pycache__"
    index = list(cache_dir.glob("kernels.*.nbi"))
    assert index, f"no Numba cache index in {cache_dir}"
