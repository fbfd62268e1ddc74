"""Calls that used to corrupt memory now stop with a clear error (issue #20, items 7 and 8).

Numba kernels have no bounds checks, so a wrong shape that reaches one can
crash the process or silently overwrite other memory. Each call runs in a
child process: a segfault or an abort is then a failed test, not a dead test
run. The child prints the exception it caught; the test asserts that it
exited normally (status 0, not a negative signal number) and printed the
expected error.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import numpy as np
import npvae

def model(hidden, latent=3, seed=0, width=12):
    return npvae.VAE(input_dim=width, hidden_dims=hidden, latent_dim=latent, seed=seed, dtype=np.float64)

X = np.random.default_rng(0).random((40, 12))

def report(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        print(f"{type(exc).__name__}: {exc}", flush=True)
    else:
        print("no error", flush=True)
"""


def run_child(body: str) -> str:
    """Run ``body`` after :data:`PRELUDE` in a fresh interpreter; return its stdout, asserting a clean exit."""
    code = PRELUDE + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, \
        f"child exited with status {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.parametrize("opt", ["npvae.Adam()", "npvae.SGD(lr=0.1, momentum=0.9)"])
def test_an_optimizer_stepped_on_another_model_with_other_shapes_refuses(opt: str) -> None:
    out = run_child(f"""
        small, big = model((4,)), model((300, 200), latent=30)
        opt = {opt}
        opt.step(small.params, small.loss_and_grads(X)[1])
        report(lambda: opt.step(big.params, big.loss_and_grads(X)[1]))
        report(lambda: opt.step(big.params, big.loss_and_grads(X)[1]))  # and again: no state was half-made
    """)
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], out
    assert lines[0].startswith("ValueError: "), out
    assert "'encoder.0.W'" in lines[0] and "(12, 4)" in lines[0] and "(12, 300)" in lines[0], out
    assert "fresh" in lines[0] and "reset()" in lines[0], out


@pytest.mark.parametrize("fused", [None, False])
def test_train_with_the_optimizer_of_another_model_refuses(fused: bool | None) -> None:
    out = run_child(f"""
        small, big = model((4,)), model((300, 200), latent=30)
        opt = npvae.Adam()
        npvae.train(small, X, epochs=1, batch_size=8, optimizer=opt, fused={fused})
        before = {{k: p.copy() for k, p in big.params.items()}}
        report(lambda: npvae.train(big, X, epochs=1, batch_size=8, optimizer=opt, fused={fused}))
        print("unchanged", all(np.array_equal(before[k], big.params[k]) for k in before))
    """)
    assert out.splitlines()[0].startswith("ValueError: "), out
    assert "another model" in out and "unchanged True" in out, out


def test_optimizer_state_loaded_for_other_shapes_refuses_and_for_these_shapes_steps() -> None:
    out = run_child("""
        src, dst = model((4,)), model((4,), seed=1)
        opt = npvae.Adam()
        opt.step(src.params, src.loss_and_grads(X)[1])
        state = opt.state_arrays()
        fresh = npvae.Adam()
        fresh.load_state_arrays(state)       # as load_checkpoint does: state for exactly these shapes
        report(lambda: fresh.step(dst.params, dst.loss_and_grads(X)[1]))
        print("t", fresh.t)
        state["encoder.0.W.m"] = np.zeros(3)  # a damaged checkpoint: moments of another size
        bad = npvae.Adam()
        bad.load_state_arrays(state)
        report(lambda: bad.step(dst.params, dst.loss_and_grads(X)[1]))
    """)
    lines = out.splitlines()
    assert lines[:2] == ["no error", "t 2"], out
    assert lines[2].startswith("ValueError: ") and "'encoder.0.W'" in lines[2] and "(3,)" in lines[2], out


def test_dense_backward_with_a_gradient_of_the_wrong_shape_refuses() -> None:
    out = run_child("""
        layer = npvae.Dense(5, 4, "tanh", rng=np.random.default_rng(0))
        layer.forward(np.ones((3, 5)))
        report(lambda: layer.backward(np.ones((3, 400))))
        report(lambda: layer.backward(np.ones((300, 4))))
        report(lambda: npvae.Dense(5, 4, "relu").backward(np.ones((3, 4))))
    """)
    lines = out.splitlines()
    assert lines[0] == "ValueError: dy must have the shape of the last forward output, (3, 4), got (3, 400)", out
    assert lines[1] == "ValueError: dy must have the shape of the last forward output, (3, 4), got (300, 4)", out
    assert lines[2].startswith("RuntimeError: Dense.backward called before forward"), out


def test_activation_backward_with_a_gradient_of_the_wrong_shape_refuses() -> None:
    out = run_child("""
        layer = npvae.Activation("tanh")
        layer.forward(np.ones((2, 3)))
        report(lambda: layer.backward(np.ones((2, 500))))
        report(lambda: layer.backward(np.ones((2000, 3))))
        layer.forward(np.ones((2, 7)))
        report(lambda: layer.backward(np.ones((2, 3))))
    """)
    lines = out.splitlines()
    assert lines == ["ValueError: dy must have the shape of the last forward output, (2, 3), got (2, 500)",
                     "ValueError: dy must have the shape of the last forward output, (2, 3), got (2000, 3)",
                     "ValueError: dy must have the shape of the last forward output, (2, 7), got (2, 3)"], out
