"""The training loop: shuffled minibatches, an optimizer, a per-epoch history.

Nothing is allocated per minibatch: the batch is gathered into a buffer
sized once (and once more for the last, shorter batch), and the model and
optimizer work in their own preallocated arrays.

Reproducibility and resuming: epoch ``e`` is shuffled by a Generator seeded
with ``(seed, e)``, and the reparameterization noise comes from a Generator
seeded with ``seed`` whose state is saved in checkpoints, so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import kernels
from .._validate import check_data, check_float, check_int
from .._atomic import remove_stale_temporaries
from ..checkpoint import load_checkpoint, save_checkpoint
from ..optim import Adam
from ..vae import VAE


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN or infinite; the message says where and what to try."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; ``checkpoint`` is the file saved at the last finished batch."""

    def __init__(self, checkpoint: Path | None, epoch: int, batch: int) -> None:
        super().__init__(f"interrupted in epoch {epoch} after batch {batch}")
        self.checkpoint, self.epoch, self.batch = checkpoint, epoch, batch


BatchCallback = Callable[[int, int, int, float], None]
EpochCallback = Callable[[dict], None]


def _clip(grads: dict[str, np.ndarray], clip_norm: float) -> float:
    norm = math.sqrt(sum(kernels.sum_squares(g.reshape(-1)) for g in grads.values()))
    if norm > clip_norm:
        f = next(iter(grads.values())).dtype.type(clip_norm / norm)
        for g in grads.values():
            kernels.scale_inplace(g.reshape(-1), f)
    return norm


def train(vae: VAE, x_train: np.ndarray, epochs: int = 10, batch_size: int = 128, optimizer: Any = None,
          x_val: np.ndarray | None = None, seed: int = 0, *, on_batch: BatchCallback | None = None,
          on_epoch: EpochCallback | None = None, clip_norm: float | None = None,
          checkpoint_path: str | os.PathLike[str] | None = None, checkpoint_every: int = 0,
          pixel_scale: float | None = None, fused: bool | None = None, _resume: dict | None = None) -> list[dict]:
    """Train ``vae`` on ``x_train`` with minibatch gradient descent.

    Parameters
    ----------
    vae
        The model; its parameters are updated in place.
    x_train : (n, input_dim) float array, or uint8 with ``pixel_scale``
        Training data (in [0, 1] for the Bernoulli likelihood); converted to
        the model's dtype once.
    epochs, batch_size
        Passes over the data and examples per step. The last batch of an
        epoch holds the remainder.
    optimizer
        :class:`npvae.Adam` (default, lr 1e-3) or :class:`npvae.SGD`.
    x_val
        Optional held-out data, evaluated after every epoch.
    seed
        Seeds the shuffling and the reparameterization noise.
    on_batch
        Called after each step as ``on_batch(epoch, batch, n_batches, loss)``.
    on_epoch
        Called with each epoch's history record.
    clip_norm
        If given, gradients are rescaled so their global L2 norm is at most this.
    checkpoint_path
        If given, a training checkpoint is written there (atomically) after
        every epoch, every ``checkpoint_every`` batches if that is positive,
        and at the last finished batch on Ctrl-C; resume with :func:`resume`.
    pixel_scale
        For ``uint8`` data (raw pixels, as ``load_mnist(..., dtype=np.uint8)``
        returns them): each minibatch is multiplied by this, usually 1/255, as
        it is gathered. The data then takes a quarter of the memory of float32
        (47 MB instead of 188 MB for 60,000 images). ``x_val`` may be uint8 too.
    fused
        Whether each step runs as one compiled function split over the cores
        (:mod:`npvae.fused`): the same arithmetic as the layer-by-layer path
        and the same noise, to roundoff, and faster with two cores or more.
        ``None`` (default): whenever it applies (Adam, no ``clip_norm``, one
        sample of z, NumPy on OpenBLAS, two threads for Numba and the BLAS);
        ``True``: always, or a ``ValueError`` saying why it cannot;
        ``False``: never.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch`` (1-based), ``seconds`` (training time
        of the epoch), ``train_loss`` (mean negative ELBO over the epoch's
        batches, nats per example), ``val_loss`` (or ``None``).

    Raises
    ------
    TrainingDivergedError
        The loss or a gradient is not finite; the checkpoint on disk, if any,
        is the last good one.
    TrainingInterrupted
        On Ctrl-C, after saving the checkpoint.
    """
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be an npvae.VAE, got {type(vae).__name__}")
    x_train = _check_training_data("x_train", x_train, vae, pixel_scale)
    if x_val is not None:
        x_val = _check_training_data("x_val", x_val, vae, pixel_scale)
    epochs = check_int("epochs", epochs, minimum=0)
    batch_size = check_int("batch_size", batch_size)
    n = x_train.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) is larger than the training set ({n} examples)")
    seed = check_int("seed", seed, minimum=0)
    if clip_norm is not None:
        clip_norm = check_float("clip_norm", clip_norm)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=0)
    optimizer = optimizer if optimizer is not None else Adam()
    if not hasattr(optimizer, "step"):
        raise TypeError(f"optimizer must be npvae.Adam or npvae.SGD, got {type(optimizer).__name__}")
    if fused not in (None, True, False):
        raise TypeError(f"fused must be None, True or False, got {fused!r}")
    fused_step = None
    if fused is not False:
        from .. import fused as _fused

        why = _fused.unsupported(vae, optimizer, clip_norm)
        if why is None:
            fused_step = _fused.FusedStep(vae, optimizer)
        elif fused:
            raise ValueError(f"fused=True, but the fused step cannot train here: {why}")
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None:
        remove_stale_temporaries(ckpt)  # left by a run that was killed while saving

    noise_rng = np.random.default_rng(seed)
    history: list[dict] = []
    start_epoch, start_batch, run_loss, run_count = 1, 0, 0.0, 0
    if _resume is not None:
        noise_rng.bit_generator.state = _resume["noise_rng"]
        history = list(_resume["history"])
        start_epoch, start_batch = _resume["epoch"], _resume["batch"]
        run_loss, run_count, seed = _resume["run_loss"], _resume["run_count"], _resume["seed"]

    n_batches = -(-n // batch_size)
    sizes = [batch_size] + ([n % batch_size] if n % batch_size else [])
    buffers = {m: np.empty((m, vae.input_dim), vae.dtype) for m in sizes} if fused_step is None else {}
    scale = vae.dtype.type(pixel_scale) if pixel_scale is not None else None
    gather_scale = scale if scale is not None else vae.dtype.type(1)

    def progress(epoch: int, batch: int) -> dict:
        return {"epoch": epoch, "batch": batch, "epochs": epochs, "batch_size": batch_size, "seed": seed,
                "run_loss": run_loss, "run_count": run_count, "history": history,
                "noise_rng": noise_rng.bit_generator.state, "clip_norm": clip_norm}

    # non-finite values are detected below and reported as TrainingDivergedError
    with _DeferredInterrupt() as interrupt, np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(start_epoch, epochs + 1):
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            t0 = time.perf_counter()
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                run_loss, run_count = 0.0, 0
            one_thread = fused_step.one_blas_thread() if fused_step is not None else contextlib.nullcontext()
            with one_thread:  # the fused step's products run one per core (callbacks included)
                for batch in range(first, n_batches):
                    idx = perm[batch * batch_size:(batch + 1) * batch_size]
                    if fused_step is not None:  # the update is skipped when the loss is not finite
                        loss, sq = fused_step(x_train, idx, gather_scale, noise_rng)
                        if not math.isfinite(loss):
                            _diverged("loss", loss, epoch, batch, n_batches, optimizer, ckpt)
                    else:
                        xb = buffers[idx.shape[0]]
                        kernels.gather_rows(x_train, idx, gather_scale, xb)
                        loss = vae._step(xb, rng=noise_rng)
                        gnorm = _clip(vae.grads, clip_norm) if clip_norm is not None else 0.0
                        if not (math.isfinite(loss) and math.isfinite(gnorm)):
                            _diverged("loss" if not math.isfinite(loss) else "gradient", loss, epoch, batch, n_batches,
                                      optimizer, ckpt)
                        sq = optimizer.step(vae.params, vae.grads)
                    if not math.isfinite(sq):
                        _diverged("gradient", loss, epoch, batch, n_batches, optimizer, ckpt)
                    run_loss += loss * idx.shape[0]
                    run_count += idx.shape[0]
                    if on_batch is not None:
                        on_batch(epoch, batch + 1, n_batches, loss)
                    if interrupt.requested:
                        if ckpt is not None:
                            save_checkpoint(ckpt, vae, optimizer, progress(epoch, batch + 1))
                        raise TrainingInterrupted(ckpt, epoch, batch + 1)
                    if (ckpt is not None and checkpoint_every and (batch + 1) % checkpoint_every == 0
                            and batch + 1 < n_batches):
                        save_checkpoint(ckpt, vae, optimizer, progress(epoch, batch + 1))
            seconds = time.perf_counter() - t0
            record = {"epoch": epoch, "seconds": seconds, "train_loss": run_loss / run_count,
                      "val_loss": _evaluate(vae, x_val, scale) if x_val is not None else None}
            history.append(record)
            if ckpt is not None:
                save_checkpoint(ckpt, vae, optimizer, progress(epoch + 1, 0))
            if on_epoch is not None:
                on_epoch(record)
            if interrupt.requested and epoch < epochs:  # Ctrl-C during validation or on_epoch
                raise TrainingInterrupted(ckpt, epoch + 1, 0)
    return history


def _check_training_data(name: str, x: object, vae: VAE, pixel_scale: float | None) -> np.ndarray:
    """Float data in the model's dtype, or uint8 pixels that ``pixel_scale`` brings into range."""
    unit = vae.likelihood == "bernoulli"
    if pixel_scale is None or not (isinstance(x, np.ndarray) and x.dtype == np.uint8):
        if pixel_scale is not None:
            raise TypeError(f"pixel_scale is for uint8 pixel data; {name} has dtype "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        try:
            return check_data(name, x, width=vae.input_dim, unit_range=unit, dtype=vae.dtype)
        except TypeError as exc:
            if isinstance(x, np.ndarray) and x.dtype == np.uint8:
                raise TypeError(f"{exc}, or pass pixel_scale=1/255 to have train() scale each batch "
                                "(a quarter of the memory)") from None
            raise
    pixel_scale = check_float("pixel_scale", pixel_scale)
    if x.ndim != 2 or x.shape[1] != vae.input_dim or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, {vae.input_dim}), got shape {x.shape}")
    if unit and int(x.max()) * pixel_scale > 1.0 + 1e-6:
        raise ValueError(f"{name} * pixel_scale must lie in [0, 1] for the Bernoulli likelihood, got values "
                         f"up to {int(x.max()) * pixel_scale:g}")
    return np.ascontiguousarray(x)


def _evaluate(vae: VAE, x: np.ndarray, scale: np.floating | None) -> float:
    """``vae.evaluate`` that also takes uint8 pixels, converting a chunk at a time."""
    if x.dtype != np.uint8:
        return vae.evaluate(x)
    rng, chunk, total = np.random.default_rng(0), 1024, 0.0
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk] * scale
        total += vae.evaluate(part, rng=rng) * part.shape[0]
    return total / x.shape[0]


def _diverged(what: str, loss: float, epoch: int, batch: int, n_batches: int, optimizer: Any,
              ckpt: Path | None) -> None:
    value = f"{loss}" if what == "loss" else "non-finite"
    last_good = f" The last good checkpoint is {ckpt}." if ckpt is not None and ckpt.exists() else ""
    raise TrainingDivergedError(
        f"the {what} became {value} in epoch {epoch}, batch {batch + 1} of {n_batches}. Try a smaller "
        f"learning rate (now {getattr(optimizer, 'lr', '?')}), gradient clipping (clip_norm=1000), or "
        f"dtype=np.float64.{last_good}")


class _DeferredInterrupt:
    """Turn the first Ctrl-C into a flag the loop checks after each finished batch.

    A batch is never left half-applied (parameters updated but not the
    optimizer state), so the checkpoint written on Ctrl-C is consistent. A
    second Ctrl-C interrupts at once. Outside the main thread, where signal
    handlers cannot be set, Ctrl-C behaves as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:
            self._old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def resume(checkpoint_path: str | os.PathLike[str], x_train: np.ndarray, x_val: np.ndarray | None = None,
           epochs: int | None = None, **kwargs: Any) -> tuple[VAE, list[dict]]:
    """Continue a run from a checkpoint written by :func:`train`; returns ``(vae, history)``.

    The batch size, seed and clipping come from the checkpoint; ``epochs``
    (the total, not the remainder) may be raised. Other keyword arguments
    go to :func:`train`.
    """
    vae, optimizer, prog = load_checkpoint(checkpoint_path)
    history = train(vae, x_train, epochs=prog["epochs"] if epochs is None else epochs,
                    batch_size=prog["batch_size"], optimizer=optimizer, x_val=x_val, seed=prog["seed"],
                    clip_norm=prog.get("clip_norm"), checkpoint_path=checkpoint_path, _resume=prog, **kwargs)
    return vae, history
