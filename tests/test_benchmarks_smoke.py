"""Smoke tests of benchmarks/, and the PyTorch twin as an independent check of npvae's gradients.

* ``bench_epoch.py --quick`` runs end to end (tiny epoch, 1 repeat) and prints
  well-formed JSON lines with positive numbers; with torch hidden
  (``NPVAE_BENCH_NO_TORCH=1``) both scripts still run and skip the torch rows.
* The JAX peer (``benchmarks/_peers.py``), when jax is importable, starts at
  npvae's loss on the same batch and noise and its loss falls as it trains;
  the torch.compile peer runs a tiny epoch of ``bench_epoch.py``.
* The torch model of ``benchmarks/_common.py`` computes exactly npvae's loss
  and gradients, given the same parameters and the same eps: float32 to 1e-4
  (the check ``compare_torch.py`` asserts at startup) and float64 to 1e-10
  (loss) and 1e-8 (every gradient), for the benchmark's model and for
  Gaussian / multi-sample / beta / deeper / other-activation variants.
  PyTorch's autograd knows nothing of npvae's hand-written backward passes,
  so agreement here is strong evidence both are right.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402
import _peers as P  # noqa: E402

CONFIG_KEYS = {"kind", "name", "varies", "default", "batch", "hidden", "latent", "dtype", "threads", "examples",
               "data", "repeats", "npvae_s", "floor_s", "torch_s", "npvae_over_torch", "npvae_over_floor",
               "npvae_runs_s", "floor_runs_s"}


def _run(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=BENCH.parent)


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


# ---------------------------------------------------------------------------- bench_epoch end to end
def test_bench_epoch_quick() -> None:
    """Every config, npvae, the floor, torch eager and JAX (torch.compile's compiling is left to the test below)."""
    has_torch = C.try_import_torch() is not None
    has_jax = P.try_import_jax() is not None
    proc = _run([str(BENCH / "bench_epoch.py"), "--quick", "--examples", "512", "--repeats", "1",
                 "--impls", "npvae,floor,torch,jax"])
    assert proc.returncode == 0, proc.stderr
    lines = _json_lines(proc.stdout)
    kinds = [d["kind"] for d in lines]
    assert kinds[0] == "env" and kinds.count("peak_rss") == 1
    configs = [d for d in lines if d["kind"] == "config"]
    assert len(configs) == 7 and sum(d["default"] for d in configs) == 1
    assert {d["name"] for d in configs} == {"b128-h400-float32-t2", "b32-h400-float32-t2", "b512-h400-float32-t2",
                                            "b128-h1024-float32-t2", "b128-h400-float64-t2", "b128-h400-float32-t1",
                                            "gated-b100-h300x300-z40-float32-t2"}
    for d in configs:
        assert CONFIG_KEYS <= d.keys(), CONFIG_KEYS - d.keys()
        assert d["examples"] == 512 and d["repeats"] == 1
        keys = ["npvae_s", "floor_s", "npvae_over_floor"] + (["torch_s", "npvae_over_torch"] if has_torch else [])
        jax_timed = has_jax and d["threads"] == os.cpu_count()
        keys += ["jax_s", "npvae_over_jax"] if jax_timed else []
        for k in keys:
            assert _positive(d[k]), (d["name"], k, d[k])
        assert len(d["npvae_runs_s"]) == 1 and all(_positive(v) for v in d["npvae_runs_s"])
        assert _positive(d["npvae_last_train_loss"])
        assert d["torch_compile_s"] is None
        peers = {k: d[f"{k}_s"] for k in ("torch", "jax") if d[f"{k}_s"] is not None}
        if peers:
            assert d["fastest_peer"] == min(peers, key=peers.__getitem__)
            assert d["npvae_over_fastest_peer"] == pytest.approx(d["npvae_s"] / min(peers.values()))
            one_repeat = d["npvae_runs_s"][0] / d[f"{d['fastest_peer']}_runs_s"][0]  # the paired ratio is its ratio
            assert d["npvae_over_fastest_peer_paired"] == pytest.approx(one_repeat)
        else:
            assert d["fastest_peer"] is None and d["npvae_over_fastest_peer"] is None
            assert d["npvae_over_fastest_peer_paired"] is None
        assert d["npvae_over_floor_paired"] == pytest.approx(d["npvae_runs_s"][0] / d["floor_runs_s"][0])
        if not has_torch:
            assert d["torch_s"] is None
        if not jax_timed:
            assert d["jax_s"] is None
        if has_jax and not jax_timed:
            assert "XLA" in d["notes"]["jax"]
    gated = next(d for d in configs if d["layer"] == "gated")
    assert gated["npvae_path"] == "layer" and gated["hidden_dims"] == [300, 300] and gated["latent"] == 40
    assert gated["logvar_bounds"] == [-6.0, 2.0] and gated["batch"] == 100
    rss = next(d for d in lines if d["kind"] == "peak_rss")
    for k in ("peak_rss_mb", "baseline_mb", "data_mb"):
        assert _positive(rss[k]), (k, rss)
    assert rss["peak_rss_mb"] >= rss["baseline_mb"]
    assert "| varies | batch |" in proc.stdout and "headline" in proc.stdout
    assert "cpu" in lines[0] and "CPU: " in proc.stdout  # the machine the figures belong to


def test_bench_epoch_pairs_each_repeat_and_checks_the_goals_on_the_pairs() -> None:
    """A host that slows down between repeats moves every median, but not the ratio within a repeat."""
    import types

    import bench_epoch as E

    runs = {"npvae": [1.0, 2.0, 1.9], "floor": [0.9, 1.8, 1.7], "jax": [1.5, 2.9, 2.7]}
    paired = E.Runners.paired_ratio(types.SimpleNamespace(runs=runs), "npvae", "jax")
    assert paired == pytest.approx(statistics.median([1.0 / 1.5, 2.0 / 2.9, 1.9 / 2.7]))
    assert paired != pytest.approx(statistics.median(runs["npvae"]) / statistics.median(runs["jax"]))
    assert E.Runners.paired_ratio(types.SimpleNamespace(runs={"npvae": [1.0], "jax": []}), "npvae", "jax") is None

    def rec(name: str, default: bool, floor: float, peer: float | None) -> dict:
        return {"name": name, "default": default, "npvae_over_floor_paired": floor,
                "fastest_peer": "jax" if peer is not None else None, "npvae_over_fastest_peer_paired": peer}

    text = E.headline([rec("d", True, 1.10, 0.70), rec("b32", False, 2.0, 1.07), rec("t1", False, 1.2, None)])
    assert "PASS: default configuration: npvae/floor 1.10 (goal <= 1.15)" in text
    assert "PASS: default configuration: npvae/fastest peer (jax) 0.70 (goal <= 0.75)" in text
    assert "FAIL: npvae faster than every peer in 1 of 2 configurations (goal: all); not in: b32 (jax 1.07)" in text
    text = E.headline([rec("d", True, 1.16, 0.76)])
    assert "FAIL: default configuration: npvae/floor 1.16" in text
    assert "FAIL: default configuration: npvae/fastest peer (jax) 0.76" in text


def test_fused_pieces_times_every_variant_and_reports_each_piece() -> None:
    proc = _run([str(BENCH / "fused_pieces.py"), "--quick", "--examples", "512", "--random-data"])
    if proc.returncode == 2 and "does not run here" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    (d,) = [x for x in _json_lines(proc.stdout) if x["kind"] == "fused_pieces"]
    import fused_pieces as FP

    runs, diffs, pieces = d["runs_ms"], d["diffs_ms"], set(FP.VARIANTS) - {"whole"}
    assert set(runs) == set(FP.VARIANTS) | set(FP.FLOORS) and set(diffs) == set(d["piece_ms"]) == pieces
    assert len(runs["whole"]) == 2 * len(pieces)  # 2 rounds: one whole block beside each variant's
    assert all(len(runs[k]) == 2 for k in runs if k != "whole")
    assert all(_positive(t) for v in runs.values() for t in v)
    for k, cost in d["piece_ms"].items():  # a piece's cost: the median of (whole - without) over its pairs
        assert cost == pytest.approx(float(np.median(diffs[k])))
        for without, diff in zip(runs[k], diffs[k], strict=True):
            assert min(abs(w - without - diff) for w in runs["whole"]) < 1e-9
    assert d["blas_kernel"] and "| the whole fused step |" in proc.stdout


def test_bench_epoch_without_torch() -> None:
    proc = _run([str(BENCH / "bench_epoch.py"), "--quick", "--examples", "256", "--random-data", "--no-rss",
                 "--configs", "b128-h400-float32-t1"], env={"NPVAE_BENCH_NO_TORCH": "1"})
    assert proc.returncode == 0, proc.stderr
    (cfg,) = [d for d in _json_lines(proc.stdout) if d["kind"] == "config"]
    assert cfg["data"] == "random-uniform" and cfg["torch_s"] is None and cfg["npvae_over_torch"] is None
    assert _positive(cfg["npvae_s"]) and _positive(cfg["floor_s"])
    assert "PyTorch is not installed" in proc.stdout + proc.stderr


def test_compare_torch_without_torch(shared_data: Path) -> None:
    pytest.importorskip("mlxtend")
    proc = _run([str(BENCH / "compare_torch.py"), "--quick", "--epochs", "1", "--train-examples", "256",
                 "--eval-examples", "128", "--data", str(shared_data)], env={"NPVAE_BENCH_NO_TORCH": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PyTorch is not installed" in proc.stdout and "npvae :" in proc.stdout


def test_bench_epoch_torch_compile_peer() -> None:
    """torch.compile with Adam(fused=True) compiles (the full and the short batch) and times an epoch."""
    pytest.importorskip("torch")
    proc = _run([str(BENCH / "bench_epoch.py"), "--quick", "--examples", "300", "--no-rss", "--random-data",
                 "--impls", "npvae,torch_compile", "--configs", "b128-h400-float32-t2"], timeout=600)
    assert proc.returncode == 0, proc.stderr
    (cfg,) = [d for d in _json_lines(proc.stdout) if d["kind"] == "config"]
    assert "torch_compile" not in cfg["notes"], cfg["notes"]  # no failure noted
    assert _positive(cfg["torch_compile_s"]) and cfg["fastest_peer"] == "torch_compile"
    assert _positive(cfg["npvae_over_torch_compile"]) and _positive(cfg["torch_compile_last_train_loss"])


# ---------------------------------------------------------------------------- start-up
def test_bench_startup_sees_the_cache_cold_then_warm() -> None:
    """In a child with an empty NUMBA_CACHE_DIR the training step is not cached (the CLI then says it compiles);
    after warm_training it is, and the next process finds it so and loads it faster than the first compiled it."""
    proc = _run([str(BENCH / "bench_startup.py"), "--quick"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (case,) = [d for d in _json_lines(proc.stdout) if d["kind"] == "case"]
    first, (again,) = case["first"], case["cached"]
    assert first["cached_before"] is False and first["cached_after"] is True
    assert again["cached_before"] is True
    assert _positive(case["first_s"]) and _positive(case["cached_s"]) and case["cached_s"] < case["first_s"]
    assert "| warm_training |" in proc.stdout


# ---------------------------------------------------------------------------- the JAX and torch peers
@pytest.mark.parametrize("model", ["dense", "gated"])
def test_jax_peer_starts_at_npvae_loss_and_learns(model: str) -> None:
    """The jitted JAX step computes the same model: npvae's loss at init (float32), falling as it trains."""
    jax = P.try_import_jax()
    if jax is None:
        pytest.skip("jax is not installed")
    import npvae

    kw = {"layer": "gated", "logvar_bounds": (-6.0, 2.0)} if model == "gated" else {"activation": "relu"}
    hidden, k = ((24, 16), 6) if model == "gated" else ((32,), 5)
    vae = npvae.VAE(100, hidden, k, seed=3, dtype=np.float32, **kw)
    rng = np.random.default_rng(0)
    x = (rng.random((64, 100)) < 0.3).astype(np.float32)
    eps = rng.standard_normal((64, k), dtype=np.float32)
    np_loss, _ = vae.loss_and_grads(x, eps[None])
    peer = P.JaxPeer(jax, vae, x, batch_size=64, lr=1e-2, seed=0)
    assert peer.loss_at(x, eps) == pytest.approx(np_loss, rel=1e-4)
    first = peer.train_step(x, eps)  # the loss before the update: npvae's again
    assert first == pytest.approx(np_loss, rel=1e-4)
    for _ in range(20):
        peer.train_step(x, eps)
    assert peer.loss_at(x, eps) < 0.9 * first
    seconds, mean_loss = peer.train_epoch()
    assert seconds > 0 and np.isfinite(mean_loss)


@pytest.mark.parametrize("model", ["dense", "gated"])
def test_torch_peer_starts_at_npvae_loss(model: str) -> None:
    torch = pytest.importorskip("torch")
    import npvae

    kw = {"layer": "gated", "logvar_bounds": (-1.0, 0.5)} if model == "gated" else {"activation": "relu"}
    vae = npvae.VAE(50, (12, 10), 4, seed=1, dtype=np.float64, **kw)
    rng = np.random.default_rng(2)
    x = rng.random((9, 50))
    eps = 3 * rng.standard_normal((9, 4))  # large enough for the bounds to clip some logvars
    np_loss, _ = vae.loss_and_grads(x, eps[None])
    peer = P.TorchPeer(torch, vae, x, batch_size=9)
    got = P.torch_loss(torch, peer.model, peer.arch, torch.from_numpy(x), torch.from_numpy(eps)).item()
    assert got == pytest.approx(np_loss, rel=1e-12)


# ---------------------------------------------------------------------------- helpers
def test_fixed_eps_helper_matches_evaluate() -> None:
    """npvae_nelbo_fixed_eps with evaluate's own noise stream gives evaluate's number."""
    import npvae

    rng = np.random.default_rng(3)
    x = rng.random((2500, 30), dtype=np.float32)
    vae = npvae.VAE(30, (16,), 4, seed=1, dtype=np.float32)
    eps = np.random.default_rng(0).standard_normal((x.shape[0], 4), dtype=np.float32)  # evaluate's draws, in order
    got = C.npvae_nelbo_fixed_eps(vae, x, eps, chunk=1024)
    assert got == pytest.approx(vae.evaluate(x), rel=1e-6)


# ---------------------------------------------------------------------------- torch equivalence
def _batch(rng: np.random.Generator, b: int, p: int, likelihood: str) -> np.ndarray:
    x = rng.random((b, p))
    return x if likelihood == "bernoulli" else rng.standard_normal((b, p))


def _assert_equivalent(r: dict, loss_rtol: float, grad_rtol: float) -> None:
    assert r["loss_rel_diff"] <= loss_rtol, (r["npvae_loss"], r["torch_loss"], r["loss_rel_diff"])
    assert r["npvae_grads"].keys() == r["torch_grads"].keys()
    for k, g in r["npvae_grads"].items():
        t = r["torch_grads"][k]
        assert g.shape == t.shape, k
        # elementwise rtol; an absolute floor far below it (relative to the array's largest entry) lets
        # entries that cancel to ~0 through. atol = 1e-6 * rtol * max|g|.
        np.testing.assert_allclose(g, t, rtol=grad_rtol, atol=grad_rtol * 1e-6 * float(np.max(np.abs(t))),
                                   err_msg=k)


def test_torch_matches_npvae_float32_benchmark_model() -> None:
    """The startup sanity check of compare_torch.py (float32, 1e-4), on the real data if present."""
    torch = pytest.importorskip("torch")
    import compare_torch

    x = np.random.default_rng(0).random((200, 784), dtype=np.float32)
    compare_torch.sanity_check(torch, x)  # asserts loss to 1e-4 and gradients to 1e-3


def test_torch_matches_npvae_float64_benchmark_model() -> None:
    """784-400-20 ReLU, Bernoulli, L=1, beta=1 (the benchmarked model), float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.random((32, 784))
    x[:, ::3] = (x[:, ::3] > 0.5)  # some exact 0/1 pixels, like MNIST
    eps = rng.standard_normal((32, 20))
    r = C.equivalence_check(torch, x, eps, dtype=np.float64, hidden_dims=(400,), latent_dim=20)
    _assert_equivalent(r, 1e-10, 1e-8)


VARIANTS = {
    "gaussian-tanh-L2-beta0.5": dict(likelihood="gaussian", activation="tanh", sigma_dec=0.7, n_samples=2, beta=0.5),
    "gaussian-relu-L1": dict(likelihood="gaussian", activation="relu", sigma_dec=1.3),
    "bernoulli-relu-L3-beta2": dict(likelihood="bernoulli", activation="relu", n_samples=3, beta=2.0),
    "bernoulli-leaky_relu": dict(likelihood="bernoulli", activation="leaky_relu", alpha=0.1),
    "bernoulli-sigmoid": dict(likelihood="bernoulli", activation="sigmoid"),
    "bernoulli-softplus": dict(likelihood="bernoulli", activation="softplus"),
    "bernoulli-identity-beta0": dict(likelihood="bernoulli", activation="identity", beta=0.0),
}


@pytest.mark.parametrize("hidden", [(16,), (16, 12)], ids=["1-hidden", "2-hidden"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_torch_matches_npvae_float64_variants(variant: str, hidden: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    kw = VARIANTS[variant]
    rng = np.random.default_rng(zlib.crc32(f"{variant}{hidden}".encode()))
    b, p, k, n_samples = 7, 30, 4, kw.get("n_samples", 1)
    x = _batch(rng, b, p, kw["likelihood"])
    eps = rng.standard_normal((n_samples, b, k))
    r = C.equivalence_check(torch, x, eps, dtype=np.float64, hidden_dims=hidden, latent_dim=k, seed=5, **kw)
    _assert_equivalent(r, 1e-10, 1e-8)


def test_torch_fixed_eps_evaluation_matches_npvae() -> None:
    """The two held-out estimators of compare_torch.py agree on the same model and noise."""
    torch = pytest.importorskip("torch")
    import npvae

    rng = np.random.default_rng(7)
    x = rng.random((1100, 50))
    vae = npvae.VAE(50, (20,), 5, seed=2, dtype=np.float64)
    model = C.make_torch_vae(torch, 50, (20,), 5, dtype=np.float64, seed=0)
    C.copy_npvae_to_torch(vae, model)
    eps = rng.standard_normal((3, 1100, 5))
    a = C.npvae_nelbo_fixed_eps(vae, x, eps, chunk=300)
    b = C.torch_nelbo_fixed_eps(torch, model, x, eps, chunk=256)
    assert a == pytest.approx(b, rel=1e-12)


def test_torch_trainer_epoch_runs() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((300, 40), dtype=np.float32)
    model = C.make_torch_vae(torch, 40, (16,), 3, dtype=np.float32, seed=0)
    tr = C.TorchTrainer(torch, model, x, batch_size=64, seed=0)
    s1, l1 = tr.train_epoch()
    s2, l2 = tr.train_epoch()
    assert s1 > 0 and s2 > 0 and np.isfinite(l1) and l2 < l1


# ---------------------------------------------------------------------------- step_breakdown
def test_step_breakdown_runs_and_adds_up() -> None:
    proc = _run([str(BENCH / "step_breakdown.py"), "--examples", "1024", "--epochs", "1"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (b,) = _json_lines(proc.stdout)
    for key in ("floor_ms", "npvae_ms", "fused_ms", "instrumented_ms", "products_ms", "optimizer_ms",
                "optimizer_kernel_ms", "kernels_ms", "noise_alone_ms"):
        assert _positive(b[key]), (key, b[key])
    assert set(b["kernel_ms"]) == {"bias_act_forward", "act_backward", "bernoulli_nll", "reparam_kl_forward",
                                   "reparam_kl_backward", "gather_rows"}
    assert b["optimizer_kernel_ms"] <= b["optimizer_ms"]
    pieces = b["products_ms"] + b["optimizer_ms"] + b["kernels_ms"] + b["rest_ms"]
    assert pieces == pytest.approx(b["instrumented_ms"], rel=1e-12)
    assert b["bound_split_ms"] == pytest.approx(
        b["floor_ms"] + b["rest_ms"] + (b["optimizer_ms"] + b["kernels_ms"]) / 2, rel=1e-12)
    assert b["bound_split_ms"] < b["bound_serial_ms"]
    d = b["fused_detail"]
    if d is not None:  # the fused step applies here: its time above the floor, split in two
        assert d["excess_ms"] == pytest.approx(d["forward_excess_ms"] + d["backward_update_excess_ms"], rel=1e-9)
        for key in ("fused_direct_ms", "fused_1core_ms", "fused_forward_ms", "floor_forward_ms", "floor_1thread_ms"):
            assert _positive(d[key]), (key, d[key])
    assert "x floor" in proc.stdout.splitlines()[-1]


def test_step_breakdown_times_every_product_and_restores_npvae() -> None:
    import step_breakdown as sb

    from npvae import kernels, layers

    before = {name: getattr(kernels, name) for name in sb.KERNELS + sb.OPTIMIZER_KERNELS}
    vae, opt = C.npvae.VAE(784, (16,), 4, seed=0), C.npvae.Adam()
    x = np.random.default_rng(0).random((300, 784), dtype=np.float32)
    acc: dict[str, float] = collections.defaultdict(float)
    C.npvae.train(C.npvae.VAE(784, (16,), 4, seed=0), x, epochs=1, batch_size=128, fused=False)  # its warm-up
    with sb.instrumented(opt, acc) as timed_np:
        C.npvae.train(vae, x, epochs=1, batch_size=128, optimizer=opt, fused=False)
    steps = 3
    assert timed_np.calls == 11 * steps  # forward 4 products, backward 7 (no dx for the first layer)
    assert all(acc[k] > 0 for k in ("products", "optimizer", "optimizer kernel", "kernel gather_rows",
                                    "kernel bernoulli_nll", "kernel reparam_kl_backward"))
    assert "kernel gaussian_sq_err" not in acc
    assert layers.np is np and "step" not in vars(opt)
    assert all(getattr(kernels, name) is f for name, f in before.items())
    assert np.isfinite(vae.evaluate(x[:64]))


def test_floor_bound_counts_the_floors_flops() -> None:
    """The GFLOP/s of ``floor_bound.py`` rest on its count of the floor's work: 2 m n k per product, counted
    here from the products ``Floor.step`` actually calls, for the default model and a deeper one."""
    import bench_epoch as E
    import floor_bound as FB

    for hidden in (400, (64, 32)):
        floor = E.Floor(np.zeros((40, 784), np.float32), 16, hidden, np.dtype(np.float32))
        counted: list[int] = []

        def count(a: np.ndarray, b: np.ndarray, out: np.ndarray, counted: list[int] = counted) -> np.ndarray:
            counted.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
            return out

        real, E.np.matmul = E.np.matmul, count
        try:
            floor.step(floor.x[:16])
        finally:
            E.np.matmul = real
        assert len(counted) == floor.products_per_step
        assert FB.floor_flops(floor, 16) == sum(counted)


def test_floor_bound_reports_the_bound_from_its_own_runs() -> None:
    proc = _run([str(BENCH / "floor_bound.py"), "--quick", "--random-data"])
    if proc.returncode != 0 and "OpenBLAS" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    (d,) = [x for x in _json_lines(proc.stdout) if x["kind"] == "floor_bound"]
    runs = d["runs_ms"]
    assert set(runs) == set(d["median_ms"]) and all(len(v) == 2 and all(_positive(t) for t in v)
                                                     for v in runs.values())
    bound = statistics.median((f + a) / f for f, a in zip(runs["floor"], runs["adam_after_products"], strict=True))
    assert d["bound"] == pytest.approx(bound)
    assert d["weights"] == 784 * 400 + 400 * 40 + 20 * 400 + 400 * 784
    assert all(_positive(v) for v in d["gflops"].values()) and d["blas_kernel"]
    assert f"floor + Adam = {d['bound']:.3f} x floor" in proc.stdout
