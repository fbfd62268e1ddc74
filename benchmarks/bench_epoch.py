#!/usr/bin/env python
"""Seconds per training epoch: npvae vs its matmul-only floor vs its peers, on one machine, in one run.

For each configuration (batch size, hidden size, dtype, thread count; model
784-H-20, ReLU, Bernoulli, Adam lr 1e-3; plus the gated protocol model,
784-300-300-40 with gated layers and logvar bounded to [-6, 2], batch 100)
these implementations are timed over one epoch of ``--examples`` examples
(default 60,000: Fashion-MNIST train, or uniform random data in [0, 1] when
it is not found; the output says which):

* ``npvae``: ``npvae.train(vae, x, epochs=1, batch_size=B)``, the epoch's
  ``seconds`` from the returned history (the training loop: gathering the
  batches, forward, backward, Adam);
* ``floor``: the eleven matrix products of an epoch alone, in NumPy with
  preallocated ``out=`` arrays, same shapes and dtype, last short batch
  included (forward x@W1, h1@W2, z@W3, h3@W4; backward h3.T@d, d@W4.T,
  z.T@dh3, dh3@W3.T, h1.T@dml, dml@W2.T, x.T@dh1): what a perfect
  implementation on this BLAS would need for the GEMMs alone;
* ``torch``: the same model in PyTorch eager (``benchmarks/_common.py``;
  ``benchmarks/_peers.py`` for the gated model), default
  ``torch.optim.Adam``, the same batches; skipped when torch is missing;
* ``torch_compile``: the same in PyTorch, the loss under ``torch.compile``
  (backward through AOTAutograd), ``torch.optim.Adam(fused=True)``;
* ``jax``: the whole step (loss, ``jax.value_and_grad``, textbook Adam in
  ``jax.numpy``) under one ``jax.jit``, batches fed from NumPy
  (``benchmarks/_peers.py``); skipped when jax is missing, and for
  configurations with fewer threads than cores (XLA fixes its thread pool
  when it starts).

Each configuration reports npvae's ratio to each peer and to the fastest
peer timed (``npvae_over_fastest_peer``), as a ratio of medians and, with
``_paired`` appended, as the median over repeats of the ratio within one
repeat. On a shared host whose speed drifts over minutes (this project's
machines: one repeat can run 40-95% slower than the one before, for every
implementation alike), the paired ratio is the steadier figure: the epochs
it compares ran seconds apart.

Repeats are round-robin (repeat r runs every config and implementation before
repeat r+1; the implementation order rotates), so machine noise hits all of
them alike; medians are quoted. Each timed epoch starts after ``--settle``
seconds (0.3) of idling, so that no thread left spinning by the one before
(OpenBLAS's worker spins about 0.1 s after a product, OpenMP's threads a
while after a parallel region) takes the cores from its first moments. Threads: threadpoolctl limits BLAS/OpenMP,
``torch.set_num_threads`` limits torch. Peak RSS is measured in a separate
child process that only loads the data and trains npvae one epoch (default
configuration).

Output (stdout): one JSON line per configuration (``"kind": "config"``), one
for the peak RSS (``"kind": "peak_rss"``), a Markdown table and the headline
check of the speed goals (default configuration: npvae <= 1.15 x floor and
<= 0.75 x the fastest peer; every configuration: npvae faster than every
peer; paired ratios; reported, exit code 0 regardless). Progress goes to stderr. The table of
``npvae.log_likelihood``'s throughput is ``bench_log_likelihood.py``'s.

    python benchmarks/bench_epoch.py                  # 6 configs, one factor at a time, 3 repeats
    python benchmarks/bench_epoch.py --full           # the 24-config cross product
    python benchmarks/bench_epoch.py --quick          # smoke run: 2,048 examples, 1 repeat
    python benchmarks/bench_epoch.py --list-configs
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _peers as P  # noqa: E402
from _common import npvae  # noqa: E402

INPUT, LATENT, LR = 784, 20, 1e-3
DEFAULT = {"batch": 128, "hidden": 400, "dtype": "float32", "threads": 2}
VARY = {"batch": (32, 128, 512), "hidden": (400, 1024), "dtype": ("float32", "float64"), "threads": (1, 2)}
IMPLS = ("npvae", "floor", "torch", "torch_compile", "jax")
PEERS = ("torch", "torch_compile", "jax")
HEADLINE_PEER, HEADLINE_FLOOR = 0.75, 1.15  # issue #16's goals for the default configuration


@dataclass(frozen=True)
class Config:
    batch: int
    hidden: int
    dtype: str
    threads: int
    layers: int = 1  # hidden layers in the encoder (and as many in the decoder), each `hidden` wide
    latent: int = LATENT
    layer: str = "dense"
    bounds: tuple[float, float] | None = None  # logvar_bounds

    @property
    def name(self) -> str:
        if self.layer == "dense" and self.layers == 1 and self.latent == LATENT and self.bounds is None:
            return f"b{self.batch}-h{self.hidden}-{self.dtype}-t{self.threads}"
        return (f"{self.layer}-b{self.batch}-h{'x'.join([str(self.hidden)] * self.layers)}-z{self.latent}-"
                f"{self.dtype}-t{self.threads}")

    @property
    def is_default(self) -> bool:
        return self == Config(**DEFAULT)

    @property
    def varies(self) -> str:
        if self == GATED:
            return "gated model"
        diff = [k for k, v in DEFAULT.items() if getattr(self, k) != v]
        return "default" if not diff else ",".join(diff)

    @property
    def hidden_dims(self) -> tuple[int, ...]:
        return (self.hidden,) * self.layers

    def make_vae(self) -> Any:
        """The npvae model of this configuration, seed 0 (the peers start from its parameters)."""
        kw: dict[str, Any] = {"activation": "relu"} if self.layer == "dense" else {"layer": self.layer}
        if self.bounds is not None:
            kw["logvar_bounds"] = self.bounds
        return npvae.VAE(INPUT, self.hidden_dims, self.latent, likelihood="bernoulli", seed=0,
                         dtype=np.dtype(self.dtype), **kw)


#: The gated protocol model (Tomczak & Welling's VampPrior setting): 784-300-300-40, gated hidden layers,
#: logvar in [-6, 2], batch 100. npvae trains it on the layer path: the fused step covers dense layers only.
GATED = Config(batch=100, hidden=300, dtype="float32", threads=2, layers=2, latent=40, layer="gated",
               bounds=(-6.0, 2.0))


def all_configs(full: bool) -> list[Config]:
    if full:
        return [Config(b, h, d, t) for b, h, d, t in itertools.product(*VARY.values())] + [GATED]
    out = [Config(**DEFAULT)]
    for key, values in VARY.items():
        for v in values:
            c = Config(**{**DEFAULT, key: v})
            if c not in out:
                out.append(c)
    return out + [GATED]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=None,
                   help="timed epochs per config and implementation (default 3; 1 with --quick)")
    p.add_argument("--examples", type=int, default=None, help="examples per epoch (default 60000; 2048 with --quick)")
    p.add_argument("--full", action="store_true",
                   help="the full cross product (24 configs, and the gated model) instead of one factor at a time")
    p.add_argument("--quick", action="store_true", help="smoke run: few examples, 1 repeat (numbers not meaningful)")
    p.add_argument("--configs", default=None,
                   help="comma-separated config names to run (see --list-configs), e.g. b128-h400-float32-t2")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help=f"data root (default {C.DEFAULT_DATA})")
    p.add_argument("--random-data", action="store_true", help="use uniform random data even if Fashion-MNIST is there")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child process")
    p.add_argument("--warmup-batches", type=int, default=None,
                   help="untimed batches of each config and implementation before timing (default 3; 1 with --quick)")
    p.add_argument("--settle", type=float, default=None,
                   help="idle seconds before each timed epoch, so threads the previous one left spinning stop "
                        "(default 0.3; 0 with --quick)")
    p.add_argument("--list-configs", action="store_true", help="print the config names and exit")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.repeats is None:
        a.repeats = 1 if a.quick else 3
    if a.examples is None:
        a.examples = 2048 if a.quick else 60000
    if a.warmup_batches is None:
        a.warmup_batches = 1 if a.quick else 3
    if a.settle is None:
        a.settle = 0.0 if a.quick else 0.3
    if a.repeats < 1 or a.examples < 1 or a.settle < 0:
        p.error("--repeats and --examples must be positive, --settle not negative")
    a.impls = tuple(i for i in a.impls.split(",") if i)
    if set(a.impls) - set(IMPLS):
        p.error(f"--impls: unknown {sorted(set(a.impls) - set(IMPLS))}")
    return a


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def get_data(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    if args.random_data:
        return np.random.default_rng(0).random((args.examples, INPUT), dtype=np.float32), "random-uniform"
    return C.load_bench_data(args.data, args.examples)


# ---------------------------------------------------------------------------- the floor
class Floor:
    """The matrix products of one epoch of the model, alone, into preallocated arrays.

    For the default 784-H-20 model (head 2K = 40 wide) these are the eleven
    products x@W1, h1@W2, z@W3, h3@W4, then h3.T@d, d@W4.T, z.T@dh3, dh3@W3.T,
    h1.T@dml, dml@W2.T, x.T@dh1. In general: forward, each layer's input
    times each of its weight matrices (two for a gated layer, W and V);
    backward, last layer first, each matrix's gradient ``input.T @ dpre`` and,
    but for the first layer, the gradient at the input ``dpre @ M.T`` per
    matrix (what npvae's layers compute; a gated layer's two input gradients
    are then added, which is not a product and not timed).
    """

    def __init__(self, x: np.ndarray, batch: int, hidden: int | tuple[int, ...], dtype: np.dtype,
                 latent: int = LATENT, gated: bool = False) -> None:
        rng = np.random.default_rng(0)
        r = lambda *s: (rng.standard_normal(s) * 0.05).astype(dtype)  # noqa: E731 - finite, no denormals
        self.x, self.batch = x, batch
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        p, k, nh = INPUT, latent, len(hidden)
        ins = [p, *hidden, k, *hidden[::-1]]  # each layer's input width: encoder, head, decoder, output
        outs = [*hidden, 2 * k, *hidden[::-1], p]
        mats = [2 if gated and (li < nh or nh < li < 2 * nh + 1) else 1 for li in range(len(ins))]
        self.layers = list(zip(ins, outs, mats, strict=True))
        self.M = [[r(i, o) for _ in range(m)] for i, o, m in self.layers]
        self.G = [[r(i, o) for _ in range(m)] for i, o, m in self.layers]
        n = x.shape[0]
        self.ws = {}
        for b in {batch, n % batch} - {0}:
            self.ws[b] = {"out": [[r(b, o) for _ in range(m)] for _, o, m in self.layers],  # forward outputs
                          "d": [r(b, o) for _, o, _m in self.layers],  # dpre of each layer
                          "din": [[r(b, i) for _ in range(m)] for i, _o, m in self.layers]}  # gradient at inputs

    @property
    def products_per_step(self) -> int:
        return sum(2 * m for _, _, m in self.layers) + sum(m for _, _, m in self.layers[1:])

    #: The groups of one step's products (bits, any combination), as ``step`` takes them.
    FORWARD, INPUT_GRADIENTS, WEIGHT_GRADIENTS = 1, 2, 4
    ALL = FORWARD | INPUT_GRADIENTS | WEIGHT_GRADIENTS

    def epoch(self, n: int | None = None, forward_only: bool = False) -> float:
        """Seconds for the products of an epoch of ``n`` examples (default all); the forward ones alone if asked."""
        groups = self.FORWARD if forward_only else self.ALL
        n = self.x.shape[0] if n is None else n
        t0 = time.perf_counter()
        for start in range(0, n, self.batch):
            self.step(self.x[start:start + self.batch], groups)  # a contiguous row slice: no copy
        return time.perf_counter() - t0

    def step(self, xb: np.ndarray, groups: int = ALL) -> None:
        """The products of one step on the batch ``xb``, those of ``groups`` (``FORWARD`` and so on):
        backward, each layer's weight gradient and then its input gradient, last layer first."""
        mm = np.matmul
        layers, M, G = self.layers, self.M, self.G
        nl = len(layers)
        head = (nl - 2) // 2
        w = self.ws[xb.shape[0]]
        out, d, din = w["out"], w["d"], w["din"]
        # the input of layer li: x, the previous layer's output, or z (a (B, K) block) after the head
        inputs = [xb] + [din[head + 1][0] if li == head + 1 else out[li - 1][0] for li in range(1, nl)]
        if groups & self.FORWARD:
            for li in range(nl):
                for j in range(layers[li][2]):
                    mm(inputs[li], M[li][j], out=out[li][j])
        weights, below = groups & self.WEIGHT_GRADIENTS, groups & self.INPUT_GRADIENTS
        if weights or below:
            for li in range(nl - 1, -1, -1):
                for j in range(layers[li][2]):
                    if weights:
                        mm(inputs[li].T, d[li], out=G[li][j])
                    if li and below:
                        mm(d[li], M[li][j].T, out=din[li][j])


# ---------------------------------------------------------------------------- one config's runners
class Runners:
    def __init__(self, cfg: Config, x32: np.ndarray, x64_cache: dict, torch: Any | None, jax: Any | None,
                 impls: tuple[str, ...]) -> None:
        self.cfg = cfg
        dtype = np.dtype(cfg.dtype)
        if dtype == np.float64:
            if "x" not in x64_cache:
                x64_cache["x"] = x32.astype(np.float64)  # converted once, outside every timing
            x = x64_cache["x"]
        else:
            x = x32
        self.x, self.torch = x, torch
        n = x.shape[0]
        self.n = n
        self.notes: dict[str, str] = {}
        if "jax" in impls and jax is not None and cfg.threads != os.cpu_count():
            self.notes["jax"] = (f"not timed: XLA's CPU thread pool has {os.cpu_count()} threads from start-up, "
                                 f"not {cfg.threads}")
            impls = tuple(i for i in impls if i != "jax")
        self.runs: dict[str, list[float]] = {i: [] for i in impls}
        self.losses: dict[str, list[float]] = {i: [] for i in impls}
        self.vae = self.opt = self.floor = None
        self.peers: dict[str, Any] = {}
        init = cfg.make_vae()  # the peers start from npvae's initial parameters
        if "npvae" in impls:
            self.vae = cfg.make_vae()
            self.opt = npvae.Adam(lr=LR)
        if "floor" in impls:
            self.floor = Floor(x, cfg.batch, cfg.hidden_dims, dtype, cfg.latent, gated=cfg.layer == "gated")
        if "torch" in impls and torch is not None:
            if cfg.layer == "dense" and cfg.bounds is None:  # the twin of compare_torch, nn.Linear's own init
                model = C.make_torch_vae(torch, INPUT, cfg.hidden_dims, cfg.latent, dtype=dtype, seed=0)
                self.peers["torch"] = C.TorchTrainer(torch, model, x, cfg.batch, lr=LR, seed=0)
            else:
                self.peers["torch"] = P.TorchPeer(torch, init, x, cfg.batch, lr=LR, seed=0)
        if "torch_compile" in impls and torch is not None:
            self.peers["torch_compile"] = P.TorchPeer(torch, init, x, cfg.batch, lr=LR, seed=0, compiled=True)
        if "jax" in impls and jax is not None:
            self.peers["jax"] = P.JaxPeer(jax, init, x, cfg.batch, lr=LR, seed=0)
        for i in impls:
            if i in PEERS and i not in self.peers:
                del self.runs[i], self.losses[i]

    @property
    def impls(self) -> tuple[str, ...]:
        return tuple(self.runs)

    def warm(self, batches: int = 3) -> None:
        """A few batches of each (plus the short last batch), so the timed epochs allocate and compile nothing."""
        b, n = self.cfg.batch, self.n
        k = min(n, batches * b + n % b)
        with C.limit_threads(self.cfg.threads, self.torch):
            if self.vae is not None:
                npvae.train(self.vae, self.x[:k], epochs=1, batch_size=min(b, k), optimizer=self.opt, seed=10_000)
            if self.floor is not None:
                self.floor.epoch(k)
            for name, peer in list(self.peers.items()):
                t0 = time.perf_counter()
                try:
                    peer.train_epoch(np.arange(k, dtype=np.int64))
                except Exception as exc:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
                    self.notes[name] = f"failed in warm-up: {type(exc).__name__}: {str(exc)[:300]}"
                    progress(f"{self.cfg.name} {name}: {self.notes[name]}")
                    del self.peers[name], self.runs[name], self.losses[name]
                    continue
                if hasattr(peer, "epoch"):  # _common.TorchTrainer counts its epochs itself
                    peer.epoch = 0
                else:
                    peer.batches.epoch = 0
                if name in ("torch_compile", "jax"):
                    self.notes.setdefault(f"{name}_compile_s", f"{time.perf_counter() - t0:.1f}")

    def run(self, impl: str, repeat: int) -> float:
        with C.limit_threads(self.cfg.threads, self.torch):
            if impl == "npvae":
                hist = npvae.train(self.vae, self.x, epochs=1, batch_size=self.cfg.batch, optimizer=self.opt,
                                   seed=repeat)
                s, loss = hist[0]["seconds"], hist[0]["train_loss"]
            elif impl == "floor":
                s, loss = self.floor.epoch(), float("nan")
            else:
                s, loss = self.peers[impl].train_epoch()
        self.runs[impl].append(s)
        self.losses[impl].append(loss)
        return s

    def record(self, examples: int, source: str, repeats: int) -> dict:
        med = {i: (statistics.median(v) if v else None) for i, v in self.runs.items()}
        get = lambda i: med.get(i)  # noqa: E731
        ratio = lambda a, b: (get(a) / get(b)) if get(a) and get(b) else None  # noqa: E731
        timed_peers = {i: med[i] for i in PEERS if med.get(i)}
        fastest = min(timed_peers, key=timed_peers.__getitem__) if timed_peers else None
        paired = {i: self.paired_ratio("npvae", i) for i in ("floor", *PEERS)}
        cfg = self.cfg
        rec = {"kind": "config", "name": cfg.name, "varies": cfg.varies, "default": cfg.is_default,
               "batch": cfg.batch, "hidden": cfg.hidden, "hidden_dims": list(cfg.hidden_dims), "latent": cfg.latent,
               "layer": cfg.layer, "logvar_bounds": list(cfg.bounds) if cfg.bounds else None, "dtype": cfg.dtype,
               "threads": cfg.threads, "examples": examples, "data": source, "repeats": repeats,
               "npvae_path": self.npvae_path(),
               "npvae_s": get("npvae"), "floor_s": get("floor"), "torch_s": get("torch"),
               "torch_compile_s": get("torch_compile"), "jax_s": get("jax"),
               "npvae_over_torch": ratio("npvae", "torch"), "npvae_over_torch_compile": ratio("npvae", "torch_compile"),
               "npvae_over_jax": ratio("npvae", "jax"), "npvae_over_floor": ratio("npvae", "floor"),
               "torch_over_floor": ratio("torch", "floor"), "fastest_peer": fastest,
               "npvae_over_fastest_peer": ratio("npvae", fastest) if fastest else None,
               **{f"npvae_over_{i}_paired": v for i, v in paired.items()},
               "npvae_over_fastest_peer_paired": paired[fastest] if fastest else None,
               "notes": self.notes}
        for i, v in self.runs.items():
            rec[f"{i}_runs_s"] = v
        for i in ("npvae", *PEERS):
            if self.losses.get(i):
                rec[f"{i}_last_train_loss"] = self.losses[i][-1]
        return rec

    def paired_ratio(self, a: str, b: str) -> float | None:
        """The median over repeats of ``a``'s epoch time over ``b``'s in the same repeat (None if either is
        missing); both lists hold one entry per repeat, in order."""
        ra, rb = self.runs.get(a) or [], self.runs.get(b) or []
        if not ra or len(ra) != len(rb):
            return None
        return statistics.median(x / y for x, y in zip(ra, rb, strict=True))

    def npvae_path(self) -> str | None:
        if self.vae is None:
            return None
        from npvae import fused

        with C.limit_threads(self.cfg.threads):
            why = fused.unsupported(self.vae, self.opt, None)
        return "fused" if why is None else "layer"


# ---------------------------------------------------------------------------- peak RSS
def rss_child(args: argparse.Namespace) -> int:
    """In the child: load the data as raw uint8 pixels and train npvae one epoch (default config),
    as a memory-conscious user would (``dtype=np.uint8`` + ``pixel_scale``); print JSON."""
    import resource

    base = C.vm_status_mb("VmHWM")
    t0 = time.perf_counter()
    try:
        x, _ = npvae.datasets.load_fashion_mnist("train", root=args.data, download=False, dtype=np.uint8)
        source = "fashion-mnist-train (uint8)"
    except Exception:  # noqa: BLE001 - same fallback as the timed runs
        x = np.random.default_rng(0).integers(0, 256, (60000, INPUT), dtype=np.uint8)
        source = "random-uniform (uint8)"
    x = np.ascontiguousarray(x[:args.examples])
    load_s = time.perf_counter() - t0
    after_load = C.vm_status_mb("VmRSS")
    cfg = Config(**DEFAULT)
    with C.limit_threads(cfg.threads):
        vae = npvae.VAE(INPUT, (cfg.hidden,), LATENT, seed=0, dtype=np.float32)
        hist = npvae.train(vae, x, epochs=1, batch_size=cfg.batch, optimizer=npvae.Adam(lr=LR), seed=0,
                           pixel_scale=1 / 255)
    print(json.dumps({"vmhwm_mb": C.vm_status_mb("VmHWM"), "ru_maxrss_self_mb": C.ru_maxrss_mb(resource.RUSAGE_SELF),
                      "baseline_mb": base, "after_load_mb": after_load,
                      "data_mb": x.nbytes / 2**20, "load_s": load_s, "epoch_s": hist[0]["seconds"],
                      "source": source, "examples": int(x.shape[0])}))
    return 0


def measure_peak_rss(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", "--examples", str(args.examples),
           "--data", str(args.data)] + (["--random-data"] if args.random_data else [])
    env = {**os.environ, "NPVAE_BENCH_NO_TORCH": "1", "NPVAE_BENCH_NO_JAX": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        progress(f"peak-RSS child failed ({proc.returncode}):\n{proc.stderr}")
        return {"kind": "peak_rss", "name": Config(**DEFAULT).name, "error": proc.stderr.strip()[-500:]}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    import resource

    # peak_rss_mb is the child's own VmHWM (the high-water mark of its address space since exec).
    # getrusage(RUSAGE_CHILDREN).ru_maxrss is kept for reference only: Linux carries the high-water mark
    # across exec, so it also counts the forked copy of this (large, torch-loaded) parent.
    return {"kind": "peak_rss", "name": Config(**DEFAULT).name, "examples": child["examples"], "data": child["source"],
            "peak_rss_mb": child["vmhwm_mb"], "ru_maxrss_self_mb": child["ru_maxrss_self_mb"],
            "ru_maxrss_children_mb": C.ru_maxrss_mb(resource.RUSAGE_CHILDREN),
            "baseline_mb": child["baseline_mb"], "after_load_mb": child["after_load_mb"],
            "data_mb": child["data_mb"], "child_epoch_s": child["epoch_s"]}


# ---------------------------------------------------------------------------- output
def fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def markdown_table(records: list[dict], source: str, examples: int, repeats: int, rss: dict | None,
                   versions: dict[str, str | None]) -> str:
    peers = ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items())
    lines = [f"Seconds per epoch ({examples:,} examples of {source}; median of {repeats}; "
             f"784-H-20 ReLU VAE, Bernoulli, Adam, and the gated model; {peers}). Ratios are paired: the "
             f"median over repeats of the ratio within one repeat.", "",
             "| varies | batch | hidden | dtype | threads | npvae s | floor s | torch s | torch.compile s | jax s "
             "| npvae/fastest peer | npvae/floor |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        hidden = "-".join(str(h) for h in r["hidden_dims"])
        if r["layer"] != "dense":
            hidden = f"{hidden} {r['layer']}, z {r['latent']}"
        fastest = (f"{fmt(r['npvae_over_fastest_peer_paired'], '.2f')} ({r['fastest_peer']})"
                   if r["fastest_peer"] else "n/a")
        lines.append(f"| {r['varies']} | {r['batch']} | {hidden} | {r['dtype']} | {r['threads']} | "
                     f"{fmt(r['npvae_s'])} | {fmt(r['floor_s'])} | {fmt(r['torch_s'])} | "
                     f"{fmt(r['torch_compile_s'])} | {fmt(r['jax_s'])} | {fastest} | "
                     f"{fmt(r['npvae_over_floor_paired'], '.2f')} |")
    lines += ["", "npvae runs the fused step where it applies (2 threads, dense layers) and the layer path elsewhere "
                  "(`npvae_path` in the JSON). `npvae.log_likelihood`'s throughput: "
                  "`python benchmarks/bench_log_likelihood.py`."]
    if rss and "peak_rss_mb" in rss:
        lines += ["", f"Peak RSS, npvae training one epoch of {rss['examples']:,} examples (default config, data "
                      f"loading included, separate process, data held as uint8 with pixel_scale=1/255): "
                      f"{rss['peak_rss_mb']:.0f} MB (of which the data: {rss['data_mb']:.0f} MB; Python, NumPy and "
                      f"the imports before loading: {rss['baseline_mb']:.0f} MB)."]
    return "\n".join(lines)


def _check(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}: {text}"


def headline(records: list[dict]) -> str:
    """Issue #16's speed goals, checked on the paired ratios (report only)."""
    parts = []
    default = next((r for r in records if r["default"]), None)
    if default is not None:
        f, p, fastest = default["npvae_over_floor_paired"], default["npvae_over_fastest_peer_paired"], \
            default["fastest_peer"]
        parts.append(_check(f is not None and f <= HEADLINE_FLOOR,
                            f"default configuration: npvae/floor {fmt(f, '.2f')} (goal <= {HEADLINE_FLOOR})"))
        parts.append(_check(p is not None and p <= HEADLINE_PEER,
                            f"default configuration: npvae/fastest peer ({fastest}) {fmt(p, '.2f')} "
                            f"(goal <= {HEADLINE_PEER})") if fastest else "SKIP: no peer timed")
    slower = [f"{r['name']} ({r['fastest_peer']} {r['npvae_over_fastest_peer_paired']:.2f})" for r in records
              if r["fastest_peer"] and r["npvae_over_fastest_peer_paired"] is not None
              and r["npvae_over_fastest_peer_paired"] >= 1]
    timed = [r for r in records if r["fastest_peer"]]
    if timed:
        where = f"; not in: {', '.join(slower)}" if slower else ""
        parts.append(_check(not slower, f"npvae faster than every peer in {len(timed) - len(slower)} of {len(timed)} "
                                        f"configurations (goal: all){where}"))
    return "headline (paired ratios, report only):\n  " + "\n  ".join(parts)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = all_configs(args.full)
    if args.list_configs:
        for c in configs:
            print(f"{c.name}  ({c.varies})")
        return 0
    if args.rss_child:
        return rss_child(args)
    if args.configs:
        wanted = {s.strip() for s in args.configs.split(",") if s.strip()}
        unknown = wanted - {c.name for c in all_configs(True)}
        if unknown:
            print(f"unknown config(s): {sorted(unknown)}; see --list-configs", file=sys.stderr)
            return 2
        configs = [c for c in all_configs(True) if c.name in wanted]
    if args.examples < max(c.batch for c in configs):
        print(f"--examples ({args.examples}) must be at least the largest batch size "
              f"({max(c.batch for c in configs)})", file=sys.stderr)
        return 2

    wants_torch = bool({"torch", "torch_compile"} & set(args.impls))
    torch = C.try_import_torch() if wants_torch else None
    jax = P.try_import_jax() if "jax" in args.impls else None
    impls = tuple(i for i in args.impls
                  if (i not in ("torch", "torch_compile") or torch is not None) and (i != "jax" or jax is not None))
    if wants_torch and torch is None:
        progress(C.TORCH_MISSING_NOTE)
    if "jax" in args.impls and jax is None:
        progress(P.JAX_MISSING_NOTE)
    if args.quick:
        progress("QUICK run: the numbers are not meaningful")

    import _realblas

    blas_kernel = _realblas.describe()  # the kernel OpenBLAS chose, and the forcing variables removed
    progress(f"BLAS kernel: {blas_kernel['blas_kernel']} (removed from the environment: "
             f"{blas_kernel['blas_env_removed'] or 'nothing'}; kept: {blas_kernel['blas_env_kept'] or 'nothing'})")
    info, blas_ok, blas_text = C.blas_report(1)
    progress(f"threadpoolctl: {blas_text}")
    if not blas_ok:
        progress("WARNING: threadpool_limits did not limit every BLAS library to 1 thread")
    progress(f"npvae.warmup(): {npvae.warmup():.2f} s")

    x32, source = get_data(args)
    n = x32.shape[0]
    env = {"kind": "env", "python": platform.python_version(), "numpy": np.__version__,
           "numba": __import__("numba").__version__, "torch": torch.__version__ if torch else None,
           "jax": jax.__version__ if jax else None,
           "cpus": os.cpu_count(), "machine": platform.machine(), "examples": n, "data": source,
           "repeats": args.repeats, "quick": args.quick, "impls": list(impls),
           "blas_limits_ok": blas_ok, **blas_kernel,
           "threadpool_info": [{k: d.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                      "threading_layer", "architecture", "filepath")} for d in info]}
    print(json.dumps(env), flush=True)

    x64_cache: dict = {}
    runners = []
    for cfg in configs:
        r = Runners(cfg, x32, x64_cache, torch, jax, impls)
        progress(f"warm-up {cfg.name} ({', '.join(r.impls)})")
        r.warm(args.warmup_batches)
        runners.append(r)

    total = args.repeats * sum(len(r.impls) for r in runners)
    done = 0
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        for r in runners:
            order = r.impls
            k = (rep + runners.index(r)) % len(order)  # rotate the order of the implementations
            for impl in order[k:] + order[:k]:
                time.sleep(args.settle)
                s = r.run(impl, rep)
                done += 1
                progress(f"[{done}/{total}] repeat {rep + 1} {r.cfg.name} {impl}: {s:.3f} s "
                         f"({time.perf_counter() - t_start:.0f} s elapsed)")

    records = [r.record(n, source, args.repeats) for r in runners]
    for rec in records:
        print(json.dumps(rec), flush=True)
    rss = None
    if not args.no_rss and "npvae" in impls:
        progress("peak RSS: child process training npvae one epoch (default config)")
        rss = measure_peak_rss(args)
        print(json.dumps(rss), flush=True)

    print()
    if args.quick:
        print("QUICK run: the numbers below are not meaningful")
    print(f"CPU: {blas_kernel['cpu'] or 'unknown'}; BLAS: {', '.join(blas_kernel['blas']) or 'unknown'}")
    print()
    print(markdown_table(records, source, n, args.repeats, rss,
                         {"torch": torch.__version__ if torch else None, "jax": jax.__version__ if jax else None}))
    print()
    print(headline(records))
    if torch is None and wants_torch:
        print(f"NOTE: {C.TORCH_MISSING_NOTE}")
    if jax is None and "jax" in args.impls:
        print(f"NOTE: {P.JAX_MISSING_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
