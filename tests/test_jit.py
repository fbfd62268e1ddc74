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


WARMUP_THEN_TRAIN = """
import numba, numpy as np, npvae
from npvae import kernels
npvae.warmup()
dispatchers = {n: f for n, f in vars(kernels).items() if isinstance(f, numba.core.registry.CPUDispatcher)}
before = {n: len(f.signatures) for n, f in dispatchers.items()}
pixels = np.random.default_rng(0).integers(0, 256, (10, 6)).astype(np.uint8)
for dtype in (np.float32, np.float64):
    for likelihood, activation in (("bernoulli", "relu"), ("gaussian", "tanh")):
        for optimizer in (npvae.Adam(), npvae.SGD(0.01, 0.9)):
            vae = npvae.VAE(6, (5,), 2, likelihood=likelihood, activation=activation, dtype=dtype, seed=0)
            x = (pixels / 255).astype(dtype)
            npvae.train(vae, x, epochs=1, batch_size=4, optimizer=optimizer, x_val=x[:3], clip_norm=1.0)
            npvae.train(vae, pixels, epochs=1, batch_size=4, optimizer=optimizer, pixel_scale=1 / 255)
print(sorted(n for n, f in dispatchers.items() if len(f.signatures) != before[n]))
"""


def test_warmup_compiles_everything_training_uses():
    """In a fresh process, training after warmup() (float32, float64, uint8 pixels; Adam and SGD;
    both likelihoods) needs no kernel signature that warmup() did not already compile."""
    proc = run(WARMUP_THEN_TRAIN)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
