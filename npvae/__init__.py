"""npvae: a Variational Autoencoder from scratch in NumPy, every gradient by hand.

``import npvae`` is light: the model, its Numba kernels and the datasets are
imported on first use. :func:`warmup` compiles (or loads from the on-disk
cache) every kernel up front.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VAE": ("vae", "VAE"),
    "Dense": ("layers", "Dense"),
    "Activation": ("layers", "Activation"),
    "GatedDense": ("layers", "GatedDense"),
    "Adam": ("optim", "Adam"),
    "SGD": ("optim", "SGD"),
    "train": ("training", "train"),
    "resume": ("training", "resume"),
    "TrainingDivergedError": ("training", "TrainingDivergedError"),
    "TrainingInterrupted": ("training", "TrainingInterrupted"),
    "gradcheck": ("fdcheck", "gradcheck"),
    "check_vjp": ("fdcheck", "check_vjp"),
    "numerical_gradient": ("fdcheck", "numerical_gradient"),
    "GradcheckResult": ("fdcheck", "GradcheckResult"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"),
    "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "DataFileError": ("errors", "DataFileError"),
    "DataNotFoundError": ("errors", "DataNotFoundError"),
    "ChecksumError": ("errors", "ChecksumError"),
    "CheckpointError": ("errors", "CheckpointError"),
    "warmup": ("_warmup", "warmup"),
    "load_mnist": ("datasets", "load_mnist"),
    "load_fashion_mnist": ("datasets", "load_fashion_mnist"),
    "load_mnist_5k": ("datasets", "load_mnist_5k"),
    "ProgressBar": ("progress", "ProgressBar"),
    "log_likelihood": ("evaluation", "log_likelihood"),
    "diagnostics": ("evaluation", "diagnostics"),
}
_SUBMODULES = {"datasets", "progress", "plots", "fdcheck", "kernels", "reference", "layers", "optim",
               "vae", "checkpoint", "errors", "fused", "training", "evaluation", "cli"}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'npvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
