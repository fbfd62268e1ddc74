"""The training loop: it learns real digits, is reproducible, resumes exactly, and stops safely."""

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
    return x[np.random.default_rng(0).permutation(len(x))[:1500]]


def small(seed: int = 0, **kw) -> npvae.VAE:
    return npvae.VAE(784, (64,), 8, seed=seed, **kw)


def test_training_on_real_digits_lowers_the_loss(digits):
    train, val = digits[:1200], digits[1200:]
    vae = small()
    before = vae.evaluate(val)
    history = npvae.train(vae, train, epochs=4, batch_size=64, optimizer=npvae.Adam(2e-3), x_val=val)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert set(history[0]) == {"epoch", "seconds", "train_loss", "val_loss"}
    val_losses = [r["val_loss"] for r in history]
    assert val_losses[-1] < 0.5 * before  # ~540 nats at init; ~200 after four short epochs
    assert val_losses[-1] < val_losses[0]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_sgd_with_momentum_also_learns(digits):
    vae = small()
    before = vae.evaluate(digits[:500])
    npvae.train(vae, digits, epochs=2, batch_size=64, optimizer=npvae.SGD(lr=1e-3, momentum=0.9))
    assert vae.evaluate(digits[:500]) < before - 100


def test_same_seed_same_run(digits):
    runs = []
    for _ in range(2):
        vae = small(seed=3)
        h = npvae.train(vae, digits[:300], epochs=2, batch_size=32, seed=7)
        runs.append((h, vae.params["decoder.out.W"].copy()))
    assert [r["train_loss"] for r in runs[0][0]] == [r["train_loss"] for r in runs[1][0]]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_last_short_batch_is_used(digits):
    calls = []
    npvae.train(small(), digits[:100], epochs=1, batch_size=32, on_batch=lambda *a: calls.append(a))
    assert [(c[1], c[2]) for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_interrupt_saves_and_resume_matches_an_uninterrupted_run(digits, tmp_path):
    data = digits[:320]
    straight = small(seed=1)
    h_straight = npvae.train(straight, data, epochs=3, batch_size=32, seed=5)

    ckpt = tmp_path / "run.npz"

    def ctrl_c_at(epoch, batch, n_batches, loss):
        if (epoch, batch) == (2, 4):
            os.kill(os.getpid(), signal.SIGINT)

    interrupted = small(seed=1)
    with pytest.raises(npvae.TrainingInterrupted) as info:
        npvae.train(interrupted, data, epochs=3, batch_size=32, seed=5, checkpoint_path=ckpt, on_batch=ctrl_c_at)
    assert info.value.checkpoint == ckpt and (info.value.epoch, info.value.batch) == (2, 4)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    resumed, h_resumed = npvae.resume(ckpt, data)
    assert [r["epoch"] for r in h_resumed] == [1, 2, 3]
    for k in straight.params:
        np.testing.assert_array_equal(resumed.params[k], straight.params[k], err_msg=k)
    assert [r["train_loss"] for r in h_resumed] == pytest.approx([r["train_loss"] for r in h_straight], rel=1e-12)


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "run.npz"
    vae = small()
    npvae.train(vae, digits[:256], epochs=1, batch_size=64, checkpoint_path=ckpt)
    good = npvae.VAE.load(ckpt)
    with pytest.raises(npvae.TrainingDivergedError) as info:
        npvae.train(vae, digits[:256], epochs=3, batch_size=64, optimizer=npvae.SGD(lr=1e6), checkpoint_path=ckpt)
    msg = str(info.value)
    assert "epoch 1, batch" in msg and "smaller learning rate" in msg and str(ckpt) in msg
    kept = npvae.VAE.load(ckpt)  # loads: every parameter finite
    for k in kept.params:
        assert np.all(np.isfinite(kept.params[k]))
    assert kept.evaluate(digits[:100]) == pytest.approx(good.evaluate(digits[:100]))


def test_clip_norm_bounds_the_update(digits):
    vae = small()
    vae.loss_and_grads(digits[:64])
    from npvae.training.loop import _clip

    norm = _clip(vae.grads, 1.0)
    assert norm > 1.0
    clipped = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in vae.grads.values()))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    h = npvae.train(small(), digits[:256], epochs=2, batch_size=64, clip_norm=50.0)
    assert h[-1]["train_loss"] < h[0]["train_loss"]


def test_training_allocates_nothing_per_minibatch(digits):
    """Peak traced memory does not grow with the number of batches."""
    import tracemalloc

    def peak(n):
        vae = small()
        npvae.train(vae, digits[:64], epochs=1, batch_size=32)  # warm workspaces and kernels
        tracemalloc.start()
        npvae.train(vae, digits[:n], epochs=1, batch_size=32)
        _, p = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return p

    small_run, big_run = peak(128), peak(1280)
    # the per-epoch permutation grows by 8 bytes per example; batches add nothing
    assert big_run - small_run < 8 * (1280 - 128) + 64 * 1024


def test_uint8_pixels_with_pixel_scale_train_like_floats(digits):
    raw = np.round(digits[:400] * 255).astype(np.uint8)
    floats = raw / np.float32(255)
    h_float = npvae.train(small(seed=2), floats[:300], epochs=2, batch_size=50, x_val=floats[300:])
    h_raw = npvae.train(small(seed=2), raw[:300], epochs=2, batch_size=50, x_val=raw[300:], pixel_scale=1 / 255)
    for a, b in zip(h_float, h_raw):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_pixel_scale_errors(digits):
    raw = np.round(digits[:100] * 255).astype(np.uint8)
    with pytest.raises(TypeError, match="pass pixel_scale=1/255"):
        npvae.train(small(), raw, epochs=1, batch_size=10)
    with pytest.raises(TypeError, match="pixel_scale is for uint8 pixel data"):
        npvae.train(small(), digits[:100], epochs=1, batch_size=10, pixel_scale=1 / 255)
    with pytest.raises(ValueError, match=r"x_train \* pixel_scale must lie in \[0, 1\]"):
        npvae.train(small(), raw, epochs=1, batch_size=10, pixel_scale=1.0)


def test_ctrl_c_during_validation_is_not_lost(digits, tmp_path):
    ckpt = tmp_path / "run.npz"

    def ctrl_c_after_epoch(record):
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(npvae.TrainingInterrupted) as info:
        npvae.train(small(), digits[:128], epochs=3, batch_size=64, checkpoint_path=ckpt, on_epoch=ctrl_c_after_epoch)
    assert (info.value.epoch, info.value.batch) == (2, 0)
    _, history = npvae.resume(ckpt, digits[:128])
    assert [r["epoch"] for r in history] == [1, 2, 3]
