"""Saving and loading models and training checkpoints as ``.npz`` files.

A file holds named arrays only: ``param/<name>`` for each parameter,
``opt/<name>`` for optimizer state in a training checkpoint, and small JSON
documents stored as unicode arrays (``meta``). Nothing is pickled: loading
never runs code from the file. Writes are atomic (temporary file, fsync,
rename), so an interrupted save leaves the previous file intact.

Loading checks everything before trusting it: that the file is a zip of
``.npy`` members, that each member's header declares no more bytes than the
member holds (so a corrupt header cannot make us allocate gigabytes), the
format name and version, and that every array's shape and dtype match the
architecture in the metadata. Each failure is a :class:`CheckpointError`
naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_writer
from .errors import CheckpointError

# vae.py imports this module only inside VAE.save and VAE.load, so importing it here at the top makes
# no import cycle: whichever of the two is imported first, vae.py never needs this module to load.
from .vae import VAE

FORMAT = "npvae"
VERSION = 1
_MAX_MEMBERS = 10_000


def _json_array(doc: dict[str, Any]) -> np.ndarray:
    return np.array(json.dumps(doc, sort_keys=True))


def _write(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Write ``arrays`` as an ``.npz`` through :func:`atomic_writer`, which checks ``path`` (not a
    directory, not a protected file, its folder exists) before it makes a temporary."""
    with atomic_writer(path, "wb") as fh:
        np.savez(fh, **arrays)


def save_model(vae: VAE, path: str | os.PathLike[str]) -> None:
    """Write ``vae``'s architecture and parameters to ``path`` (``.npz``), atomically."""
    meta = {"format": FORMAT, "version": VERSION, "kind": "model", "config": vae.config()}
    arrays = {f"param/{k}": v for k, v in vae.params.items()}
    arrays["meta"] = _json_array(meta)
    _write(path, arrays)


def save_checkpoint(path: str | os.PathLike[str], vae: VAE, optimizer: Any, progress: dict[str, Any],
                    extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a training checkpoint: model, optimizer state and ``progress``, atomically.

    ``extra`` holds further named arrays the training loop needs to resume
    (early stopping's best parameters), stored as ``extra/<name>``.

    ``progress`` is any dict of JSON values with string keys (the training
    loop's epoch, batch, history, noise state, ``checkpoint_every``,
    ``metadata``...); :func:`load_checkpoint` returns it as it was saved,
    every key included, except that JSON turns tuples into lists.

    Raises
    ------
    TypeError
        ``progress`` is not a dict, or holds something JSON cannot store.
    """
    if not isinstance(progress, dict):
        raise TypeError(f"progress must be a dict of JSON values, got {type(progress).__name__}")
    meta = {"format": FORMAT, "version": VERSION, "kind": "checkpoint", "config": vae.config(),
            "optimizer": optimizer.config(), "progress": progress}
    try:
        meta_array = _json_array(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"progress must hold only JSON values (dicts with string keys, lists, strings, "
                        f"numbers, booleans, None): {exc}") from exc
    arrays = {f"param/{k}": v for k, v in vae.params.items()}
    arrays.update({f"opt/{k}": v for k, v in optimizer.state_arrays().items()})
    arrays.update({f"extra/{k}": v for k, v in (extra or {}).items()})
    arrays["meta"] = meta_array
    _write(path, arrays)


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """Every array in the ``.npz``, each checked against its member's size before reading."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise CheckpointError(f"{path}: no such file (a folder on its path is a file)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path} is a directory, not an npvae .npz file; name the file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file, so not an npvae .npz file")
    try:
        zf = zipfile.ZipFile(path)
    except PermissionError as exc:
        raise CheckpointError(f"{path}: cannot be read: permission denied") from exc
    # NotImplementedError: zipfile's answer to an entry that asks for a newer zip version than it knows
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: not a readable .npz file: truncated, or not an .npz at all ({exc})") from exc
    arrays: dict[str, np.ndarray] = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_MEMBERS:
            raise CheckpointError(f"{path}: {len(infos)} members is too many for an npvae file")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{path}: member {info.filename!r} is not a .npy array")
            try:
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise CheckpointError(f"{path}: member {info.filename!r} uses .npy format {version}, "
                                              "which npvae does not write")
                    if dtype.hasobject:
                        raise CheckpointError(
                            f"{path}: member {info.filename!r} holds Python objects; refusing to load")
                    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                    if declared > info.file_size:
                        raise CheckpointError(
                            f"{path}: member {info.filename!r} declares {shape} {dtype} "
                            f"({declared} bytes) but holds only {info.file_size} bytes: corrupt")
                with zf.open(info) as fh:
                    arrays[info.filename[:-4]] = np.lib.format.read_array(fh, allow_pickle=False)
            except CheckpointError:
                raise
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError,
                    SyntaxError, UnicodeDecodeError, RuntimeError, OverflowError, MemoryError) as exc:
                raise CheckpointError(
                    f"{path}: member {info.filename!r} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    return arrays


def _read_meta(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not an npvae file (no 'meta' entry)")
    meta_arr = arrays["meta"]
    if meta_arr.dtype.kind != "U" or meta_arr.shape != ():
        raise CheckpointError(f"{path}: 'meta' entry is not a JSON string")
    try:
        meta = json.loads(str(meta_arr))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: 'meta' entry is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: not an npvae file (format {found!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('version')!r} is not supported by this npvae "
                              f"(reads version {VERSION}); save it again with a matching npvae version")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: metadata has no model configuration")
    return meta


def _build_model(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> VAE:
    try:
        vae = VAE(**meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: stored model configuration is invalid ({exc})") from exc
    stored = {k[len("param/"):] for k in arrays if k.startswith("param/")}
    if stored != set(vae.params):
        missing, extra = sorted(set(vae.params) - stored), sorted(stored - set(vae.params))
        raise CheckpointError(
            f"{path}: parameters do not match the architecture (missing {missing}, unexpected {extra})")
    for name, p in vae.params.items():
        a = arrays[f"param/{name}"]
        if a.shape != p.shape or a.dtype != p.dtype:
            raise CheckpointError(f"{path}: parameter {name!r} has shape {a.shape} and dtype {a.dtype}, "
                                  f"but the architecture needs {p.shape} and {p.dtype}")
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{path}: parameter {name!r} contains NaN or infinite values")
        p[...] = a
    return vae


def load_model(path: str | os.PathLike[str]) -> VAE:
    """Rebuild the model stored in a model file or a training checkpoint.

    Raises :class:`CheckpointError` naming the file for every problem: no
    such file, a directory, unreadable, not an npvae ``.npz``, corrupt, or
    parameters that do not fit the stored architecture.
    """
    path = Path(path)
    arrays = _read_members(path)
    return _build_model(path, _read_meta(path, arrays), arrays)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[VAE, Any, dict[str, Any]]:
    """``(vae, optimizer, progress)`` from a file written by :func:`save_checkpoint`.

    ``progress`` is the dict that was saved, with every key it had: this
    module checks only that it is a dict, and leaves the meaning of its keys
    to the training loop.
    """
    vae, optimizer, progress, _ = load_checkpoint_with_extra(path)
    return vae, optimizer, progress


def load_checkpoint_with_extra(path: str | os.PathLike[str]) -> tuple[VAE, Any, dict[str, Any], dict[str, np.ndarray]]:
    """:func:`load_checkpoint` and the ``extra`` arrays :func:`save_checkpoint` was given (for resuming)."""
    from .optim import SGD, Adam

    path = Path(path)
    arrays = _read_members(path)
    meta = _read_meta(path, arrays)
    if meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{path}: holds a model only, not a training checkpoint (no optimizer state)")
    vae = _build_model(path, meta, arrays)
    opt_cfg = dict(meta.get("optimizer") or {})
    try:
        name = opt_cfg.pop("name")
        optimizer = {"Adam": Adam, "SGD": SGD}[name](**opt_cfg)
        state = {k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")}
        optimizer.load_state_arrays(state)
        for key, st in optimizer.state.items():
            for s, a in st.items():
                if key not in vae.params or a.shape != vae.params[key].shape or a.dtype != vae.params[key].dtype:
                    raise ValueError(f"state {key}.{s} does not match the model")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: optimizer state is invalid ({type(exc).__name__}: {exc})") from exc
    progress = meta.get("progress")
    if not isinstance(progress, dict):
        raise CheckpointError(f"{path}: checkpoint has no training progress")
    extra = {k[len("extra/"):]: v for k, v in arrays.items() if k.startswith("extra/")}
    return vae, optimizer, progress, extra
