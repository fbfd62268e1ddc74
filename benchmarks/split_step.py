#!/usr/bin/env python
"""A measured prototype: all of a training step split over two threads, with BLAS on one thread each.

benchmarks/README.md finds that 1.3x the floor needs *every* piece of work
around the matrix products spread over both cores, not Adam alone. This
script does that with nothing but Python threads (NumPy's products and
npvae's kernels release the GIL): OpenBLAS is limited to one thread, and two
threads of ours each take half of every step.

* ``halves``: each thread runs the whole step, products included, on half
  the batch (the gather, forward, loss, backward, every kernel) into its own
  weight gradients. After a barrier, each updates half of every parameter
  array with the sum of the two gradients.
* ``rows``: each thread runs the per-example work on its half of the batch:
  the forward, the loss, the products that carry the gradient down, and
  every elementwise kernel. After a barrier, each computes half the rows of
  every weight gradient over the *whole* batch (so no gradient is summed
  twice), and updates those rows with Adam at once, while they are in its
  cache.

Each step waits at two barriers: one in the middle, and one at the start of
the next step.

Three copies of the default model (784-400-20, ReLU, Bernoulli, batch 128,
float32, Adam lr 1e-3) start from the same weights and see the same batches
and the same noise as ``npvae.train``. Their epochs alternate in one process:
``npvae`` (``npvae.train(..., fused=False)``, the layer path, with OpenBLAS's
own 2 threads), then ``halves`` and ``rows``. The script prints the median
milliseconds per step of each epoch (from per-step timestamps), the medians,
where each thread's time goes, and the ratios to npvae.

Before timing, one step of each split is checked against
``VAE.loss_and_grads`` in float64 with fixed noise. The loss must match to
1e-12 and every gradient array to 1e-12 in norm. The sums run in a different
order, so float32 training is not bit-identical to npvae's. The final losses
are printed.

This is a measurement, not part of npvae. It covers one hidden layer, ReLU,
the Bernoulli likelihood and one noise sample.

    python benchmarks/split_step.py                   # 30,000 examples, 6 timed epochs each
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import npvae  # noqa: E402
from npvae import kernels  # noqa: E402
from npvae.optim import adam_kernel_args  # noqa: E402

RELU, IDENTITY = kernels.ACTIVATIONS["relu"], kernels.ACTIVATIONS["identity"]
# weight, its layer's input (workspace), the gradient at its layer's pre-activation (workspace)
WEIGHTS = (("decoder.out.W", "h3", "dout"), ("decoder.0.W", "z", "dpre3"),
           ("encoder.head.W", "h1", "dml"), ("encoder.0.W", "x", "dpre1"))
BIASES = ("decoder.out.b", "decoder.0.b", "encoder.head.b", "encoder.0.b")


class SplitStep:
    """One training step of ``vae`` done by two threads; ``mode`` is ``"halves"`` or ``"rows"``."""

    def __init__(self, vae: npvae.VAE, opt: npvae.Adam, batch: int, mode: str) -> None:
        if (len(vae.hidden_dims), vae.activation, vae.likelihood, vae.n_samples) != (1, "relu", "bernoulli", 1):
            raise ValueError("the prototype covers one hidden ReLU layer, Bernoulli, n_samples=1")
        self.vae, self.opt, self.batch, self.mode = vae, opt, batch, mode
        p, h, k, dt = vae.input_dim, vae.hidden_dims[0], vae.latent_dim, vae.dtype
        shapes = {"x": p, "h1": h, "ml": 2 * k, "z": k, "sigma": k, "h3": h, "dout": p, "dh3": h,
                  "dpre3": h, "dz": k, "dml": 2 * k, "dh1": h, "dpre1": h}
        self.ws = {name: np.zeros((batch, width), dt) for name, width in shapes.items()}
        self.eps = np.zeros((1, batch, k), dt)
        self.tmp = [np.zeros(p, dt) for _ in range(2)]
        self.db = [{b: np.zeros_like(vae.params[b]) for b in BIASES} for _ in range(2)]
        # "halves": thread 1's own weight gradients (thread 0 uses vae.grads)
        self.g1 = {w: np.zeros_like(vae.params[w]) for w, _, _ in WEIGHTS}
        self.views = opt._flat_views(vae.params, vae.grads)
        self.sums = [(0.0, 0.0), (0.0, 0.0)]
        self.args: tuple = ()
        self.barrier = threading.Barrier(2)
        self.update = True
        #: per thread and step: seconds before the middle barrier, waiting at it, after it
        self.phases: tuple[list, list] = ([], [])

    def begin(self, xsrc: np.ndarray, idx: np.ndarray, rng: np.random.Generator | None) -> None:
        """The serial part: the batch indices, the noise (in npvae.train's order) and Adam's scalars."""
        self.xsrc, self.idx, b = xsrc, idx, idx.shape[0]
        if rng is not None:
            rng.standard_normal(out=self.eps[:, :b], dtype=self.vae.dtype)
        if self.update:
            o = self.opt
            o.t += 1
            self.args = adam_kernel_args(o.lr, o.betas, o.eps, o.t, self.vae.dtype)

    def work(self, i: int) -> None:
        """Thread ``i``'s share of the step: its half of the batch, the barrier, its half of the update."""
        t0 = time.perf_counter()
        b, args = self.idx.shape[0], self.args  # begin() may set the next step's while this one finishes
        rows = slice(0, b // 2) if i == 0 else slice(b // 2, b)
        self._per_example(i, rows, b)
        if self.mode == "halves":
            own = self.vae.grads if i == 0 else self.g1
            for key, inp, d in WEIGHTS:
                np.matmul(self.ws[inp][rows].T, self.ws[d][rows], out=own[key])
        t1 = time.perf_counter()
        self.barrier.wait()
        t2 = time.perf_counter()
        if self.mode == "halves":
            self._update_halves(i, args)
        else:
            self._weights_rows(i, b, args)
        self.phases[i].append((t1 - t0, t2 - t1, time.perf_counter() - t2))

    def _per_example(self, i: int, r: slice, b: int) -> None:
        v, w, P, mm = self.vae, self.ws, self.vae.params, np.matmul
        f, db = v.dtype.type, self.db[i]
        a = f(v.alpha)
        x = w["x"][r]
        kernels.gather_rows(self.xsrc, self.idx[r], f(1), x)
        mm(x, P["encoder.0.W"], out=w["h1"][r])
        kernels.bias_act_forward(w["h1"][r], P["encoder.0.b"], RELU, a)
        mm(w["h1"][r], P["encoder.head.W"], out=w["ml"][r])
        kernels.bias_act_forward(w["ml"][r], P["encoder.head.b"], IDENTITY, a)
        kl = kernels.reparam_kl_forward(w["ml"][r], self.eps[:, r], w["z"][r], w["sigma"][r])
        mm(w["z"][r], P["decoder.0.W"], out=w["h3"][r])
        kernels.bias_act_forward(w["h3"][r], P["decoder.0.b"], RELU, a)
        mm(w["h3"][r], P["decoder.out.W"], out=w["dout"][r])
        kernels.bias_act_forward(w["dout"][r], P["decoder.out.b"], IDENTITY, a)
        nll = kernels.bernoulli_nll(w["dout"][r], x, w["dout"][r], f(1 / b), db["decoder.out.b"], self.tmp[i])
        mm(w["dout"][r], P["decoder.out.W"].T, out=w["dh3"][r])
        kernels.act_backward(w["dh3"][r], w["h3"][r], w["dpre3"][r], db["decoder.0.b"], RELU, a)
        mm(w["dpre3"][r], P["decoder.0.W"].T, out=w["dz"][r])
        kernels.reparam_kl_backward(w["dz"][r], self.eps[:, r], w["ml"][r], w["sigma"][r], w["dml"][r],
                                    db["encoder.head.b"], f(v.beta / b))
        mm(w["dml"][r], P["encoder.head.W"].T, out=w["dh1"][r])
        kernels.act_backward(w["dh1"][r], w["h1"][r], w["dpre1"][r], db["encoder.0.b"], RELU, a)
        self.sums[i] = (nll, kl)

    def _adam(self, key: str, lo: int, hi: int, args: tuple) -> None:
        if self.update:
            p, g, m, v = self.views[key]
            kernels.adam_update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], *args)

    def _biases(self, args: tuple) -> None:
        for key in BIASES:
            np.add(self.db[0][key], self.db[1][key], out=self.vae.grads[key])
            self._adam(key, 0, self.vae.grads[key].size, args)

    def _update_halves(self, i: int, args: tuple) -> None:
        """Half of every weight array: the two threads' gradients summed, then Adam."""
        for key, _, _ in reversed(WEIGHTS):
            g, g1 = self.vae.grads[key].reshape(-1), self.g1[key].reshape(-1)
            half = g.size // 2
            lo, hi = (0, half) if i == 0 else (half, g.size)
            np.add(g[lo:hi], g1[lo:hi], out=g[lo:hi])
            self._adam(key, lo, hi, args)
        if i == 1:
            self._biases(args)

    def _weights_rows(self, i: int, b: int, args: tuple) -> None:
        """Half the rows of every weight gradient, over the whole batch, each updated at once."""
        w, G = self.ws, self.vae.grads
        for key, inp, d in WEIGHTS:
            n_in, n_out = G[key].shape
            lo, hi = (0, n_in // 2) if i == 0 else (n_in // 2, n_in)
            np.matmul(w[inp][:b, lo:hi].T, w[d][:b], out=G[key][lo:hi])
            self._adam(key, lo * n_out, hi * n_out, args)
        if i == 1:
            self._biases(args)

    def loss(self, b: int) -> float:
        (n0, k0), (n1, k1) = self.sums
        return (n0 + n1) / b + self.vae.beta * (k0 + k1) / b


def train_epoch(step: SplitStep, x: np.ndarray, seed: int, stamps: list[float]) -> float:
    """One epoch with the batches and noise of ``npvae.train(..., epochs=1, seed=seed)``; returns the mean loss."""
    n, batch = x.shape[0], step.batch
    perm = np.random.default_rng([seed, 1]).permutation(n)
    rng = np.random.default_rng(seed)
    starts = range(0, n, batch)
    total = 0.0

    def worker() -> None:
        for _ in starts:
            step.barrier.wait()  # the next step's batch and noise are ready, the last update done
            step.work(1)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        for s in starts:
            step.begin(x, perm[s:s + batch], rng)
            step.barrier.wait()
            step.work(0)
            total += step.loss(step.idx.shape[0]) * step.idx.shape[0]
            stamps.append(time.perf_counter())
    finally:
        t.join()
    return total / n


def check_against_npvae(mode: str) -> float:
    """Largest relative difference between one split step and ``loss_and_grads`` (float64, fixed noise)."""
    rng = np.random.default_rng(1)
    vae = npvae.VAE(784, (400,), 20, seed=3, dtype=np.float64)
    x = rng.uniform(0, 1, (50, 784))
    step = SplitStep(vae, npvae.Adam(), 50, mode)
    step.update = False
    step.eps[...] = rng.standard_normal(step.eps.shape)
    loss_ref, grads_ref = vae.loss_and_grads(x, step.eps[0].copy())
    step.begin(x, np.arange(50), None)
    t = threading.Thread(target=step.work, args=(1,))
    t.start()
    step.work(0)
    t.join()
    errs = [abs(step.loss(50) - loss_ref) / abs(loss_ref)]
    errs += [float(np.linalg.norm(vae.grads[k] - g) / np.linalg.norm(g)) for k, g in grads_ref.items()]
    return max(errs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=6, help="timed epochs per variant, alternating")
    ap.add_argument("--data", default=_common.DEFAULT_DATA)
    args = ap.parse_args(argv)

    npvae.warmup()
    worst = {mode: check_against_npvae(mode) for mode in ("halves", "rows")}
    print("one step against VAE.loss_and_grads (float64): largest relative difference "
          + ", ".join(f"{m} {e:.1e}" for m, e in worst.items()))
    if max(worst.values()) > 1e-12:
        print("the split step does not compute npvae's gradients")
        return 1

    x, source = _common.load_bench_data(args.data, args.examples)
    seed, batch, f = 0, 128, np.float32
    models = {name: (npvae.VAE(784, (400,), 20, seed=0, dtype=f), npvae.Adam(lr=1e-3))
              for name in ("npvae", "halves", "rows")}
    steps = {name: SplitStep(*models[name], batch, name) for name in ("halves", "rows")}
    per_step: dict[str, list[float]] = {k: [] for k in models}
    losses: dict[str, float] = {}
    print(f"{args.examples:,} examples ({source}), batch 128, float32, 2 cores; ms per step, median of each epoch")
    names = list(models)
    for epoch in range(1, args.epochs + 2):  # epoch 1 warms every variant up, untimed
        if epoch == 2:
            for step in steps.values():
                step.phases = ([], [])
        for name in names[epoch % 3:] + names[:epoch % 3]:
            stamps: list[float] = []
            time.sleep(0.25)  # OpenBLAS's worker spins ~0.1 s after npvae's last product: not into the next epoch
            if name == "npvae":
                vae, opt = models[name]
                with threadpool_limits(limits=2):
                    hist = npvae.train(vae, x, epochs=1, batch_size=batch, optimizer=opt, seed=seed + epoch,
                                       fused=False, on_batch=lambda *a: stamps.append(time.perf_counter()))
                losses[name] = hist[-1]["train_loss"]
            else:
                with threadpool_limits(limits=1):
                    losses[name] = train_epoch(steps[name], x, seed + epoch, stamps)
            if epoch > 1:
                per_step[name].append(statistics.median(np.diff(stamps)) * 1e3)
    for name, ms in per_step.items():
        print(f"{name:>7}: {' '.join(f'{t:5.2f}' for t in ms)}   median {statistics.median(ms):5.2f} ms"
              f"   last epoch's loss {losses[name]:.3f}")
    print("ms per step of each thread, all timed epochs: before the middle barrier, waiting there, after it")
    for name, step in steps.items():
        for i, ph in enumerate(step.phases):
            med = np.median(np.array(ph), axis=0) * 1e3
            print(f"{name:>7} thread {i}: {med[0]:5.2f} {med[1]:5.2f} {med[2]:5.2f}")
    base = statistics.median(per_step["npvae"])
    print(" ".join(f"{m}/npvae: {statistics.median(per_step[m]) / base:.3f}" for m in steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
