"""train()'s protocol options: dynamic binarization, KL warm-up and early stopping, and resuming with them."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import npvae
from npvae.datasets import load_mnist_5k


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    x, _ = load_mnist_5k()
    return x[np.random.default_rng(1).permutation(len(x))[:600]]


def small(seed: int = 0, **kw) -> npvae.VAE:
    return npvae.VAE(784, (32,), 4, seed=seed, **kw)


def watch_batches(vae: npvae.VAE, seen: list) -> None:
    """Record a copy of every batch the layer path trains on."""
    step = vae._step

    def recording(x, eps=None, rng=None):
        seen.append(x.copy())
        return step(x, eps, rng)

    vae._step = recording


def test_dynamic_binarization_draws_every_pixel_afresh_each_time(digits):
    x = digits[:64]
    seen: list[np.ndarray] = []
    vae = small()
    watch_batches(vae, seen)
    npvae.train(vae, x, epochs=40, batch_size=64, binarize="dynamic", fused=False, seed=3)
    # one batch per epoch, in epoch e's order: undo the shuffle to line the draws up by example
    draws = np.stack([b[np.argsort(np.random.default_rng([3, e + 1]).permutation(64))] for e, b in enumerate(seen)])
    assert set(np.unique(draws)) <= {0.0, 1.0}
    assert not np.array_equal(draws[0], draws[1])  # afresh each epoch, not one fixed draw
    # each pixel is Bernoulli(grey level): every example's mean over 40 draws of its 784 pixels lies within
    # 5 standard errors of its grey-level sum, and the squared deviations are what Bernoulli variance predicts
    dev = (draws - x).sum(axis=(0, 2))
    var = 40 * (x * (1 - x)).sum(axis=1)
    assert np.all(np.abs(dev) <= 5 * np.sqrt(var))
    assert np.mean(dev**2 / var) == pytest.approx(1.0, abs=0.5)
    assert np.all(draws[:, x == 0] == 0) and np.all(draws[:, x == 1] == 1)


def test_dynamic_binarization_is_the_same_on_the_fused_and_layer_paths(digits):
    from npvae.fused import unsupported

    if unsupported(small(dtype=np.float64), npvae.Adam(), None) is not None:
        pytest.skip("the fused step cannot run here")
    models = {}
    for fused in (True, False):
        vae = small(dtype=np.float64)
        npvae.train(vae, digits[:256].astype(np.float64), epochs=2, batch_size=64, binarize="dynamic", fused=fused)
        models[fused] = vae
    for k in models[True].params:
        np.testing.assert_allclose(models[True].params[k], models[False].params[k], rtol=1e-12, atol=1e-14,
                                   err_msg=k)


def test_dynamic_binarization_of_uint8_pixels_equals_that_of_floats(digits):
    raw = np.round(digits[:256] * 255).astype(np.uint8)
    h_raw = npvae.train(small(), raw, epochs=2, batch_size=64, binarize="dynamic", pixel_scale=1 / 255)
    h_float = npvae.train(small(), raw / np.float32(255), epochs=2, batch_size=64, binarize="dynamic")
    assert [r["train_loss"] for r in h_raw] == pytest.approx([r["train_loss"] for r in h_float], rel=1e-6)


def test_grey_validation_data_with_dynamic_binarization_is_warned_about(digits):
    with pytest.warns(UserWarning, match=r"pass npvae.datasets.binarize\(x_val\)"):
        npvae.train(small(), digits[:128], epochs=1, batch_size=64, binarize="dynamic", x_val=digits[128:192])


def test_kl_warmup_raises_beta_linearly_and_puts_it_back(digits):
    vae = small(beta=2.0)
    history = npvae.train(vae, digits[:128], epochs=6, batch_size=64, kl_warmup=4)
    assert [r["beta"] for r in history] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert vae.beta == 2.0


def test_kl_warmup_trains_the_fused_and_layer_paths_alike(digits):
    """The fused step must read the warm-up's beta at every step, as the layer path does."""
    from npvae.fused import unsupported

    if unsupported(small(dtype=np.float64), npvae.Adam(), None) is not None:
        pytest.skip("the fused step cannot run here")
    models = {}
    for fused in (True, False):
        vae = small(dtype=np.float64, beta=3.0)
        npvae.train(vae, digits[:256].astype(np.float64), epochs=3, batch_size=64, kl_warmup=3, fused=fused)
        models[fused] = vae
    for k in models[True].params:
        np.testing.assert_allclose(models[True].params[k], models[False].params[k], rtol=1e-12, atol=1e-14,
                                   err_msg=k)


def test_early_stopping_restores_the_best_epoch(digits):
    """Validating on inverted digits: the validation loss gets worse as the model learns digits."""
    val = 1.0 - digits[500:600]
    best_params = {}

    def keep(record):
        if record["best_epoch"] == record["epoch"]:
            best_params.update({k: p.copy() for k, p in vae.params.items()})

    vae = small()
    history = npvae.train(vae, digits[:500], epochs=30, batch_size=50, x_val=val, early_stopping=3, on_epoch=keep)
    nelbo = [r["val_nelbo"] for r in history]
    best = int(np.argmin(nelbo)) + 1
    assert len(history) == best + 3 < 30  # stopped three epochs after the best one
    assert all(r["best_epoch"] == min(range(1, r["epoch"] + 1), key=lambda e: nelbo[e - 1]) for r in history)
    for k in vae.params:
        np.testing.assert_array_equal(vae.params[k], best_params[k], err_msg=k)


def test_resume_with_binarization_warmup_and_early_stopping_is_bit_identical(digits, tmp_path):
    train_x, val = digits[:320], (np.random.default_rng(0).random((60, 784)) < digits[500:560]).astype(np.float32)
    options = {"binarize": "dynamic", "kl_warmup": 3, "early_stopping": 2}

    straight = small(seed=1, beta=1.5)
    h_straight = npvae.train(straight, train_x, epochs=5, batch_size=32, seed=5, x_val=val, **options)

    ckpt = tmp_path / "run.npz"

    def ctrl_c_at(epoch, batch, n_batches, loss):
        if (epoch, batch) == (2, 4):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(npvae.TrainingInterrupted):
        npvae.train(small(seed=1, beta=1.5), train_x, epochs=5, batch_size=32, seed=5, x_val=val,
                    checkpoint_path=ckpt, on_batch=ctrl_c_at, **options)
    resumed, h_resumed = npvae.resume(ckpt, train_x, x_val=val)  # the options come from the checkpoint
    assert h_resumed == [{**r, "seconds": s["seconds"]} for r, s in zip(h_straight, h_resumed, strict=True)]
    assert resumed.beta == straight.beta == 1.5
    for k in straight.params:
        np.testing.assert_array_equal(resumed.params[k], straight.params[k], err_msg=k)


def test_a_run_that_stopped_early_resumes_as_stopped(digits, tmp_path):
    ckpt = tmp_path / "run.npz"
    vae = small()
    history = npvae.train(vae, digits[:500], epochs=30, batch_size=50, x_val=1.0 - digits[500:600],
                          early_stopping=2, checkpoint_path=ckpt)
    again, h_again = npvae.resume(ckpt, digits[:500], x_val=1.0 - digits[500:600], epochs=40)
    assert h_again == history
    for k in vae.params:
        np.testing.assert_array_equal(again.params[k], vae.params[k], err_msg=k)


BAD = {
    "a binarize mode that does not exist": (dict(binarize="static"), ValueError,
                                            "binarize must be None or 'dynamic', got 'static'"),
    "early stopping without validation data": (dict(early_stopping=5), ValueError,
                                               "early_stopping needs validation data: pass x_val"),
    "early_stopping=0": (dict(early_stopping=0, x_val="val"), ValueError, "early_stopping must be >= 1, got 0"),
    "negative warm-up": (dict(kl_warmup=-1), ValueError, "kl_warmup must be >= 0, got -1"),
    "progress='yes'": (dict(progress="yes"), TypeError, "progress must be True or False, got 'yes'"),
    "warm-up of an IWAE model": (dict(kl_warmup=3, model=dict(objective="iwae", n_samples=2)), ValueError,
                                 "kl_warmup weights the ELBO's KL term, which the IWAE bound (objective='iwae') does "
                                 "not have; train an objective='elbo' model to warm up"),
}


@pytest.mark.parametrize("options, exc, message", BAD.values(), ids=BAD.keys())
def test_bad_options_are_clear_errors(digits, options, exc, message):
    options = {k: (digits[:50] if v == "val" else v) for k, v in options.items()}
    model = options.pop("model", {})
    with pytest.raises(exc) as info:
        npvae.train(small(**model), digits[:64], epochs=1, batch_size=32, **options)
    assert str(info.value) == message


def test_binarizing_data_outside_the_unit_range_is_refused(digits):
    with pytest.raises(ValueError, match=r"binarize='dynamic' draws each pixel from Bernoulli\(x\): x_train must lie"):
        npvae.train(small(likelihood="gaussian"), digits[:64] * 2, epochs=1, batch_size=32, binarize="dynamic")


def test_on_epoch_returning_true_ends_the_run_and_resume_continues_it(digits, tmp_path):
    ckpt = tmp_path / "run.npz"
    straight = small()
    h_straight = npvae.train(straight, digits[:128], epochs=4, batch_size=64)
    history = npvae.train(small(), digits[:128], epochs=4, batch_size=64, checkpoint_path=ckpt,
                          on_epoch=lambda record: record["epoch"] == 2)
    assert [r["epoch"] for r in history] == [1, 2]
    resumed, h_resumed = npvae.resume(ckpt, digits[:128])
    assert [r["train_loss"] for r in h_resumed] == [r["train_loss"] for r in h_straight]
    for k in straight.params:
        np.testing.assert_array_equal(resumed.params[k], straight.params[k], err_msg=k)


def test_progress_shows_a_line_per_epoch_and_is_off_by_default(digits, capfd):
    npvae.train(small(), digits[:128], epochs=2, batch_size=64)
    assert capfd.readouterr() == ("", "")
    npvae.train(small(), digits[:128], epochs=2, batch_size=64, progress=True)
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]], lines
