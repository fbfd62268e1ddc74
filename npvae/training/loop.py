"""The training loop: shuffled minibatches, an optimizer, a per-epoch history.

:func:`train` is the loop; each concern is a named piece it calls:
:class:`~.batches.Batches` (each epoch's order and the gathered rows),
:class:`~.checkpoints.Checkpointer` (the run's checkpoint file),
:class:`~.stopping.DivergenceGuard` (when the numbers say stop) and
:class:`~.interrupt.DeferredInterrupt` (Ctrl-C between batches).

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
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .. import kernels
from .._validate import check_data, check_float, check_int
from ..checkpoint import load_checkpoint_with_extra
from ..optim import Adam, check_optimizer
from ..vae import VAE
from .batches import Batches
from .checkpoints import Checkpointer
from .interrupt import DeferredInterrupt, TrainingInterrupted
from .schedules import warmup_beta
from .stopping import DivergenceGuard, EarlyStopping, TrainingDivergedError

__all__ = ["TrainingDivergedError", "TrainingInterrupted", "resume", "train"]

BatchCallback = Callable[[int, int, int, float], None]
EpochCallback = Callable[[dict], None]


def _clip(grads: Mapping[str, np.ndarray], clip_norm: float) -> float:
    norm = math.sqrt(sum(kernels.sum_squares(g.reshape(-1)) for g in grads.values()))
    if norm > clip_norm:
        f = next(iter(grads.values())).dtype.type(clip_norm / norm)
        for g in grads.values():
            kernels.scale_inplace(g.reshape(-1), f)
    return norm


def _check_optimizer(optimizer: object, checkpointing: bool) -> Any:
    if optimizer is None:
        return Adam()
    optimizer = check_optimizer("optimizer", optimizer)
    if checkpointing and not all(callable(getattr(optimizer, m, None)) for m in ("config", "state_arrays")):
        raise TypeError(f"checkpoint_path needs an optimizer whose state can be saved (npvae.Adam or npvae.SGD), "
                        f"got {type(optimizer).__name__}")
    return optimizer


BINARIZE = (None, "dynamic")


def _check_metadata(metadata: object) -> dict | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON values, got {type(metadata).__name__}")
    import json

    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metadata must hold only JSON values (str, int, float, bool, None, list, dict): {exc}") from None
    return metadata


def train(vae: VAE, x_train: np.ndarray, epochs: int = 10, batch_size: int = 128, optimizer: Any = None,
          x_val: np.ndarray | None = None, seed: int = 0, *, on_batch: BatchCallback | None = None,
          on_epoch: EpochCallback | None = None, clip_norm: float | None = None,
          checkpoint_path: str | os.PathLike[str] | None = None, checkpoint_every: int = 0,
          pixel_scale: float | None = None, fused: bool | None = None, metadata: dict | None = None,
          binarize: str | None = None, kl_warmup: int = 0, early_stopping: int | None = None,
          progress: bool = False, _resume: dict | None = None, _extra: dict | None = None) -> list[dict]:
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
        An optimizer object: :class:`npvae.Adam` (default, ``Adam()``: lr 1e-3)
        or :class:`npvae.SGD`.
    x_val
        Optional held-out data, evaluated after every epoch.
    seed
        Seeds the shuffling and the reparameterization noise.
    on_batch
        Called after each step as ``on_batch(epoch, batch, n_batches, loss)``.
    on_epoch
        Called with each epoch's history record. It may change ``vae.beta``
        (a KL schedule): the next epoch trains with the new value. If it
        returns ``True``, training ends after this epoch (a time budget, say);
        :func:`resume` continues such a run from its checkpoint.
    clip_norm
        If given, gradients are rescaled so their global L2 norm is at most this.
    checkpoint_path
        If given, a training checkpoint is written there (atomically) after
        every epoch, every ``checkpoint_every`` batches if that is positive,
        and at the last finished batch on Ctrl-C; resume with :func:`resume`.
        Its folder must exist; this is checked before training starts.
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
    metadata
        A dict of JSON values stored in every checkpoint (``progress["metadata"]``
        of :func:`npvae.load_checkpoint`) and carried over by :func:`resume`:
        for what a program needs to continue the run as it began (the data
        set, its split seed, the output folder).
    binarize
        ``"dynamic"``: every time an example is used, each pixel is drawn
        afresh from Bernoulli(grey level) (docs/derivation.md, Eq. (DB1)),
        from a Generator of the run's own, saved in checkpoints. ``x_val``
        is used as given: binarize it once with
        :func:`npvae.datasets.binarize`, as the protocols do (a warning says
        so when it is not 0/1). ``None`` (default): the grey levels as they are.
    kl_warmup
        Epochs over which the KL weight rises linearly to ``vae.beta``:
        epoch ``e`` (from 1) trains with ``vae.beta * min(1, e / kl_warmup)``
        (Eq. (W1)); ``vae.beta`` is back at its value when ``train`` returns.
        0 (default): no warm-up, and ``on_epoch`` may set ``vae.beta`` itself.
    early_stopping
        Stop when the validation negative ELBO (``val_nelbo``) has not
        improved for this many epochs, and leave the model with the best
        epoch's parameters (also when the last epoch is reached); every
        record then has ``best_epoch``. Needs ``x_val``. ``None``: off.
    progress
        Show a progress bar (tqdm: a widget in a notebook, a text bar in a
        terminal). Off by default.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch`` (1-based), ``seconds`` (training time
        of the epoch), ``beta`` (the KL weight used in the epoch),
        ``train_loss`` (mean loss over the epoch's batches, nats per example:
        reconstruction + beta * KL, the objective minimized), ``val_loss``
        (the same on ``x_val``), and ``val_reconstruction``, ``val_kl`` and
        ``val_nelbo`` (the negative ELBO, reconstruction + KL, whatever beta),
        each ``None`` without ``x_val``. For ``objective="iwae"`` the model
        trains and reports the importance-weighted bound: ``val_reconstruction``
        and ``val_nelbo`` hold -L_k (Eq. (IW1)) and ``val_kl`` is 0, so early
        stopping compares that bound.

    Raises
    ------
    TrainingDivergedError
        The loss or a gradient is not finite, or the loss exploded; the
        checkpoint on disk, if this run wrote one, is the last good one.
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
    metadata = _check_metadata(metadata)
    optimizer = _check_optimizer(optimizer, checkpointing=checkpoint_path is not None)
    if not (binarize is None or (isinstance(binarize, str) and binarize in BINARIZE)):
        raise ValueError(f"binarize must be None or 'dynamic', got {binarize!r}")
    if binarize is not None:
        _check_unit_range("x_train", x_train, pixel_scale)
        if x_val is not None and not _is_binary(x_val):
            warnings.warn("binarize='dynamic' trains on 0/1 pixels, but x_val holds grey levels: its losses are "
                          "then not comparable (and not log-likelihoods); pass npvae.datasets.binarize(x_val)",
                          stacklevel=2)
    kl_warmup = check_int("kl_warmup", kl_warmup, minimum=0)
    if kl_warmup and getattr(vae, "objective", "elbo") == "iwae":
        raise ValueError("kl_warmup weights the ELBO's KL term, which the IWAE bound (objective='iwae') does not "
                         "have; train an objective='elbo' model to warm up")
    if early_stopping is not None:
        early_stopping = check_int("early_stopping", early_stopping)
        if x_val is None:
            raise ValueError("early_stopping needs validation data: pass x_val")
    if progress not in (True, False):
        raise TypeError(f"progress must be True or False, got {progress!r}")
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
    checkpoints = (Checkpointer(checkpoint_path, checkpoint_every, resumed=_resume is not None)
                   if checkpoint_path is not None else None)

    noise_rng = np.random.default_rng(seed)
    binarize_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xB1,))) if binarize else None
    history: list[dict] = []
    start_epoch, start_batch, run_loss, run_count = 1, 0, 0.0, 0
    guard = DivergenceGuard()
    beta_target = vae.beta
    stopper = EarlyStopping(early_stopping, vae.params) if early_stopping is not None else None
    stopped_early = None
    if _resume is not None:
        noise_rng.bit_generator.state = _resume["noise_rng"]
        history = list(_resume["history"])
        start_epoch, start_batch = _resume["epoch"], _resume["batch"]
        run_loss, run_count, seed = _resume["run_loss"], _resume["run_count"], _resume["seed"]
        guard.first_loss = _resume.get("first_loss")
        beta_target = _resume.get("beta_target", beta_target)
        if binarize_rng is not None and _resume.get("binarize_rng") is not None:
            binarize_rng.bit_generator.state = _resume["binarize_rng"]
        if stopper is not None and _resume.get("early_stopping") is not None:
            best = {k[len("best/"):]: v for k, v in (_extra or {}).items() if k.startswith("best/")}
            stopper.load_state(_resume["early_stopping"], best)
        stopped_early = _resume.get("stopped_early")

    scale = vae.dtype.type(pixel_scale) if pixel_scale is not None else None
    one = vae.dtype.type(1)
    batches = Batches(x_train, batch_size, seed, vae.dtype, scale if scale is not None else one,
                      gather=fused_step is None, binarize_rng=binarize_rng)
    n_batches = batches.n_batches
    bar = _progress_bar(epochs, n_batches, progress)

    def progress_state(epoch: int, batch: int) -> dict:  # (``progress``, the argument, asks for a bar)
        return {"epoch": epoch, "batch": batch, "epochs": epochs, "batch_size": batch_size, "seed": seed,
                "run_loss": run_loss, "run_count": run_count, "history": history,
                "noise_rng": noise_rng.bit_generator.state, "clip_norm": clip_norm,
                "checkpoint_every": checkpoint_every, "pixel_scale": pixel_scale, "first_loss": guard.first_loss,
                "metadata": metadata, "binarize": binarize, "kl_warmup": kl_warmup, "beta_target": beta_target,
                "binarize_rng": binarize_rng.bit_generator.state if binarize_rng is not None else None,
                "early_stopping": stopper.state() if stopper is not None else None, "stopped_early": stopped_early}

    def extra() -> dict | None:
        return {f"best/{k}": v for k, v in stopper.best_params.items()} if stopper is not None else None

    def last_good() -> Any:
        return checkpoints.last_good if checkpoints is not None else None

    if stopped_early is not None:  # the checkpoint's run had stopped early: nothing more to train
        start_epoch = epochs + 1
    else:
        _compile_before_the_clock(vae, x_train, optimizer, clip_norm, scale, fused_step is not None,
                                  binarize is not None, x_val, progress)
    # non-finite values are detected below and reported as TrainingDivergedError
    with DeferredInterrupt() as interrupt, np.errstate(over="ignore", invalid="ignore"), \
            _restore_beta(vae, beta_target if kl_warmup else None), bar:
        for epoch in range(start_epoch, epochs + 1):
            order = batches.order(epoch)
            if kl_warmup:
                vae.beta = warmup_beta(beta_target, epoch, kl_warmup)
            beta = vae.beta
            t0 = time.perf_counter()
            first = start_batch if epoch == start_epoch else 0
            bar.start_epoch(epoch, done=first)
            if first == 0:
                run_loss, run_count = 0.0, 0
            one_thread = fused_step.one_blas_thread() if fused_step is not None else contextlib.nullcontext()
            with one_thread:  # the fused step's products run one per core (callbacks included)
                for batch in range(first, n_batches):
                    idx = batches.indices(order, batch)
                    where = (epoch, batch, n_batches)
                    if fused_step is not None and binarize_rng is not None:  # gathered and binarized here
                        loss, sq = fused_step(batches.gather(idx), batches.rows[idx.shape[0]], one, noise_rng)
                        guard.check_loss(loss, where, optimizer, last_good())
                    elif fused_step is not None:  # the update is skipped when the loss is not finite
                        loss, sq = fused_step(x_train, idx, batches.scale, noise_rng)
                        guard.check_loss(loss, where, optimizer, last_good())
                    else:
                        loss = vae._step(batches.gather(idx), rng=noise_rng)
                        gnorm = _clip(vae.grads, clip_norm) if clip_norm is not None else 0.0
                        guard.check_loss(loss, where, optimizer, last_good())
                        guard.check_gradient(math.isfinite(gnorm), where, optimizer, last_good())
                        sq = optimizer.step(vae.params, vae.grads)
                    guard.check_gradient(math.isfinite(sq), where, optimizer, last_good())
                    run_loss += loss * idx.shape[0]
                    run_count += idx.shape[0]
                    bar.update(loss)
                    if on_batch is not None:
                        on_batch(epoch, batch + 1, n_batches, loss)
                    if interrupt.requested:
                        if checkpoints is not None:
                            checkpoints.save(vae, optimizer, progress_state(epoch, batch + 1), extra())
                        raise TrainingInterrupted(checkpoints.path if checkpoints else None, epoch, batch + 1)
                    if checkpoints is not None and checkpoints.due(batch + 1, n_batches):
                        checkpoints.save(vae, optimizer, progress_state(epoch, batch + 1), extra())
            seconds = time.perf_counter() - t0
            record = {"epoch": epoch, "seconds": seconds, "beta": beta, "train_loss": run_loss / run_count,
                      **_validation_record(vae, x_val, scale, beta, fused_step)}
            if stopper is not None:
                if stopper.update(epoch, record["val_nelbo"], vae.params):
                    stopped_early = epoch
                record["best_epoch"] = stopper.best_epoch
            history.append(record)
            if checkpoints is not None:
                checkpoints.save(vae, optimizer, progress_state(epoch + 1, 0), extra())
            bar.end_epoch(record)
            if on_epoch is not None and on_epoch(record) is True:
                break  # the caller stops the run here; the checkpoint just saved continues it
            if stopped_early is not None:
                break
            if interrupt.requested and epoch < epochs:  # Ctrl-C during validation or on_epoch
                raise TrainingInterrupted(checkpoints.path if checkpoints else None, epoch + 1, 0)
    if stopper is not None and stopper.best_epoch:
        stopper.restore(vae.params)  # the model leaves with its best epoch's parameters
    return history


def _compile_before_the_clock(vae: VAE, x: np.ndarray, optimizer: Any, clip_norm: float | None,
                              scale: np.floating | None, fused: bool, binarized: bool, x_val: np.ndarray | None,
                              progress: bool) -> None:
    """Compile (once per machine) or load from Numba's cache the kernels this run needs, before the first
    epoch's clock starts, so that no epoch's ``seconds`` counts compiling; with ``progress``, say so when
    the kernels are not cached yet (a first run on this machine waits 10-20 s here)."""
    from .. import _warmup

    if progress and _warmup.training_cached(vae, x, optimizer, clip_norm) is False:
        print("npvae: compiling the training kernels for this machine (once: Numba caches them on disk)",
              file=sys.stderr, flush=True)
    _warmup.warm_training(vae, x, optimizer, clip_norm, scale, fused=fused, binarized=binarized, x_val=x_val)


@contextlib.contextmanager
def _restore_beta(vae: VAE, beta: float | None) -> Iterator[None]:
    """Put ``vae.beta`` back to ``beta`` (the warm-up's target) however training ends; ``None``: leave it."""
    try:
        yield
    finally:
        if beta is not None:
            vae.beta = beta


class _NoBar:
    """What :func:`train` calls when no progress bar is asked for."""

    def start_epoch(self, epoch: int, done: int = 0) -> None: ...

    def update(self, loss: float) -> None: ...

    def end_epoch(self, record: dict) -> None: ...

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None: ...


def _progress_bar(epochs: int, n_batches: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from ..progress import TrainingProgress

    return TrainingProgress(epochs, n_batches, enabled=True)  # a context manager: its exit erases the bar


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def _check_unit_range(name: str, x: np.ndarray, pixel_scale: float | None) -> None:
    """Dynamic binarization draws Bernoulli(x): every value (after ``pixel_scale``) must lie in [0, 1]."""
    hi = float(x.max()) * (pixel_scale if x.dtype == np.uint8 and pixel_scale is not None else 1.0)
    lo = float(x.min())
    if lo < 0 or hi > 1 + 1e-6:
        raise ValueError(f"binarize='dynamic' draws each pixel from Bernoulli(x): {name} must lie in [0, 1], "
                         f"got values in [{lo:.9g}, {hi:.9g}]")


def _validation_record(vae: VAE, x_val: np.ndarray | None, scale: np.floating | None, beta: float,
                       fused_step: Any = None) -> dict:
    """The history's validation entries for one epoch (``None`` each without validation data)."""
    if x_val is None:
        return {"val_loss": None, "val_reconstruction": None, "val_kl": None, "val_nelbo": None}
    # the fused step evaluates split over the cores, its BLAS on one thread: none is left spinning (issue #21)
    rec, kl = (fused_step.evaluate_terms(x_val, scale) if fused_step is not None
               else _evaluate_terms(vae, x_val, scale))
    return {"val_loss": rec + beta * kl, "val_reconstruction": rec, "val_kl": kl, "val_nelbo": rec + kl}


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


def _evaluate_terms(vae: VAE, x: np.ndarray, scale: np.floating | None) -> tuple[float, float]:
    """``vae.evaluate_terms`` that also takes uint8 pixels, converting a chunk at a time."""
    if x.dtype != np.uint8:
        return vae.evaluate_terms(x)
    rng, chunk, rec, kl = np.random.default_rng(0), 1024, 0.0, 0.0
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk] * scale
        r, k = vae.evaluate_terms(part, rng=rng)
        rec += r * part.shape[0]
        kl += k * part.shape[0]
    return rec / x.shape[0], kl / x.shape[0]


_FROM_CHECKPOINT = ("batch_size", "seed", "clip_norm", "optimizer")


def resume(checkpoint_path: str | os.PathLike[str], x_train: np.ndarray, x_val: np.ndarray | None = None,
           epochs: int | None = None, **kwargs: Any) -> tuple[VAE, list[dict]]:
    """Continue a run from a checkpoint written by :func:`train`; returns ``(vae, history)``.

    The batch size, seed, clipping and optimizer come from the checkpoint,
    and so do ``checkpoint_every``, ``pixel_scale`` (for uint8 data),
    ``metadata``, ``binarize``, ``kl_warmup`` and ``early_stopping`` unless
    given again. A run that had stopped early stays stopped: the model
    comes back with its best epoch's parameters. ``epochs`` is the total, not the
    remainder: it may be raised, but not below the epochs already done.
    Other keyword arguments go to :func:`train`.
    """
    given = sorted(set(kwargs) & set(_FROM_CHECKPOINT))
    if given:
        raise TypeError(f"resume() takes {', '.join(given)} from the checkpoint, so that the run continues "
                        "exactly as it began; start a new run with npvae.train to change it")
    vae, optimizer, prog, extra = load_checkpoint_with_extra(checkpoint_path)
    done = len(prog["history"])
    total = prog["epochs"] if epochs is None else check_int("epochs", epochs, minimum=0)
    if total < done:
        raise ValueError(f"epochs={total}, but {checkpoint_path} has already finished {done} epochs; "
                         f"give epochs={done} or more (the total, not the remainder)")
    for key, default in (("checkpoint_every", 0), ("metadata", None), ("binarize", None), ("kl_warmup", 0)):
        kwargs.setdefault(key, prog.get(key, default))
    if prog.get("early_stopping") is not None:
        kwargs.setdefault("early_stopping", prog["early_stopping"]["patience"])
    if isinstance(x_train, np.ndarray) and x_train.dtype == np.uint8:
        kwargs.setdefault("pixel_scale", prog.get("pixel_scale"))
    history = train(vae, x_train, epochs=total, batch_size=prog["batch_size"], optimizer=optimizer, x_val=x_val,
                    seed=prog["seed"], clip_norm=prog.get("clip_norm"), checkpoint_path=checkpoint_path,
                    _resume=prog, _extra=extra, **kwargs)
    return vae, history
