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
    assert set(history[0]) == {"epoch", "seconds", "beta", "train_loss", "val_loss", "val_reconstruction", "val_kl",
                               "val_nelbo"}
    for r in history:
        assert r["val_nelbo"] == r["val_reconstruction"] + r["val_kl"] and r["beta"] == 1.0
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


RESUME_CASES = {
    "default (fused where it applies)": ({}, lambda: npvae.Adam(), {}),
    "layer path": ({}, lambda: npvae.Adam(), {"fused": False}),
    "SGD with momentum": ({}, lambda: npvae.SGD(lr=1e-3, momentum=0.9), {}),
    "clip_norm": ({}, lambda: npvae.Adam(), {"clip_norm": 20.0}),
    "n_samples=3": ({"n_samples": 3}, lambda: npvae.Adam(), {}),
    "float64, beta 2, gaussian": ({"dtype": np.float64, "beta": 2.0, "likelihood": "gaussian"},
                                  lambda: npvae.Adam(), {}),
}


@pytest.mark.parametrize("model, make_opt, options", RESUME_CASES.values(), ids=RESUME_CASES.keys())
def test_interrupt_saves_and_resume_matches_an_uninterrupted_run(digits, tmp_path, model, make_opt, options):
    """Ctrl-C mid-epoch, then resume: parameters and the loss history equal the uninterrupted run's exactly."""
    data = digits[:320]
    straight = small(seed=1, **model)
    h_straight = npvae.train(straight, data, epochs=3, batch_size=32, seed=5, optimizer=make_opt(),
                             x_val=data[:40], **options)

    ckpt = tmp_path / "run.npz"

    def ctrl_c_at(epoch, batch, n_batches, loss):
        if (epoch, batch) == (2, 4):
            os.kill(os.getpid(), signal.SIGINT)

    interrupted = small(seed=1, **model)
    before = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN when a shell started us in the background
    with pytest.raises(npvae.TrainingInterrupted) as info:
        npvae.train(interrupted, data, epochs=3, batch_size=32, seed=5, optimizer=make_opt(), x_val=data[:40],
                    checkpoint_path=ckpt, on_batch=ctrl_c_at, **options)
    assert info.value.checkpoint == ckpt and (info.value.epoch, info.value.batch) == (2, 4)
    assert signal.getsignal(signal.SIGINT) is before  # the handler that was there is restored

    resume_options = {k: v for k, v in options.items() if k != "clip_norm"}  # clip_norm comes from the checkpoint
    resumed, h_resumed = npvae.resume(ckpt, data, x_val=data[:40], **resume_options)
    assert [r["epoch"] for r in h_resumed] == [1, 2, 3]
    for k in straight.params:
        np.testing.assert_array_equal(resumed.params[k], straight.params[k], err_msg=k)
    for key in ("train_loss", "val_loss", "val_nelbo", "beta"):
        assert [r[key] for r in h_resumed] == [r[key] for r in h_straight], key


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "run.npz"
    vae, opt, good = small(), npvae.SGD(lr=1e-3), {}

    def blow_up_after_epoch_1(record):
        good.update(npvae.VAE.load(ckpt).params)
        opt.lr = 1e6

    with pytest.raises(npvae.TrainingDivergedError) as info:
        npvae.train(vae, digits[:256], epochs=3, batch_size=64, optimizer=opt, checkpoint_path=ckpt,
                    on_epoch=blow_up_after_epoch_1)
    msg = str(info.value)
    assert "epoch 2, batch" in msg and "smaller learning rate (now 1000000.0)" in msg
    assert msg.endswith(f"The last good checkpoint is {ckpt}.")
    kept = npvae.VAE.load(ckpt)  # the checkpoint of epoch 1, every parameter finite
    for k in kept.params:
        np.testing.assert_array_equal(kept.params[k], good[k])


def test_divergence_message_does_not_name_another_runs_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    npvae.train(small(), digits[:256], epochs=1, batch_size=64, checkpoint_path=ckpt)  # an earlier run
    with pytest.raises(npvae.TrainingDivergedError) as info:
        npvae.train(small(), digits[:256], epochs=3, batch_size=64, optimizer=npvae.SGD(lr=1e6),
                    checkpoint_path=ckpt)
    assert "epoch 1, batch" in str(info.value) and "checkpoint" not in str(info.value)


@pytest.mark.parametrize("optimizer", [npvae.Adam(lr=10.0), npvae.SGD(lr=10.0)], ids=["adam", "sgd"])
def test_a_finite_blow_up_stops_the_run(digits, optimizer):
    """lr 10 ran to 1e14 nats and ended as a success; now it is a divergence."""
    with pytest.raises(npvae.TrainingDivergedError, match=r"the loss exploded to \S+ \(the run's first batch: "):
        npvae.train(small(), digits[:640], epochs=20, batch_size=64, optimizer=optimizer, fused=False)


def test_a_bad_checkpoint_path_is_refused_before_training(digits, tmp_path):
    calls = []
    with pytest.raises(FileNotFoundError,
                       match=r"checkpoint_path .*missing/run.npz: the folder .*missing does not exist"):
        npvae.train(small(), digits[:64], epochs=1, batch_size=32, checkpoint_path=tmp_path / "missing" / "run.npz",
                    on_batch=lambda *a: calls.append(a))
    for folder in (tmp_path, f"{tmp_path / 'new'}/"):  # an existing folder, and a name ending in "/"
        with pytest.raises(IsADirectoryError, match="is a folder; give a file name"):
            npvae.train(small(), digits[:64], epochs=1, batch_size=32, checkpoint_path=folder,
                        on_batch=lambda *a: calls.append(a))
    assert calls == []


def test_optimizer_class_instead_of_instance_is_a_clear_error(digits):
    with pytest.raises(TypeError,
                       match=r"optimizer must be an instance such as npvae.Adam\(\), got the class npvae.Adam itself"):
        npvae.train(small(), digits[:64], epochs=1, batch_size=32, optimizer=npvae.Adam)


def test_resume_refuses_fewer_epochs_than_done_and_settings_from_the_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "run.npz"
    npvae.train(small(), digits[:64], epochs=3, batch_size=32, checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="epochs=2, but .* has already finished 3 epochs; give epochs=3 or more"):
        npvae.resume(ckpt, digits[:64], epochs=2)
    with pytest.raises(TypeError, match="resume\\(\\) takes batch_size from the checkpoint"):
        npvae.resume(ckpt, digits[:64], batch_size=16)
    _, history = npvae.resume(ckpt, digits[:64], epochs=3)
    assert len(history) == 3


def test_resume_carries_checkpoint_every_and_metadata(digits, tmp_path):
    ckpt = tmp_path / "run.npz"
    saves = []

    def stop_in_epoch_2(epoch, batch, n_batches, loss):
        if (epoch, batch) == (2, 1):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(npvae.TrainingInterrupted):
        npvae.train(small(), digits[:128], epochs=3, batch_size=32, checkpoint_path=ckpt, checkpoint_every=1,
                    metadata={"dataset": "mnist", "split_seed": 7}, on_batch=stop_in_epoch_2)

    def record_saves(epoch, batch, n_batches, loss):
        saves.append(npvae.load_checkpoint(ckpt)[2]["batch"])

    _, _, prog = npvae.load_checkpoint(ckpt)
    assert prog["checkpoint_every"] == 1 and prog["metadata"] == {"dataset": "mnist", "split_seed": 7}
    npvae.resume(ckpt, digits[:128], on_batch=record_saves)
    # the resumed run saves after every batch, as the interrupted one did (seen at the next batch's callback)
    assert saves[:3] == [1, 2, 3]
    assert npvae.load_checkpoint(ckpt)[2]["metadata"] == {"dataset": "mnist", "split_seed": 7}


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


ALLOCATION_CASES = {
    "fused, float32, Adam": (True, False, "adam"),
    "fused, uint8, Adam": (True, True, "adam"),
    "layers, float32, Adam": (False, False, "adam"),
    "layers, uint8, Adam": (False, True, "adam"),
    "layers, float32, SGD": (False, False, "sgd"),
    "layers, uint8, SGD with momentum": (False, True, "sgd"),
}


@pytest.mark.parametrize("fused, uint8, opt", ALLOCATION_CASES.values(), ids=ALLOCATION_CASES.keys())
def test_training_allocates_nothing_per_minibatch(digits, fused, uint8, opt):
    """Between one step's callback and the next, traced memory never rises by more than a few kilobytes.

    tracemalloc's peak is reset in every ``on_batch``, so a temporary freed within the step shows up
    as that step's peak above where the step began (comparing whole runs would not see it). What
    compiled code allocates is invisible here; the kernels take preallocated outputs instead.
    """
    import tracemalloc

    if fused:
        from npvae.fused import unsupported

        why = unsupported(small(), npvae.Adam(), None)
        if why is not None:
            pytest.skip(f"the fused step cannot run here: {why}")
    data = np.round(digits[:640] * 255).astype(np.uint8) if uint8 else digits[:640]
    scale = 1 / 255 if uint8 else None
    make_opt = (lambda: npvae.Adam()) if opt == "adam" else (lambda: npvae.SGD(lr=1e-3, momentum=0.9))
    vae = small()
    npvae.train(vae, data, epochs=1, batch_size=64, optimizer=make_opt(), pixel_scale=scale,
                fused=fused)  # warm the kernels and the model's workspaces
    rises, levels = [], []

    def measure(epoch, batch, n_batches, loss):
        current, peak = tracemalloc.get_traced_memory()
        if levels:
            rises.append(peak - levels[-1])
        levels.append(current)
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        npvae.train(vae, data, epochs=2, batch_size=64, optimizer=make_opt(), pixel_scale=scale, fused=fused,
                    x_val=data[:64], on_batch=measure)
    finally:
        tracemalloc.stop()
    steps = [r for i, r in enumerate(rises) if (i + 1) % 10 != 0]  # not the epoch boundary (validation)
    assert len(steps) == 18
    assert max(steps) < 4096, f"a step allocated {max(steps)} bytes of temporaries"


def test_uint8_pixels_with_pixel_scale_train_like_floats(digits):
    raw = np.round(digits[:400] * 255).astype(np.uint8)
    floats = raw / np.float32(255)
    h_float = npvae.train(small(seed=2), floats[:300], epochs=2, batch_size=50, x_val=floats[300:])
    h_raw = npvae.train(small(seed=2), raw[:300], epochs=2, batch_size=50, x_val=raw[300:], pixel_scale=1 / 255)
    for a, b in zip(h_float, h_raw, strict=True):
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


def test_an_ignored_sigint_stays_ignored(digits, tmp_path):
    """Started with SIGINT ignored (``nohup``, a shell's background job), training leaves it so: a Ctrl-C
    meant for the foreground job neither stops the run nor is turned into a handler of npvae's."""
    def ctrl_c_at(epoch, batch, n_batches, loss):
        if batch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        history = npvae.train(small(), digits[:128], epochs=2, batch_size=32, checkpoint_path=tmp_path / "run.npz",
                              on_batch=ctrl_c_at)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert [r["epoch"] for r in history] == [1, 2]


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
