"""The fused training step (npvae.fused) computes what the layer path computes, and train() uses it safely.

The layer path (``VAE._step`` then ``Adam.step``) is the reference: its
gradients are checked against finite differences and against PyTorch
elsewhere. Here the fused step must reproduce it in float64 to roundoff
(1e-12 relative: the products are split into row blocks and the bias sums
into parts, nothing else differs) over several Adam steps, for any split,
architecture, activation and likelihood it covers; its gradients are also
checked against finite differences directly.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import npvae
from npvae import _blas, fused, kernels

pytestmark = pytest.mark.skipif(
    _blas.numpy_blas() is None or __import__("numba").config.DISABLE_JIT,
    reason="the fused step needs NumPy's OpenBLAS and compiled kernels")

P, K = 12, 3


def make(hidden=(16, 12), likelihood="bernoulli", activation="relu", beta=0.7, dtype=np.float64, seed=0):
    return npvae.VAE(P, hidden, K, likelihood=likelihood, activation=activation, beta=beta, seed=seed, dtype=dtype)


def data(n: int = 25, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(2).random((n, P)).astype(dtype)


def run(use_fused: bool, vae: npvae.VAE, x: np.ndarray, batches: list[np.ndarray], parts: int = 2,
        lr: float = 1e-2, between=None, dirty: bool = False) -> tuple[npvae.Adam, list[tuple[float, float]]]:
    """Adam steps on ``x[idx]`` for each ``idx``, by the fused step or the layer path, with one noise stream.

    ``between(vae, opt, s)``, if given, is called before step ``s`` (a user changing the model between steps).
    ``dirty``: the fused step's scratch buffers are filled with NaN before every step.
    """
    opt, rng, out = npvae.Adam(lr=lr), np.random.default_rng(1), []
    step = fused.FusedStep(vae, opt, parts=parts) if use_fused else None
    one = vae.dtype.type(1)
    for s, idx in enumerate(batches):
        if between is not None:
            between(vae, opt, s)
        if step is not None and dirty:
            Y, dY, xb, dz = step._workspaces(idx.shape[0])
            for a in [*Y, *dY, xb, dz, step.dbpart, step.tmp]:
                a[...] = np.nan
        if step is not None:
            with step.one_blas_thread():
                out.append(step(x, idx, one, rng))
        else:
            xb = np.empty((idx.shape[0], P), vae.dtype)
            kernels.gather_rows(x, idx, one, xb)
            loss = vae._step(xb, rng=rng)
            out.append((loss, opt.step(vae.params, vae.grads)))
    return opt, out


def rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    return float(np.max(np.abs(a - b))) / scale if scale else 0.0


def assert_same(cfg: dict, parts: int, batch: int, steps: int = 3, dtype=np.float64, tol: float = 1e-12,
                between=None, prepare=None, dirty: bool = False) -> None:
    """The layer path and the fused step take the same steps; ``prepare(vae)`` is applied to both models first."""
    x = data(dtype=dtype)
    batches = [np.random.default_rng([3, s]).permutation(len(x))[:batch] for s in range(steps)]
    a, b = make(dtype=dtype, **cfg), make(dtype=dtype, **cfg)
    if prepare is not None:
        prepare(a)
        prepare(b)
    opt_a, la = run(False, a, x, batches, between=between)
    opt_b, lb = run(True, b, x, batches, parts=parts, between=between, dirty=dirty)
    for (loss_a, sq_a), (loss_b, sq_b) in zip(la, lb, strict=True):
        assert abs(loss_a - loss_b) <= tol * abs(loss_a) and abs(sq_a - sq_b) <= tol * abs(sq_a)
    for key in a.params:
        assert rel(a.params[key], b.params[key]) <= tol, key
        assert rel(a.grads[key], b.grads[key]) <= tol, key
        for s in ("m", "v"):
            assert rel(opt_a.state[key][s], opt_b.state[key][s]) <= tol, (key, s)
    assert opt_a.t == opt_b.t and (opt_a.t == steps or between is not None)


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("cfg", [
    {},
    {"hidden": ()},
    {"hidden": (9,), "likelihood": "gaussian", "activation": "tanh"},
    {"activation": "leaky_relu", "beta": 0.0},
    {"activation": "sigmoid"},
    {"activation": "softplus", "likelihood": "gaussian"},
], ids=["relu", "no-hidden", "gaussian-tanh", "leaky-beta0", "sigmoid", "softplus-gaussian"])
def test_fused_step_matches_the_layer_path(cfg: dict, parts: int) -> None:
    assert_same(cfg, parts, batch=10)


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("cfg", [{}, {"hidden": ()}, {"hidden": (9,), "activation": "tanh"}],
                         ids=["relu", "no-hidden", "tanh"])
def test_the_step_reads_nothing_its_scratch_buffers_held_before(cfg: dict, parts: int) -> None:
    """Each part writes every entry it later reads (its rows, its columns, its sums, zeros elsewhere)."""
    assert_same(cfg, parts, batch=10, dirty=True)


def test_fused_step_matches_in_float32() -> None:
    assert_same({}, parts=2, batch=10, dtype=np.float32, tol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden=st.lists(st.integers(1, 9), max_size=3), batch=st.integers(1, 25), parts=st.integers(1, 4),
       activation=st.sampled_from(sorted(kernels.ACTIVATIONS)),
       likelihood=st.sampled_from(["bernoulli", "gaussian"]))
@example(hidden=[], batch=1, parts=4, activation="relu", likelihood="bernoulli")  # more parts than rows
def test_fused_step_matches_for_any_shape_and_split(hidden: list[int], batch: int, parts: int, activation: str,
                                                     likelihood: str) -> None:
    assert_same({"hidden": tuple(hidden), "activation": activation, "likelihood": likelihood}, parts, batch,
                steps=2)


# ---------------------------------------------------------------------------- what a user changes between steps
# The fused step must read, at every call, whatever the layer path reads at every call (issue #20, item 1:
# it kept beta / B and the likelihood's scale from the first step of each batch size).
def _set_beta(values):
    def between(vae, opt, s):
        vae.beta = values[s % len(values)]
    return between


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_changed_beta_is_used_by_the_next_step(likelihood: str, parts: int) -> None:
    assert_same({"likelihood": likelihood}, parts, batch=10, steps=5, between=_set_beta([1.0, 50.0, 0.0, 0.3, 7.0]))


@pytest.mark.parametrize("parts", [1, 2])
def test_a_changed_sigma_dec_is_used_by_the_next_step(parts: int) -> None:
    def between(vae, opt, s):
        vae.sigma_dec = (1.0, 0.25, 3.0, 0.6, 1.7)[s]
        vae.beta = (0.7, 2.0, 0.1, 0.0, 1.0)[s]
    assert_same({"likelihood": "gaussian"}, parts, batch=10, steps=5, between=between)


def test_a_changed_learning_rate_and_betas_are_used_by_the_next_step() -> None:
    def between(vae, opt, s):
        opt.lr = (1e-2, 3e-2, 1e-3, 5e-3)[s]
        opt.betas = ((0.9, 0.999), (0.8, 0.99), (0.5, 0.9), (0.9, 0.999))[s]
    assert_same({}, 2, batch=10, steps=4, between=between)


def test_a_changed_likelihood_is_used_by_the_next_step() -> None:
    def between(vae, opt, s):
        vae.likelihood = ("bernoulli", "gaussian", "bernoulli", "gaussian")[s]
    assert_same({}, 2, batch=10, steps=4, between=between)


def test_reloaded_optimizer_state_is_used_by_the_next_step() -> None:
    """``Adam.load_state_arrays`` between steps (new moment arrays): the fused step uses the new ones."""
    saved = {}

    def between(vae, opt, s):
        if s == 1:
            saved.update({k: a.copy() for k, a in opt.state_arrays().items()})
        if s == 3:
            opt.load_state_arrays(saved)
    assert_same({}, 2, batch=10, steps=5, between=between)


@pytest.mark.parametrize("before", [True, False], ids=["before-the-step-is-made", "between-steps"])
@pytest.mark.parametrize("attr, value", [("alpha", 0.3), ("activation", "tanh")])
def test_the_step_uses_the_layers_activation_as_the_layer_path_does(attr: str, value, before: bool) -> None:
    """``vae.alpha`` and ``vae.activation`` are read by the layers when they are made, not per step: a later
    change does not reach the layer path, so it must not reach the fused step either (both paths agree)."""
    change = lambda vae: setattr(vae, attr, value)  # noqa: E731
    if before:
        assert_same({"activation": "leaky_relu"}, 2, batch=10, steps=3, prepare=change)
    else:
        assert_same({"activation": "leaky_relu"}, 2, batch=10, steps=3,
                    between=lambda vae, opt, s: change(vae) if s == 1 else None)


def test_a_changed_n_samples_makes_the_step_refuse() -> None:
    vae, x = make(), data()
    step = fused.FusedStep(vae, npvae.Adam(), parts=2)
    with step.one_blas_thread():
        step(x, np.arange(10), np.float64(1), np.random.default_rng(0))
        vae.n_samples = 2
        before = {k: p.copy() for k, p in vae.params.items()}
        with pytest.raises(ValueError, match="n_samples is now 2"):
            step(x, np.arange(10), np.float64(1), np.random.default_rng(0))
    for k in before:
        np.testing.assert_array_equal(vae.params[k], before[k])


# ---------------------------------------------------------------------------- evaluation split over the cores
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("cfg", [
    {},
    {"hidden": ()},
    {"hidden": (9, 5), "likelihood": "gaussian", "activation": "tanh", "beta": 2.0},
    {"activation": "leaky_relu"},
], ids=["relu", "no-hidden", "gaussian-tanh-deep", "leaky"])
def test_fused_evaluation_matches_evaluate_terms(cfg: dict, parts: int) -> None:
    """FusedStep.evaluate_terms gives vae.evaluate_terms' numbers (same chunks, same noise) and changes nothing."""
    vae = make(**cfg)
    x = data(60)
    opt = npvae.Adam(lr=1e-2)
    step = fused.FusedStep(vae, opt, parts=parts)
    with step.one_blas_thread():
        step(x, np.arange(10), np.float64(1), np.random.default_rng(0))  # a trained step first: moments exist
    before = {k: (vae.params[k].copy(), vae.grads[k].copy()) for k in vae.params}
    state = copy.deepcopy(opt.state)
    chunks = (7, 60, 1024)
    got = [step.evaluate_terms(x, chunk=c) for c in chunks]
    for k, (p, g) in before.items():  # (the layer path's evaluate writes the output bias's gradient; not this)
        np.testing.assert_array_equal(vae.params[k], p)
        np.testing.assert_array_equal(vae.grads[k], g)
        for s in ("m", "v"):
            np.testing.assert_array_equal(opt.state[k][s], state[k][s])
    assert opt.t == 1
    for c, terms in zip(chunks, got, strict=True):
        want = vae.evaluate_terms(x, batch_size=c)
        for g, w in zip(terms, want, strict=True):
            assert abs(g - w) <= 1e-12 * abs(w), (c, terms, want)


def test_fused_evaluation_of_uint8_pixels_and_a_changed_beta() -> None:
    vae = make(beta=0.5)
    px = (data(50) * 255).astype(np.uint8)
    step = fused.FusedStep(vae, npvae.Adam(), parts=2)
    want = vae.evaluate_terms(px.astype(np.float64) * (1 / 255), batch_size=16)
    got = step.evaluate_terms(px, 1 / 255, chunk=16)
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 1e-12 * abs(w)
    vae.beta, vae.likelihood = 3.0, "gaussian"  # what evaluate reads at every call, the fused one reads too
    want = vae.evaluate_terms(px.astype(np.float64) * (1 / 255), batch_size=16)
    got = step.evaluate_terms(px, 1 / 255, chunk=16)
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 1e-12 * abs(w)


def test_fused_evaluation_holds_the_blas_to_one_thread_and_gives_it_back(two_threads) -> None:
    step = fused.FusedStep(make(), npvae.Adam(), parts=2)
    seen = []
    original = fused.fused_step

    def spy(*args):
        seen.append(two_threads.get_num_threads())
        return original(*args)

    try:
        fused.fused_step = spy
        step.evaluate_terms(data(40), chunk=16)
    finally:
        fused.fused_step = original
    assert seen == [1, 1, 1] and two_threads.get_num_threads() == 2


def test_fused_gradients_pass_a_finite_difference_check() -> None:
    """The gradient the fused step applies is the gradient of the full negative ELBO at the noise it drew."""
    vae = make(hidden=(7,), activation="tanh")
    before = copy.deepcopy(vae)
    x = data()
    idx = np.arange(3, 13)
    opt = npvae.Adam(lr=1e-3)
    step = fused.FusedStep(vae, opt, parts=2)
    with step.one_blas_thread():
        step(x, idx, np.float64(1), np.random.default_rng(5))
    eps = vae._noise.get(len(idx))["eps"].copy()
    for key, p in before.params.items():
        orig = p.copy()

        def f(v: np.ndarray, p: np.ndarray = p) -> float:  # p bound now (f is called only in this iteration)
            p[...] = v
            r, kl = before.loss_terms(x[idx], eps)
            return r + before.beta * kl

        res = npvae.gradcheck(f, orig.copy(), vae.grads[key], rng=np.random.default_rng(0), n_directions=3)
        p[...] = orig
        assert res, f"{key}: {res}"


def test_a_non_finite_loss_changes_nothing() -> None:
    vae = make()
    x = data()
    opt = npvae.Adam()
    step = fused.FusedStep(vae, opt, parts=2)
    with step.one_blas_thread():
        step(x, np.arange(10), np.float64(1), np.random.default_rng(0))
    vae.params["decoder.out.b"][0] = np.inf
    params = {k: p.copy() for k, p in vae.params.items()}
    state = copy.deepcopy(opt.state)
    with step.one_blas_thread():
        loss, sq = step(x, np.arange(10), np.float64(1), np.random.default_rng(0))
    assert not np.isfinite(loss) and sq == 0.0 and opt.t == 1
    for k in params:
        np.testing.assert_array_equal(vae.params[k], params[k])
        for s in ("m", "v"):
            np.testing.assert_array_equal(opt.state[k][s], state[k][s])


def _one_step_with(skip: int) -> tuple[dict, dict, fused.FusedStep]:
    """The parameters before and after one fused step with the pieces ``skip`` left out, and the step."""
    vae = make()
    step = fused.FusedStep(vae, npvae.Adam(), parts=2)
    assert step.ints[7] == 0  # what every training step passes
    for w in step.dWs:
        w[...] = 7.0  # sentinels: a weight-gradient product overwrites them
    for i in range(len(step.widths)):
        step._workspaces(10)[1][i][...] = 7.0
    step._workspaces(10)[3][...] = 7.0
    before = {k: p.copy() for k, p in vae.params.items()}
    step.ints[7] = skip
    with step.one_blas_thread():
        loss, _ = step(data(), np.arange(10), np.float64(1), np.random.default_rng(0))
    assert np.isfinite(loss)
    return before, {k: p.copy() for k, p in vae.params.items()}, step


def test_the_skip_bits_leave_out_what_benchmarks_fused_pieces_says_they_do() -> None:
    """benchmarks/fused_pieces.py times each piece by its absence: each bit must take out that piece alone."""
    changed = lambda b, a, k: not np.array_equal(b[k], a[k])  # noqa: E731
    weights = [k for k in make().params if k.endswith(".W")]
    biases = [k for k in make().params if k.endswith(".b")]
    b, a, step = _one_step_with(0)
    assert all(changed(b, a, k) for k in weights + biases)
    assert not np.any(step._workspaces(10)[3] == 7.0)  # dz, the input gradient of the decoder's first layer
    b, a, step = _one_step_with(fused.SKIP_WEIGHT_UPDATE)
    assert not any(changed(b, a, k) for k in weights) and all(changed(b, a, k) for k in biases)
    assert not any(np.any(w == 7.0) for w in step.dWs)  # the weight gradients were still computed
    b, a, step = _one_step_with(fused.SKIP_SECOND_PHASE)
    assert not any(changed(b, a, k) for k in weights + biases)
    assert all(np.all(w == 7.0) for w in step.dWs)
    b, a, step = _one_step_with(fused.SKIP_WEIGHT_GRADIENTS)
    assert all(np.all(w == 7.0) for w in step.dWs) and all(changed(b, a, k) for k in weights)
    b, a, step = _one_step_with(fused.SKIP_INPUT_GRADIENTS)
    assert np.all(step._workspaces(10)[3] == 7.0)  # dz never written
    b, a, step = _one_step_with(fused.SKIP_BACKWARD_KERNELS)
    dY = step._workspaces(10)[1]
    head = len(make().hidden_dims)  # the layer index of [mu | logvar]
    assert np.all(dY[head] == 7.0)  # the head's gradient comes from the reparameterization backward alone
    assert not np.any(step._workspaces(10)[3] == 7.0)  # while the products into dz still ran


# ---------------------------------------------------------------------------- through npvae.train
@pytest.fixture
def two_threads():
    """Numba and the BLAS on two threads each, as train()'s automatic choice needs."""
    import numba

    blas = _blas.numpy_blas()
    old = numba.get_num_threads(), blas.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here")
    numba.set_num_threads(2)
    blas.set_num_threads(2)
    yield blas
    numba.set_num_threads(old[0])
    blas.set_num_threads(old[1])


@pytest.mark.parametrize("pixels", [False, True], ids=["float", "uint8"])
def test_train_takes_the_same_path_fused_or_not(two_threads, pixels: bool) -> None:
    """Two epochs with a short last batch: the same losses and parameters either way (float64)."""
    x = (data(90) * 255).astype(np.uint8) if pixels else data(90)
    kw = {"pixel_scale": 1 / 255} if pixels else {}
    runs = {}
    for use in (False, True):
        vae = make()
        seen: list[int] = []
        hist = npvae.train(vae, x, epochs=2, batch_size=32, seed=4, fused=use,
                           on_batch=lambda *a, seen=seen: seen.append(two_threads.get_num_threads()), **kw)
        runs[use] = vae, hist, seen
    (a, ha, seen_a), (b, hb, seen_b) = runs[False], runs[True]
    assert seen_a == [2] * 6 and seen_b == [1] * 6  # the fused epochs keep the BLAS on one thread...
    assert two_threads.get_num_threads() == 2  # ...and give it back
    for ra, rb in zip(ha, hb, strict=True):
        assert abs(ra["train_loss"] - rb["train_loss"]) <= 1e-12 * ra["train_loss"]
    for key in a.params:
        assert rel(a.params[key], b.params[key]) <= 1e-12, key


def test_train_uses_the_fused_step_by_itself_when_it_can(two_threads, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = fused.FusedStep.__call__

    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(fused.FusedStep, "__call__", counted)
    npvae.train(make(), data(40), epochs=1, batch_size=16)
    assert len(calls) == 3
    npvae.train(make(), data(40), epochs=1, batch_size=16, optimizer=npvae.SGD(0.1))  # not covered: layer path
    npvae.train(make(), data(40), epochs=1, batch_size=16, clip_norm=10.0)
    assert len(calls) == 3


@pytest.mark.parametrize("kw, why", [
    ({"optimizer": npvae.SGD(0.1)}, "npvae.Adam only"),
    ({"clip_norm": 1.0}, "clip_norm"),
    ({"vae": "two samples"}, "n_samples=2"),
])
def test_fused_true_says_why_it_cannot(two_threads, kw: dict, why: str) -> None:
    vae = npvae.VAE(P, (5,), K, n_samples=2, dtype=np.float64) if kw.pop("vae", None) else make()
    with pytest.raises(ValueError, match=why):
        npvae.train(vae, data(40), epochs=1, batch_size=16, fused=True, **kw)
    with pytest.raises(TypeError, match="fused must be"):
        npvae.train(make(), data(40), epochs=1, batch_size=16, fused="yes")


def test_fused_true_needs_two_threads(two_threads) -> None:
    two_threads.set_num_threads(1)
    with pytest.raises(ValueError, match="two cores"):
        npvae.train(make(), data(40), epochs=1, batch_size=16, fused=True)
    npvae.train(make(), data(40), epochs=1, batch_size=16)  # the default falls back to the layer path


def test_fused_divergence_stops_training(two_threads) -> None:
    vae = make()
    vae.params["encoder.0.W"][0, 0] = np.nan
    with pytest.raises(npvae.TrainingDivergedError, match="loss became nan"):
        npvae.train(vae, data(40), epochs=1, batch_size=16, fused=True)
    assert two_threads.get_num_threads() == 2


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_train_follows_a_kl_schedule_fused_or_not(two_threads, likelihood: str) -> None:
    """A KL schedule set from on_epoch, and for the Gaussian decoder sigma_dec changed from on_batch: both
    paths train with the new values from the next step on, and take the same path (issue #20, item 1: the
    fused step kept the beta / B of its first step, so there the KL collapsed while beta was 50)."""
    schedule = {1: 0.0, 2: 50.0, 3: 0.5}  # beta for the epoch after epoch e

    def run_with(use: bool) -> tuple[npvae.VAE, list[dict]]:
        vae = make(likelihood=likelihood)

        def on_epoch(rec: dict) -> None:
            vae.beta = schedule.get(rec["epoch"], 1.0)

        def on_batch(epoch: int, batch: int, n_batches: int, loss: float) -> None:
            if likelihood == "gaussian":
                vae.sigma_dec = 0.5 + 0.25 * ((epoch + batch) % 4)

        hist = npvae.train(vae, data(90), epochs=4, batch_size=32, seed=4, fused=use, on_epoch=on_epoch,
                           on_batch=on_batch)
        return vae, hist

    (a, ha), (b, hb) = run_with(False), run_with(True)
    for ra, rb in zip(ha, hb, strict=True):
        assert abs(ra["train_loss"] - rb["train_loss"]) <= 1e-12 * abs(ra["train_loss"]), (ra, rb)
    for key in a.params:
        assert rel(a.params[key], b.params[key]) <= 1e-12, (key, rel(a.params[key], b.params[key]))


@pytest.mark.parametrize("pixels", [False, True], ids=["float", "uint8"])
def test_train_validates_with_the_fused_step_and_the_same_numbers(two_threads, monkeypatch: pytest.MonkeyPatch,
                                                                  pixels: bool) -> None:
    """With x_val, the fused path validates split over the cores (its BLAS on one thread, so that no BLAS
    thread spins into the next epoch: issue #21) and records what the layer path records."""
    calls = []
    original = fused.FusedStep.evaluate_terms

    def counted(self, x_eval, *args, **kw):
        if x_eval.shape[0] == 30:  # x_val's validation, not train()'s warm-up of the kernels on a few rows
            calls.append(two_threads.get_num_threads())
        return original(self, x_eval, *args, **kw)

    monkeypatch.setattr(fused.FusedStep, "evaluate_terms", counted)
    x = (data(90) * 255).astype(np.uint8) if pixels else data(90)
    kw = {"pixel_scale": 1 / 255} if pixels else {}
    hists = {use: npvae.train(make(), x[:60], epochs=3, batch_size=16, seed=2, x_val=x[60:], fused=use, **kw)
             for use in (False, True)}
    assert len(calls) == 3 and two_threads.get_num_threads() == 2
    for ra, rb in zip(hists[False], hists[True], strict=True):
        for key in ("val_loss", "val_reconstruction", "val_kl", "val_nelbo"):
            assert abs(ra[key] - rb[key]) <= 1e-12 * abs(ra[key]), (key, ra, rb)

# ---------------------------------------------------------------------------- benchmarks/bench_validation.py
# (smoke tests of the benchmark of this path with validation, and of the benchmarks' BLAS-kernel handling;
# they would sit as well in tests/test_benchmarks_smoke.py)
BENCH = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"


def _run(args: list[str], env: dict | None = None, timeout: float = 600):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=BENCH.parent)


def _json_lines(stdout: str) -> list[dict]:
    import json

    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def test_bench_validation_quick() -> None:
    proc = _run([str(BENCH / "bench_validation.py"), "--quick"])
    assert proc.returncode == 0, proc.stderr
    lines = _json_lines(proc.stdout)
    env = lines[0]
    assert env["kind"] == "env" and "blas_kernel" in env and "blas_env_removed" in env
    cases = [d for d in lines if d["kind"] == "case"]
    assert {(d["size"], d["path"], d["validation"]) for d in cases} == {
        (s, p, v) for s in ("small", "large") for p in ("fused", "layer") for v in (True, False)}
    for d in cases:
        assert _positive(d["epoch_s"]) and _positive(d["wall_per_epoch_s"]), d
        assert d["train"] == 512 and d["val"] == (64 if d["validation"] else 0)
        assert (d["last_val_loss"] is None) != d["validation"]
        if d["validation"]:
            assert _positive(d["last_val_loss"])
    assert "| data | validation |" in proc.stdout


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept-on-request"])
def test_benchmarks_drop_the_forced_blas_kernel_for_themselves(keep: bool) -> None:
    """OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE force a kernel: a benchmark re-runs itself without them (and says
    so), unless NPVAE_BENCH_KEEP_BLAS_ENV=1; this process's environment is left as it is."""
    import os

    before = dict(os.environ)
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}
    if keep:
        env["NPVAE_BENCH_KEEP_BLAS_ENV"] = "1"
    proc = _run([str(BENCH / "bench_validation.py"), "--quick", "--sizes", "small", "--epochs", "1"], env=env)
    assert proc.returncode == 0, proc.stderr
    info = _json_lines(proc.stdout)[0]
    if keep:
        assert info["blas_env_removed"] is None
        assert info["blas_env_kept"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}
    else:
        assert info["blas_env_removed"] == "OPENBLAS_CORETYPE=Haswell,OPENBLAS_L2_SIZE=512"
        assert info["blas_env_kept"] is None
    assert dict(os.environ) == before
