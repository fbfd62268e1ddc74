#!/usr/bin/env python
"""Seconds per training epoch: npvae vs its matmul-only floor vs PyTorch, on one machine, in one run.

For each configuration (batch size, hidden size, dtype, thread count; model
784-H-20, ReLU, Bernoulli, Adam lr 1e-3) three implementations are timed
over one epoch of ``--examples`` examples (default 60,000: Fashion-MNIST train,
or uniform random data in [0, 1] when it is not found; the output says which):

* ``npvae``: ``npvae.train(vae, x, epochs=1, batch_size=B)``, the epoch's
  ``seconds`` from the returned history (the training loop: gathering the
  batches, forward, backward, Adam);
* ``floor``: the eleven matrix products of an epoch alone, in NumPy with
  preallocated ``out=`` arrays, same shapes and dtype, last short batch
  included (forward x@W1, h1@W2, z@W3, h3@W4; backward h3.T@d, d@W4.T,
  z.T@dh3, dh3@W3.T, h1.T@dml, dml@W2.T, x.T@dh1): what a perfect
  implementation on this BLAS would need for the GEMMs alone;
* ``torch``: the same model in PyTorch (``benchmarks/_common.py``), default
  ``torch.optim.Adam``, the same batches; skipped when torch is missing.

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
check for the default configuration (npvae <= 0.6 x torch and <= 1.3 x floor;
reported, exit code 0 regardless). Progress goes to stderr.

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
from _common import npvae  # noqa: E402

INPUT, LATENT, LR = 784, 20, 1e-3
DEFAULT = {"batch": 128, "hidden": 400, "dtype": "float32", "threads": 2}
VARY = {"batch": (32, 128, 512), "hidden": (400, 1024), "dtype": ("float32", "float64"), "threads": (1, 2)}
IMPLS = ("npvae", "floor", "torch")
HEADLINE_TORCH, HEADLINE_FLOOR = 0.6, 1.3


@dataclass(frozen=True)
class Config:
    batch: int
    hidden: int
    dtype: str
    threads: int

    @property
    def name(self) -> str:
        return f"b{self.batch}-h{self.hidden}-{self.dtype}-t{self.threads}"

    @property
    def is_default(self) -> bool:
        return self == Config(**DEFAULT)

    @property
    def varies(self) -> str:
        diff = [k for k, v in DEFAULT.items() if getattr(self, k) != v]
        return "default" if not diff else ",".join(diff)


def all_configs(full: bool) -> list[Config]:
    if full:
        return [Config(b, h, d, t) for b, h, d, t in itertools.product(*VARY.values())]
    out = [Config(**DEFAULT)]
    for key, values in VARY.items():
        for v in values:
            c = Config(**{**DEFAULT, key: v})
            if c not in out:
                out.append(c)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per config and implementation (default 3; 1 with --quick)")
    p.add_argument("--examples", type=int, default=None, help="examples per epoch (default 60000; 2048 with --quick)")
    p.add_argument("--full", action="store_true", help="the full cross product (24 configs) instead of one factor at a time")
    p.add_argument("--quick", action="store_true", help="smoke run: few examples, 1 repeat (numbers not meaningful)")
    p.add_argument("--configs", default=None,
                   help="comma-separated config names to run (see --list-configs), e.g. b128-h400-float32-t2")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of npvae,floor,torch")
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
    """The GEMMs of one epoch of a 784-H-20 VAE (head 2K = 40 wide), alone, into preallocated arrays."""

    def __init__(self, x: np.ndarray, batch: int, hidden: int, dtype: np.dtype) -> None:
        rng = np.random.default_rng(0)
        r = lambda *s: (rng.standard_normal(s) * 0.05).astype(dtype)  # noqa: E731 - finite, no denormals
        self.x, self.batch = x, batch
        p, h, k = INPUT, hidden, LATENT
        self.W = {"W1": r(p, h), "W2": r(h, 2 * k), "W3": r(k, h), "W4": r(h, p)}
        self.G = {"dW1": r(p, h), "dW2": r(h, 2 * k), "dW3": r(k, h), "dW4": r(h, p)}
        n = x.shape[0]
        self.ws = {}
        for b in {batch, n % batch} - {0}:
            self.ws[b] = {"h1": r(b, h), "ml": r(b, 2 * k), "z": r(b, k), "h3": r(b, h), "out": r(b, p),
                          "d": r(b, p), "dh3": r(b, h), "dz": r(b, k), "dml": r(b, 2 * k), "dh1": r(b, h)}

    def epoch(self, n: int | None = None) -> float:
        mm = np.matmul
        W1, W2, W3, W4 = (self.W[k] for k in ("W1", "W2", "W3", "W4"))
        dW1, dW2, dW3, dW4 = (self.G[k] for k in ("dW1", "dW2", "dW3", "dW4"))
        n = self.x.shape[0] if n is None else n
        t0 = time.perf_counter()
        for start in range(0, n, self.batch):
            xb = self.x[start:start + self.batch]  # a contiguous row slice: no copy
            w = self.ws[xb.shape[0]]
            mm(xb, W1, out=w["h1"])
            mm(w["h1"], W2, out=w["ml"])
            mm(w["z"], W3, out=w["h3"])
            mm(w["h3"], W4, out=w["out"])
            mm(w["h3"].T, w["d"], out=dW4)
            mm(w["d"], W4.T, out=w["dh3"])
            mm(w["z"].T, w["dh3"], out=dW3)
            mm(w["dh3"], W3.T, out=w["dz"])
            mm(w["h1"].T, w["dml"], out=dW2)
            mm(w["dml"], W2.T, out=w["dh1"])
            mm(xb.T, w["dh1"], out=dW1)
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------- one config's runners
class Runners:
    def __init__(self, cfg: Config, x32: np.ndarray, x64_cache: dict, torch: Any | None, impls: tuple[str, ...]) -> None:
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
        self.runs: dict[str, list[float]] = {i: [] for i in impls}
        self.losses: dict[str, list[float]] = {i: [] for i in impls}
        self.vae = self.opt = self.floor = self.trainer = None
        if "npvae" in impls:
            self.vae = npvae.VAE(INPUT, (cfg.hidden,), LATENT, likelihood="bernoulli", activation="relu",
                                 seed=0, dtype=dtype)
            self.opt = npvae.Adam(lr=LR)
        if "floor" in impls:
            self.floor = Floor(x, cfg.batch, cfg.hidden, dtype)
        if "torch" in impls and torch is not None:
            model = C.make_torch_vae(torch, INPUT, (cfg.hidden,), LATENT, dtype=dtype, seed=0)
            self.trainer = C.TorchTrainer(torch, model, x, cfg.batch, lr=LR, seed=0)

    def warm(self, batches: int = 3) -> None:
        """A few batches of each (plus the short last batch), so the timed epochs allocate nothing new."""
        b, n = self.cfg.batch, self.n
        k = min(n, batches * b + n % b)
        with C.limit_threads(self.cfg.threads, self.torch):
            if self.vae is not None:
                npvae.train(self.vae, self.x[:k], epochs=1, batch_size=min(b, k), optimizer=self.opt, seed=10_000)
            if self.floor is not None:
                self.floor.epoch(k)
            if self.trainer is not None:
                self.trainer.train_epoch(np.arange(k, dtype=np.int64))
                self.trainer.epoch = 0

    def run(self, impl: str, repeat: int) -> float:
        with C.limit_threads(self.cfg.threads, self.torch):
            if impl == "npvae":
                hist = npvae.train(self.vae, self.x, epochs=1, batch_size=self.cfg.batch, optimizer=self.opt,
                                   seed=repeat)
                s, loss = hist[0]["seconds"], hist[0]["train_loss"]
            elif impl == "floor":
                s, loss = self.floor.epoch(), float("nan")
            else:
                s, loss = self.trainer.train_epoch()
        self.runs[impl].append(s)
        self.losses[impl].append(loss)
        return s

    def record(self, examples: int, source: str, repeats: int) -> dict:
        med = {i: (statistics.median(v) if v else None) for i, v in self.runs.items()}
        get = lambda i: med.get(i)  # noqa: E731
        ratio = lambda a, b: (get(a) / get(b)) if get(a) and get(b) else None  # noqa: E731
        rec = {"kind": "config", "name": self.cfg.name, "varies": self.cfg.varies, "default": self.cfg.is_default,
               "batch": self.cfg.batch, "hidden": self.cfg.hidden, "latent": LATENT, "dtype": self.cfg.dtype,
               "threads": self.cfg.threads, "examples": examples, "data": source, "repeats": repeats,
               "npvae_s": get("npvae"), "floor_s": get("floor"), "torch_s": get("torch"),
               "npvae_over_torch": ratio("npvae", "torch"), "npvae_over_floor": ratio("npvae", "floor"),
               "torch_over_floor": ratio("torch", "floor")}
        for i, v in self.runs.items():
            rec[f"{i}_runs_s"] = v
        for i in ("npvae", "torch"):
            if self.losses.get(i):
                rec[f"{i}_last_train_loss"] = self.losses[i][-1]
        return rec


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
    env = {**os.environ, "NPVAE_BENCH_NO_TORCH": "1"}
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
                   torch_version: str | None) -> str:
    lines = [f"Seconds per epoch ({examples:,} examples of {source}; median of {repeats}; "
             f"784-H-20 ReLU VAE, Bernoulli, Adam; torch {torch_version or 'not installed'})", "",
             "| varies | batch | hidden | dtype | threads | npvae s | floor s | torch s | npvae/torch | npvae/floor |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['varies']} | {r['batch']} | {r['hidden']} | {r['dtype']} | {r['threads']} | "
                     f"{fmt(r['npvae_s'])} | {fmt(r['floor_s'])} | {fmt(r['torch_s'])} | "
                     f"{fmt(r['npvae_over_torch'], '.2f')} | {fmt(r['npvae_over_floor'], '.2f')} |")
    if rss and "peak_rss_mb" in rss:
        lines += ["", f"Peak RSS, npvae training one epoch of {rss['examples']:,} examples (default config, data "
                      f"loading included, separate process, data held as uint8 with pixel_scale=1/255): "
                      f"{rss['peak_rss_mb']:.0f} MB (of which the data: {rss['data_mb']:.0f} MB; Python, NumPy and "
                      f"the imports before loading: {rss['baseline_mb']:.0f} MB)."]
    return "\n".join(lines)


def headline(rec: dict) -> str:
    n, f, t = rec["npvae_s"], rec["floor_s"], rec["torch_s"]
    parts = []
    if t is not None and n is not None:
        ok = n <= HEADLINE_TORCH * t
        parts.append(f"{'PASS' if ok else 'FAIL'}: npvae {n:.3f} s {'<=' if ok else '>'} {HEADLINE_TORCH} x torch "
                     f"{t:.3f} s (ratio {n / t:.2f})")
    else:
        parts.append("SKIP: npvae <= 0.6 x torch (torch not timed)")
    if f is not None and n is not None:
        ok = n <= HEADLINE_FLOOR * f
        parts.append(f"{'PASS' if ok else 'FAIL'}: npvae {n:.3f} s {'<=' if ok else '>'} {HEADLINE_FLOOR} x floor "
                     f"{f:.3f} s (ratio {n / f:.2f})")
    return f"headline ({rec['name']}, report only):\n  " + "\n  ".join(parts)


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

    torch = C.try_import_torch() if "torch" in args.impls else None
    impls = tuple(i for i in args.impls if i != "torch" or torch is not None)
    if "torch" in args.impls and torch is None:
        progress(C.TORCH_MISSING_NOTE)
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
           "cpus": os.cpu_count(), "machine": platform.machine(), "examples": n, "data": source,
           "repeats": args.repeats, "quick": args.quick, "impls": list(impls),
           "blas_limits_ok": blas_ok, **blas_kernel,
           "threadpool_info": [{k: d.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                      "threading_layer", "architecture", "filepath")} for d in info]}
    print(json.dumps(env), flush=True)

    x64_cache: dict = {}
    runners = []
    for cfg in configs:
        r = Runners(cfg, x32, x64_cache, torch, impls)
        progress(f"warm-up {cfg.name}")
        r.warm(args.warmup_batches)
        runners.append(r)

    total = args.repeats * len(runners) * len(impls)
    done = 0
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        for r in runners:
            k = (rep + runners.index(r)) % len(impls)  # rotate the order of the implementations
            for impl in impls[k:] + impls[:k]:
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
    print(markdown_table(records, source, n, args.repeats, rss, torch.__version__ if torch else None))
    print()
    default = next((r for r in records if r["default"]), None)
    if default is not None:
        print(headline(default))
    if torch is None and "torch" in args.impls:
        print(f"NOTE: {C.TORCH_MISSING_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
