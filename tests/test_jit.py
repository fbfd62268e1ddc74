"""How the kernels are compiled: as plain Python too, lazily, and cached on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import npvae

TESTS = Path(__file__).resolve().parent


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


#: Training runs, not kernel checks: as plain Python they took 37 of the 51 s this test took with them
NOT_WITHOUT_JIT = ("test_iwae.py::test_training_takes_the_layer_path_allocates_nothing_per_step_and_lowers_the_loss",
                   "test_iwae.py::test_bound_tightens_with_k_towards_log_px_by_quadrature")


def test_kernel_tests_pass_without_jit():
    """The same kernel tests, with every kernel run as the plain Python it is written in."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(TESTS / name) for name in ("test_kernels.py", "test_layers.py", "test_gated.py", "test_iwae.py",
                                          "test_logvar_bounds.py")),
         *(f"--deselect=tests/{node}" for node in NOT_WITHOUT_JIT)], cwd=TESTS.parent,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "NUMBA_DISABLE_JIT": "1", "HYPOTHESIS_PROFILE": "nojit"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    assert f"{len(NOT_WITHOUT_JIT)} deselected" in proc.stdout  # both names still exist


def test_disable_jit_really_runs_python():
    proc = run("import numpy as np; from npvae import kernels as K; "
               "print(type(K.bias_act_forward).__name__)", NUMBA_DISABLE_JIT="1")
    assert proc.stdout.strip() == "function", proc.stderr


def test_import_is_light():
    proc = run("import sys, npvae; print('numba' in sys.modules, 'matplotlib' in sys.modules)")
    assert proc.stdout.split() == ["False", "False"], proc.stderr


WARMUP_CACHE_STATS = """
import json, sys, numba, npvae
from npvae import fused, kernels
elapsed = npvae.warmup()
hits = misses = 0
for module in (kernels, fused):
    for f in vars(module).values():
        if isinstance(f, numba.core.registry.CPUDispatcher):
            hits += sum(f.stats.cache_hits.values())
            misses += sum(f.stats.cache_misses.values())
print(json.dumps({"elapsed": elapsed, "hits": hits, "misses": misses, "package": npvae.__file__}))
"""


def _cache_files(cache_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(cache_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in cache_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_warmup_fills_the_disk_cache_then_loads_from_it(tmp_path):
    """A cold cache, then a warm one: warmup() in a fresh process with an empty NUMBA_CACHE_DIR compiles
    every kernel and writes its machine code there; a second fresh process loads all of it from there,
    compiling nothing and rewriting no file.

    Run in subprocesses with a cache directory of its own: in the test process, other tests (and earlier
    runs) have already filled npvae's own cache, so a warmup() there would pass whatever it did. The
    cold run compiles for most of a minute (README: 47.6 s).
    """
    cache_dir = tmp_path / "numba_cache"
    cache_dir.mkdir()
    cold = run(WARMUP_CACHE_STATS, NUMBA_CACHE_DIR=str(cache_dir))
    assert cold.returncode == 0, cold.stderr[-3000:]
    first = json.loads(cold.stdout.strip().splitlines()[-1])
    assert Path(first["package"]).parent == Path(npvae.__file__).parent
    assert first["misses"] > 0 and first["hits"] == 0, first
    written = _cache_files(cache_dir)
    indexes = [name for name in written if name.endswith(".nbi")]
    assert any(Path(n).name.startswith("kernels.") for n in indexes), f"no kernels index in {sorted(written)}"

    warm = run(WARMUP_CACHE_STATS, NUMBA_CACHE_DIR=str(cache_dir))
    assert warm.returncode == 0, warm.stderr[-3000:]
    second = json.loads(warm.stdout.strip().splitlines()[-1])
    # every signature comes from the cache (fewer hits than the cold run's misses: a helper compiled into
    # its caller, as _adam_one into adam_update, is loaded with the caller, never on its own)
    assert second["misses"] == 0 and 0 < second["hits"] <= first["misses"], (first, second)
    assert _cache_files(cache_dir) == written  # nothing recompiled, nothing rewritten
    assert second["elapsed"] < first["elapsed"], (first, second)


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


WARM_LOADS = """
import json, sys, numpy as np, npvae
from npvae import _warmup, kernels
pixels = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
_warmup.warm_training(npvae.VAE(784, (16,), 2, seed=0), pixels, npvae.Adam(), None, 1 / 255,
                      **json.loads(sys.argv[1]))
print(len(kernels.gather_rows.signatures))
"""


@pytest.mark.parametrize("options, loads", [({"fused": True}, 0), ({"fused": True, "binarized": True}, 1),
                                            ({"fused": False}, 1)], ids=["fused", "fused, binarized", "layers"])
def test_warm_training_loads_the_batch_gather_only_where_train_calls_it(options: dict, loads: int) -> None:
    """Each kernel loaded holds memory (issue #16's peak RSS): the fused step gathers its own rows, so
    warm_training loads ``gather_rows`` only for the layer path and for binarized batches."""
    proc = subprocess.run([sys.executable, "-c", WARM_LOADS, json.dumps(options)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == str(loads)


COMPILES_DURING_EPOCHS = """
import json, time, numpy as np, npvae
from numba.core import event

compiles = []


class Compiles(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        compiles.append(time.perf_counter())


event.register("numba:compile", Compiles())
pixels = np.random.default_rng(0).integers(0, 256, (300, 784), dtype=np.uint8)
floats = (pixels / 255).astype(np.float64)
runs = {
    "fused, uint8, x_val": (npvae.VAE(784, (32,), 4, seed=0), pixels,
                            dict(pixel_scale=1 / 255, x_val=pixels[:50], progress=True)),
    "layer, SGD, clip_norm, float64": (npvae.VAE(784, (32,), 4, dtype=np.float64, seed=0), floats,
                                       dict(optimizer=npvae.SGD(0.01, 0.9), clip_norm=1.0, x_val=floats[:50])),
    "gated, bounded, dynamic binarization": (npvae.VAE(784, (16, 16), 4, layer="gated", logvar_bounds=(-6, 2),
                                                       seed=0), pixels,
                                             dict(pixel_scale=1 / 255, binarize="dynamic", progress=True)),
}
out = {}
for name, (vae, x, options) in runs.items():
    ends = []
    before = len(compiles)
    history = npvae.train(vae, x, epochs=2, batch_size=100, on_epoch=lambda r: ends.append(time.perf_counter()),
                          **options)
    start = ends[0] - history[0]["seconds"]  # earlier than the clock's start: stricter
    out[name] = {"compiles": len(compiles) - before, "after_the_clock": sum(t > start for t in compiles)}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_train_compiles_before_its_first_epochs_clock(tmp_path):
    """On a new machine (an empty NUMBA_CACHE_DIR), ``npvae.train`` compiles what it needs before the
    first epoch's clock starts: no compile happens during any epoch or its validation, so ``seconds`` is
    the epoch's alone (issue #16). With ``progress=True`` it says it is compiling, once per run that
    compiles. Three paths: the fused step on uint8 pixels with validation, the layer path with SGD and
    clipping in float64, and a gated model with dynamic binarization.

    The compile events are Numba's own (``numba:compile``: fired for compiling, not for loading from the
    cache), so the test fails if anything the run calls is left to compile inside an epoch.
    """
    cache = tmp_path / "numba_cache"
    cache.mkdir()
    proc = run(COMPILES_DURING_EPOCHS, NUMBA_CACHE_DIR=str(cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, counts in result.items():
        assert counts["compiles"] > 0, (name, counts)  # the cache was empty: this run had to compile
        assert counts["after_the_clock"] == 0, (name, counts)
    said = [line for line in proc.stderr.splitlines() if "compiling the training kernels" in line]
    assert len(said) == 2, proc.stderr[-3000:]
