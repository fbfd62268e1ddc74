"""Run a benchmark on the BLAS kernel a user's machine would pick, not one the environment forces.

This project's machine sets ``OPENBLAS_CORETYPE=Haswell`` and ``OPENBLAS_L2_SIZE``
in every process's environment. OpenBLAS reads them when NumPy loads it, and
then runs its AVX2 (Haswell) kernels on an AVX-512 CPU whose own choice
(SkylakeX) makes the matrix products 1.4-1.7x faster. Timings taken under
them are not what a user sees. So each benchmark script, when run as a
script, calls :func:`use_real_blas` before it imports NumPy: if either
variable is set, the script starts again (``os.execve``, same interpreter,
same arguments) without them, and notes in ``NPVAE_BENCH_REMOVED_BLAS_ENV``
what it removed, for the output to report beside the kernel that
threadpoolctl then names (:func:`describe`). Only the benchmark process
and its children are affected; tests, which import these modules rather
than run them, keep the environment they find. ``NPVAE_BENCH_KEEP_BLAS_ENV=1``
keeps the variables (to measure under them on purpose).

This module imports nothing heavy: it must run before NumPy loads.
"""

from __future__ import annotations

import os
import sys

FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED = "NPVAE_BENCH_REMOVED_BLAS_ENV"
KEEP = "NPVAE_BENCH_KEEP_BLAS_ENV"


def use_real_blas() -> None:
    """Re-run this process without :data:`FORCED` in its environment, if any is set (see the module docstring)."""
    if os.environ.get(KEEP) == "1":
        return
    found = {k: os.environ[k] for k in FORCED if k in os.environ}
    if not found:
        return
    env = {k: v for k, v in os.environ.items() if k not in FORCED}
    env[REMOVED] = ",".join(f"{k}={v}" for k, v in found.items())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def removed() -> str | None:
    """What :func:`use_real_blas` removed, as ``NAME=value,...``; ``None`` if nothing."""
    return os.environ.get(REMOVED) or None


def cpu() -> str | None:
    """The CPU's model name, family and model from ``/proc/cpuinfo`` (None where there is none): the
    machines these benchmarks run on change between sessions, and with them every figure."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name")
    return f"{name} (family {fields.get('cpu family')}, model {fields.get('model')})" if name else None


def describe() -> dict:
    """The CPU, the BLAS as threadpoolctl reports it (after NumPy is loaded), and the variables removed or kept."""
    from threadpoolctl import threadpool_info

    blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
    kept = {k: os.environ[k] for k in FORCED if k in os.environ}
    return {"cpu": cpu(), "blas_kernel": ",".join(str(d.get("architecture")) for d in blas) or None,
            "blas": [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')}, "
                     f"{d.get('num_threads')} threads)" for d in blas],
            "blas_env_removed": removed(), "blas_env_kept": kept or None}
