#!/usr/bin/env python
"""Where a training step's time goes, piece by piece, against the matmul-only floor.

``bench_epoch.py`` says how far npvae is above the floor; this script says
what the difference is made of, and how far the fastest possible arrangement
of that work could go. One process, default configuration (784-400-20, ReLU,
Bernoulli, batch 128, float32, Adam lr 1e-3, BLAS on ``--threads`` threads),
four kinds of epoch alternating, medians over ``--epochs`` rounds:

* ``floor``: ``bench_epoch.Floor``, the eleven matrix products of an epoch
  alone (per step: the epoch's seconds over its steps);
* ``npvae``: ``npvae.train(..., fused=False)``, the layer path, nothing
  instrumented;
* ``instrumented``: the layer path with a timer around every matrix product
  that npvae's layers make, every npvae kernel and the optimizer step. The
  noise (``Generator.standard_normal``) and the Python around the calls are
  what is left over (``rest``); the noise is also timed alone;
* ``fused``: ``npvae.train`` as users run it, which takes the fused step
  (:mod:`npvae.fused`) where it applies: the layer path's work, split over
  the cores by npvae itself. It is printed beside the breakdown of the
  layer path, which it rearranges.

* where the fused step applies, five more, to say where *its* time above
  the floor goes: ``fused_direct`` (a :class:`npvae.fused.FusedStep` on
  ``--threads`` parts called in a loop, as train() calls it, on a second
  model), ``fused_1core`` (the same with ``parts=1``: one core does it all,
  BLAS on one thread), ``fused_forward`` (its forward pass and loss alone:
  ``FusedStep.evaluate_terms`` in batches of 128), ``floor_forward`` (the
  floor's four forward products alone) and ``floor_1thread`` (the floor
  with BLAS on one thread). ``fused_detail`` in the JSON splits the fused
  step's excess over the floor into the forward pass and loss, and the
  backward pass and update, and gives what the cores buy each of them.

From the medians, per step:

* ``products``: npvae's matrix products, and their excess over the floor
  (the same products, slowed by the caches that the other work leaves);
* ``optimizer``: ``Adam.step`` (its fused kernel and the Python loop over 8
  arrays);
* ``kernels``: every other npvae kernel (bias + activation, activation
  backward, loss, reparameterization + KL, the minibatch gather);
* ``rest``: the instrumented step minus all of the above.

and two bounds, as ratios to the floor:

* ``serial, products at floor speed``: floor + optimizer + kernels + rest,
  what npvae would take if its products ran as fast as the floor's;
* ``perfect split over the cores``: floor + rest + (optimizer + kernels) /
  threads, what it would take if, in addition, Adam and every kernel ran
  perfectly parallel on all cores with no cost for handing out the work.
  Splitting the products as well (the fused step) can go below it.

Each epoch starts after 0.3 s of idling (as in ``bench_epoch.py``), so no
thread left spinning by the one before takes the cores from it. The timers
cost a little (the instrumented step is slower than the plain one,
printed). This is a measurement, not part of npvae.

    python benchmarks/step_breakdown.py                  # 30,000 examples, 7 rounds
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import collections
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from bench_epoch import Floor  # noqa: E402

import npvae  # noqa: E402
from npvae import kernels, layers  # noqa: E402

KERNELS = ("bias_act_forward", "act_backward", "bernoulli_nll", "gaussian_sq_err", "reparam_kl_forward",
           "reparam_kl_backward", "gather_rows")
OPTIMIZER_KERNELS = ("adam_update", "sgd_momentum_update")
BATCH, HIDDEN, LATENT, INPUT = 128, 400, 20, 784


class _TimedNumpy:
    """Stands in for ``numpy`` inside ``npvae.layers``: ``matmul`` timed, everything else numpy's own."""

    def __init__(self, acc: dict[str, float]) -> None:
        self._acc = acc
        self.calls = 0

    def matmul(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = np.matmul(*args, **kwargs)
        self._acc["products"] += time.perf_counter() - t0
        self.calls += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _timed(f: Callable[..., Any], acc: dict[str, float], label: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = f(*args, **kwargs)
        acc[label] += time.perf_counter() - t0
        return out
    return wrapper


@contextlib.contextmanager
def instrumented(opt: Any, acc: dict[str, float]) -> Iterator[_TimedNumpy]:
    """Time npvae's products, kernels and ``opt.step`` into ``acc`` (seconds); everything restored on exit.

    Yields the stand-in for numpy, whose ``calls`` counts the products timed.
    """
    saved = {name: getattr(kernels, name) for name in KERNELS + OPTIMIZER_KERNELS}
    for name in KERNELS:
        setattr(kernels, name, _timed(saved[name], acc, f"kernel {name}"))
    for name in OPTIMIZER_KERNELS:
        setattr(kernels, name, _timed(saved[name], acc, "optimizer kernel"))
    opt.step = _timed(type(opt).step.__get__(opt), acc, "optimizer")
    timed_np = _TimedNumpy(acc)
    layers.np = timed_np  # type: ignore[assignment]
    try:
        yield timed_np
    finally:
        layers.np = np
        del opt.step
        for name, f in saved.items():
            setattr(kernels, name, f)


SETTLE = 0.3  # seconds


def noise_alone(dtype: np.dtype, repeats: int = 2000) -> float:
    """Median seconds of the step's noise draw, ``standard_normal(out=(1, B, K))``, alone."""
    rng, out = np.random.default_rng(0), np.empty((1, BATCH, LATENT), dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rng.standard_normal(out=out, dtype=dtype)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fused_epoch(step: Any, x: np.ndarray, seed: int) -> float:
    """Seconds for an epoch of ``step`` (a :class:`npvae.fused.FusedStep`) called directly, as train() calls it."""
    perm = np.random.default_rng([0, seed]).permutation(x.shape[0])
    rng = np.random.default_rng(seed)
    one = x.dtype.type(1)
    with step.one_blas_thread():
        t0 = time.perf_counter()
        for start in range(0, x.shape[0], BATCH):
            step(x, perm[start:start + BATCH], one, rng)
        return time.perf_counter() - t0


def fused_forward_epoch(step: Any, x: np.ndarray) -> float:
    """Seconds for the fused step's forward pass and loss alone over ``x`` in batches (its evaluation mode)."""
    t0 = time.perf_counter()
    step.evaluate_terms(x, chunk=BATCH)
    return time.perf_counter() - t0


def breakdown(x: np.ndarray, rounds: int, threads: int) -> dict[str, Any]:
    """Per-step medians (ms) of the floor, npvae, the instrumented pieces, and the bounds."""
    n_steps = -(-x.shape[0] // BATCH)
    dtype = np.dtype(np.float32)
    vae = npvae.VAE(INPUT, (HIDDEN,), LATENT, likelihood="bernoulli", activation="relu", seed=0, dtype=dtype)
    opt = npvae.Adam(lr=1e-3)
    floor = Floor(x, BATCH, HIDDEN, dtype)
    runs: dict[str, list[float]] = collections.defaultdict(list)
    pieces: dict[str, list[float]] = collections.defaultdict(list)
    kinds = ["floor", "npvae", "instrumented", "fused"]
    from npvae import fused as _fused

    # the fused step, in detail: on 1 core (parts=1) and on `threads`, its forward pass alone, and the floor's
    # products on one BLAS thread and forward only; a second model so the first's training is left as it was
    vae2, opt2 = npvae.VAE(INPUT, (HIDDEN,), LATENT, seed=0, dtype=dtype), npvae.Adam(lr=1e-3)
    with _common.limit_threads(threads):
        fused_ok = _fused.unsupported(vae2, opt2, None) is None
    if fused_ok:
        steps = {1: _fused.FusedStep(vae2, opt2, parts=1), threads: _fused.FusedStep(vae2, opt2, parts=threads)}
        kinds += ["fused_direct", "fused_1core", "fused_forward", "floor_forward", "floor_1thread"]
    with _common.limit_threads(threads):
        npvae.train(vae, x[:3 * BATCH + x.shape[0] % BATCH], epochs=1, batch_size=BATCH, optimizer=opt, seed=10_000)
        # the layer path too: train() compiles what a run needs before its first epoch, once per process, and
        # that must not land in an instrumented run's pieces
        npvae.train(vae, x[:3 * BATCH + x.shape[0] % BATCH], epochs=1, batch_size=BATCH, optimizer=opt, seed=10_000,
                    fused=False)
        floor.epoch(3 * BATCH)
        if fused_ok:
            for st in steps.values():
                fused_epoch(st, x[:3 * BATCH + x.shape[0] % BATCH], 10_000)
                fused_forward_epoch(st, x[:3 * BATCH + x.shape[0] % BATCH])
        for r in range(rounds):
            for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                time.sleep(SETTLE)  # threads the previous epoch left spinning (OpenBLAS's ~0.1 s) stop first
                if kind == "floor":
                    seconds = floor.epoch()
                elif kind == "npvae":
                    seconds = npvae.train(vae, x, epochs=1, batch_size=BATCH, optimizer=opt, seed=r,
                                          fused=False)[0]["seconds"]
                elif kind == "fused":
                    seconds = npvae.train(vae, x, epochs=1, batch_size=BATCH, optimizer=opt, seed=r)[0]["seconds"]
                elif kind == "fused_direct":
                    seconds = fused_epoch(steps[threads], x, r)
                elif kind == "fused_1core":
                    seconds = fused_epoch(steps[1], x, r)
                elif kind == "fused_forward":
                    seconds = fused_forward_epoch(steps[threads], x)
                elif kind == "floor_forward":
                    seconds = floor.epoch(forward_only=True)
                elif kind == "floor_1thread":
                    with _common.limit_threads(1):
                        seconds = floor.epoch()
                else:
                    acc: dict[str, float] = collections.defaultdict(float)
                    with instrumented(opt, acc):
                        seconds = npvae.train(vae, x, epochs=1, batch_size=BATCH, optimizer=opt, seed=r,
                                              fused=False)[0]["seconds"]
                    for label, s in acc.items():
                        pieces[label].append(s / n_steps * 1e3)
                runs[kind].append(seconds / n_steps * 1e3)
    med = {k: statistics.median(v) for k, v in runs.items()}
    p = {k: statistics.median(v) for k, v in pieces.items()}
    kernel_ms = sum(v for k, v in p.items() if k.startswith("kernel "))
    rest = med["instrumented"] - p["products"] - p["optimizer"] - kernel_ms
    f = med["floor"]
    serial = f + p["optimizer"] + kernel_ms + rest
    split = f + rest + (p["optimizer"] + kernel_ms) / threads
    return {"kind": "step_breakdown", "examples": int(x.shape[0]), "steps_per_epoch": n_steps, "rounds": rounds,
            "threads": threads, "floor_ms": f, "npvae_ms": med["npvae"], "instrumented_ms": med["instrumented"],
            "npvae_over_floor": med["npvae"] / f, "fused_ms": med["fused"], "fused_over_floor": med["fused"] / f,
            "products_ms": p["products"],
            "products_excess_ms": p["products"] - f, "optimizer_ms": p["optimizer"],
            "optimizer_kernel_ms": p["optimizer kernel"], "kernels_ms": kernel_ms,
            "kernel_ms": {k.split(" ", 1)[1]: v for k, v in sorted(p.items()) if k.startswith("kernel ")},
            "rest_ms": rest, "noise_alone_ms": noise_alone(dtype) * 1e3,
            "bound_serial_ms": serial, "bound_serial_over_floor": serial / f,
            "bound_split_ms": split, "bound_split_over_floor": split / f,
            "fused_detail": fused_detail(med, threads) if fused_ok else None,
            "runs_ms": dict(runs)}


def fused_detail(med: dict[str, float], threads: int) -> dict[str, float]:
    """Where the fused step's time above the floor goes: the forward half and the rest, and what the cores give."""
    f, ff = med["floor"], med["floor_forward"]
    fused, fwd = med["fused_direct"], med["fused_forward"]
    return {"fused_direct_ms": fused, "fused_in_train_ms": med["fused"], "fused_1core_ms": med["fused_1core"],
            "fused_forward_ms": fwd, "floor_forward_ms": ff, "floor_1thread_ms": med["floor_1thread"],
            "excess_ms": fused - f, "forward_excess_ms": fwd - ff,
            "backward_update_excess_ms": (fused - fwd) - (f - ff),
            "fused_speedup": med["fused_1core"] / fused, "floor_speedup": med["floor_1thread"] / f,
            "fused_1core_excess_ms": med["fused_1core"] - med["floor_1thread"], "threads": threads}


def report(b: dict[str, Any]) -> str:
    """The breakdown as a Markdown table and the two bounds."""
    rows = [("floor: the eleven products alone", b["floor_ms"]),
            ("npvae's fused step (`npvae.train`, the default)", b["fused_ms"]),
            ("npvae's layer path (`npvae.train(..., fused=False)`)", b["npvae_ms"]),
            ("instrumented layer path", b["instrumented_ms"]),
            ("of which: products", b["products_ms"]),
            ("of which: optimizer (`Adam.step`)", b["optimizer_ms"]),
            ("of which: other kernels", b["kernels_ms"])]
    rows += [(f"  `{name}`", ms) for name, ms in b["kernel_ms"].items()]
    rows += [("of which: the rest (Python, noise)", b["rest_ms"]),
             ("  the noise draw, alone", b["noise_alone_ms"])]
    out = ["| per step | ms | x floor |", "| --- | ---: | ---: |"]
    out += [f"| {label} | {ms:.3f} | {ms / b['floor_ms']:.2f} |" for label, ms in rows]
    d = b.get("fused_detail")
    if d:
        out += ["", "the fused step (called directly, as train() calls it), per step:",
                f"  {d['fused_direct_ms']:.3f} ms on {d['threads']} cores (in train(): {d['fused_in_train_ms']:.3f}), "
                f"{d['fused_1core_ms']:.3f} ms on 1: x{d['fused_speedup']:.2f} from the cores "
                f"(the floor's products: x{d['floor_speedup']:.2f}, {d['floor_1thread_ms']:.3f} ms on 1 thread)",
                f"  above the floor: {d['excess_ms']:+.3f} ms = forward pass and loss "
                f"{d['forward_excess_ms']:+.3f} ({d['fused_forward_ms']:.3f} against the forward products' "
                f"{d['floor_forward_ms']:.3f}) + backward pass and update {d['backward_update_excess_ms']:+.3f}",
                f"  on 1 core, above the floor's products on 1 thread: {d['fused_1core_excess_ms']:+.3f} ms "
                "(the work around the products, unsplit)"]
    out += ["",
            f"products above the floor's: {b['products_excess_ms']:+.3f} ms a step",
            f"bound, products at floor speed, the rest serial: {b['bound_serial_ms']:.3f} ms = "
            f"{b['bound_serial_over_floor']:.2f} x floor",
            f"bound, optimizer and kernels also split perfectly over {b['threads']} cores: "
            f"{b['bound_split_ms']:.3f} ms = {b['bound_split_over_floor']:.2f} x floor"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=7, help="rounds of (floor, npvae, instrumented, fused) epochs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=_common.DEFAULT_DATA)
    ap.add_argument("--random-data", action="store_true", help="uniform random data even if Fashion-MNIST is there")
    args = ap.parse_args(argv)
    if args.examples < BATCH or args.epochs < 1 or args.threads < 1:
        ap.error(f"--examples must be at least {BATCH}, --epochs and --threads at least 1")
    npvae.warmup()
    if args.random_data:
        x, source = np.random.default_rng(0).random((args.examples, INPUT), dtype=np.float32), "random-uniform"
    else:
        x, source = _common.load_bench_data(args.data, args.examples)
    b = breakdown(x, args.epochs, args.threads)
    b["data"] = source
    print(json.dumps(b))
    print(f"\n{args.examples:,} examples ({source}), 784-{HIDDEN}-{LATENT}, batch {BATCH}, float32, "
          f"{args.threads} BLAS threads; medians of {args.epochs} epochs each\n")
    print(report(b))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
