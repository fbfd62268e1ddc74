#!/usr/bin/env python
"""Where the fused step's time goes: each piece taken out of the step in turn, and the floor's products by group.

``step_breakdown.py`` times the layer path's pieces one by one with timers
around them. The fused step (:mod:`npvae.fused`, what ``npvae.train`` runs
on two cores) has no seams for timers: its pieces run inside one compiled
function, on both cores at once. So this script times the whole step, and
the step with one piece left out (``fused_step``'s ``SKIP_*`` bits); the
difference is what that piece costs *in place*, with the caches and the
memory traffic the rest of the step leaves it. The floor's eleven products
are timed whole and by group (the four forward products, the three input
gradients, the four weight gradients), BLAS on ``--threads`` threads as in
``bench_epoch.py``.

Default configuration (784-400-20, ReLU, Bernoulli, batch 128, float32,
Adam), Fashion-MNIST training images (uniform random data when they are not
found). Every variant runs in blocks of ``--steps`` steps (30); the
figure of a block is the median of its steps' times. Each block starts
from the same parameters and Adam state (restored, not timed), so that a
step with a piece left out cannot drift anywhere the whole step would not
go. A round takes the variants in a shuffled order, each as a pair of
blocks back to back, the whole step's and the variant's (in alternating
order), after ``--settle`` seconds (0.1) of idling, and each group of the
floor's products once. A piece's cost is the median over ``--rounds``
rounds (40) of (whole step - step without it) within its pair: on a host
whose speed drifts, differences taken a tenth of a second apart are
steadier than differences of medians.

    python benchmarks/fused_pieces.py                  # 40 rounds of 30 steps per variant
    python benchmarks/fused_pieces.py --quick          # smoke run (numbers not meaningful)
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from bench_epoch import Floor  # noqa: E402

import npvae  # noqa: E402
from npvae import fused  # noqa: E402

BATCH, HIDDEN, LATENT, INPUT = 128, 400, 20, 784

#: The fused step's variants: a name, the pieces left out, and what taking them out measures.
VARIANTS: dict[str, tuple[int, str]] = {
    "whole": (0, "the whole fused step"),
    "no_input_gradients": (fused.SKIP_INPUT_GRADIENTS, "the input-gradient products dY W^T"),
    "no_backward_kernels": (fused.SKIP_BACKWARD_KERNELS, "activation, reparameterization and KL backward"),
    "no_weight_gradients": (fused.SKIP_WEIGHT_GRADIENTS, "the weight-gradient products x^T dY"),
    "no_weight_update": (fused.SKIP_WEIGHT_UPDATE, "Adam's update of the weight matrices"),
    "no_second_phase": (fused.SKIP_SECOND_PHASE, "weight gradients, every update and the bias sums"),
    "forward_only": (fused.SKIP_INPUT_GRADIENTS | fused.SKIP_BACKWARD_KERNELS | fused.SKIP_SECOND_PHASE,
                     "everything after the loss"),
}
#: The floor's groups of products (``bench_epoch.Floor.step``'s bits).
FLOORS: dict[str, int] = {"floor": Floor.ALL, "floor_forward": Floor.FORWARD,
                          "floor_input_gradients": Floor.INPUT_GRADIENTS,
                          "floor_weight_gradients": Floor.WEIGHT_GRADIENTS}


class Pieces:
    """A model, its fused step, the state every block starts from, and the floor beside it."""

    def __init__(self, x: np.ndarray, threads: int) -> None:
        self.x, self.threads = x, threads
        self.vae = npvae.VAE(INPUT, (HIDDEN,), LATENT, seed=0, dtype=np.float32)
        self.opt = npvae.Adam()
        with _common.limit_threads(threads):
            self.step = fused.FusedStep(self.vae, self.opt)
            npvae.train(self.vae, x[:BATCH * 20], epochs=1, batch_size=BATCH, optimizer=self.opt, seed=0)
        self.saved, self.saved_t = [a.copy() for a in self._state()], self.opt.t
        self.floor = Floor(x, BATCH, HIDDEN, np.dtype(np.float32))
        self.perm = np.random.default_rng(0).permutation(x.shape[0])

    def _state(self) -> list[np.ndarray]:
        """The model's parameters and Adam's moments: the arrays themselves, which the fused step updates."""
        moments = self.opt._flat_views(self.vae.params, self.vae.grads).values()
        return list(self.vae.params.values()) + [a for *_, m, v in moments for a in (m, v)]

    def _restore(self) -> None:
        for a, s in zip(self._state(), self.saved, strict=True):
            np.copyto(a, s)
        self.opt.t = self.saved_t

    def fused_block(self, skip: int, steps: int, start: int) -> float:
        """The median seconds of ``steps`` fused steps with the pieces ``skip`` left out."""
        self._restore()
        step, times = self.step, []
        step.ints[7] = skip
        rng = np.random.default_rng(start)
        n = self.x.shape[0] - BATCH
        try:
            with _common.limit_threads(self.threads), step.one_blas_thread():
                for s in range(steps):
                    i = (start + s * BATCH) % n
                    idx = self.perm[i:i + BATCH]
                    t0 = time.perf_counter()
                    loss, _ = step(self.x, idx, np.float32(1), rng)
                    times.append(time.perf_counter() - t0)
                    if not np.isfinite(loss):
                        raise RuntimeError(f"variant {skip}: the loss became {loss}")
        finally:
            step.ints[7] = 0
        return statistics.median(times)

    def floor_block(self, groups: int, steps: int) -> float:
        times = []
        with _common.limit_threads(self.threads):
            for _ in range(steps):
                t0 = time.perf_counter()
                self.floor.step(self.x[:BATCH], groups)
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def measure(x: np.ndarray, rounds: int, steps: int, threads: int, settle: float) -> dict[str, Any]:
    """``rounds`` rounds; in each, every variant in a shuffled order as a pair of blocks, the whole step's
    and the variant's, back to back (in alternating order), and every floor group once. Seconds a step."""
    pieces = Pieces(x, threads)
    variants = [k for k in VARIANTS if k != "whole"]
    runs: dict[str, list[float]] = {k: [] for k in list(VARIANTS) + list(FLOORS)}
    diffs: dict[str, list[float]] = {k: [] for k in variants}
    order_rng = np.random.default_rng(0)
    for r in range(rounds):
        for j, k in enumerate(order_rng.permutation(variants + list(FLOORS))):
            time.sleep(settle)
            if k in FLOORS:
                runs[k].append(pieces.floor_block(FLOORS[k], steps))
                continue
            pair = ("whole", k) if (r + j) % 2 == 0 else (k, "whole")
            t = {v: pieces.fused_block(VARIANTS[v][0], steps, start=r * 7919 + j) for v in pair}
            runs["whole"].append(t["whole"])
            runs[k].append(t[k])
            diffs[k].append(t["whole"] - t[k])
        print(f"[fused_pieces] round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {"runs": runs, "diffs": diffs}


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    """Medians in ms a step, and each piece's cost: the median of (whole - without) over its pairs."""
    runs, diffs = m["runs"], m["diffs"]
    ms = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
    cost = {k: statistics.median(v) * 1e3 for k, v in diffs.items()}
    return {"median_ms": ms, "piece_ms": cost, "whole_over_floor": ms["whole"] / ms["floor"]}


def report(s: dict[str, Any], threads: int, source: str, rounds: int, steps: int) -> str:
    ms, cost, floor = s["median_ms"], s["piece_ms"], s["median_ms"]["floor"]
    lines = [f"784-400-20, batch 128, float32, {threads} threads, {source}; {rounds} rounds of {steps} steps "
             "per variant", "",
             "| per step | ms | x floor |", "| --- | ---: | ---: |",
             f"| the floor's eleven products | {floor:.3f} | 1.00 |",
             f"|   its four forward products | {ms['floor_forward']:.3f} | {ms['floor_forward'] / floor:.2f} |",
             f"|   its three input gradients | {ms['floor_input_gradients']:.3f} | "
             f"{ms['floor_input_gradients'] / floor:.2f} |",
             f"|   its four weight gradients | {ms['floor_weight_gradients']:.3f} | "
             f"{ms['floor_weight_gradients'] / floor:.2f} |",
             f"| the whole fused step | {ms['whole']:.3f} | {ms['whole'] / floor:.2f} |",
             f"|   its forward pass and loss (the step without {VARIANTS['forward_only'][1]}) | "
             f"{ms['forward_only']:.3f} | {ms['forward_only'] / floor:.2f} |"]
    for k in ("no_input_gradients", "no_backward_kernels", "no_weight_gradients", "no_weight_update",
              "no_second_phase"):
        lines.append(f"|   {VARIANTS[k][1]} (whole - without) | {cost[k]:.3f} | {cost[k] / floor:.2f} |")
    lines += ["", "A piece's cost is the median of (whole step - step without it) over pairs of blocks run back to "
                  "back."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="rounds of one block per variant (default 40)")
    ap.add_argument("--steps", type=int, default=None, help="steps per block (default 30)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=None, help="idle seconds before each block (default 0.1)")
    ap.add_argument("--examples", type=int, default=60_000)
    ap.add_argument("--data", type=Path, default=_common.DEFAULT_DATA)
    ap.add_argument("--random-data", action="store_true", help="uniform random data even if Fashion-MNIST is there")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 3 steps (numbers not meaningful)")
    a = ap.parse_args(argv)
    rounds = a.rounds if a.rounds is not None else (2 if a.quick else 40)
    steps = a.steps if a.steps is not None else (3 if a.quick else 30)
    settle = a.settle if a.settle is not None else (0.0 if a.quick else 0.1)
    if rounds < 1 or steps < 1 or settle < 0 or a.threads < 2 or a.examples < 2 * BATCH:
        ap.error(f"--rounds and --steps must be positive, --settle not negative, --threads at least 2 (the fused "
                 f"step's condition) and --examples at least {2 * BATCH}")
    if a.random_data:
        x, source = np.random.default_rng(0).random((a.examples, INPUT), dtype=np.float32), "random-uniform"
    else:
        x, source = _common.load_bench_data(a.data, a.examples)
    import _realblas

    blas = _realblas.describe()
    with _common.limit_threads(a.threads):
        why = fused.unsupported(npvae.VAE(INPUT, (HIDDEN,), LATENT), npvae.Adam(), None)
    if why is not None:
        print(f"fused_pieces.py: the fused step does not run here: {why}", file=sys.stderr)
        return 2
    m = measure(x, rounds, steps, a.threads, settle)
    s = summarize(m)
    print(json.dumps({"kind": "fused_pieces", "threads": a.threads, "rounds": rounds, "steps": steps,
                      "examples": int(x.shape[0]), "data": source, **blas, **s,
                      "runs_ms": {k: [v * 1e3 for v in r] for k, r in m["runs"].items()},
                      "diffs_ms": {k: [v * 1e3 for v in r] for k, r in m["diffs"].items()}}))
    print()
    if a.quick:
        print("QUICK run: the numbers below are not meaningful")
    print(report(s, a.threads, source, rounds, steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
