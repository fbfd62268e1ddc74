"""Reading IDX files, the format MNIST and Fashion-MNIST are published in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian ``uint32`` per dimension, then the values in
C order, big-endian. Files may be gzip-compressed (recognised by their first
bytes, whatever their name).

The reader never trusts the header with memory: a raw file's size is compared
with the declared size before anything is read, and a gzip stream is
decompressed in chunks and abandoned as soon as it holds more bytes than
declared, so a huge declared size or a gzip bomb costs at most the data that
is really there. Every problem raises :class:`~npvae.errors.DataFileError`
whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from math import prod
from pathlib import Path
from typing import BinaryIO

import numpy as np

from npvae.errors import DataFileError

#: IDX type code -> big-endian dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_NDIM = 4
#: Default upper bound on the declared payload size (4 GiB).
MAX_BYTES = 2**32
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into an array.

    Parameters
    ----------
    path
        The file. It is treated as gzip when it starts with the gzip magic
        bytes; a name ending in ``.gz`` without them is an error.
    max_bytes
        Refuse files whose header declares a larger payload than this.

    Returns
    -------
    numpy.ndarray
        An array of the declared shape, in native byte order (``uint8`` for
        MNIST), writable.

    Raises
    ------
    DataFileError
        If the file cannot be read or is not exactly one well-formed IDX
        array: bad magic number, unknown type code, bad number of
        dimensions, truncated data, trailing bytes, corrupt gzip stream.
    """
    path = Path(path)
    start = b""
    try:
        with open(path, "rb") as raw:
            start = raw.read(len(GZIP_MAGIC))
            raw.seek(0)
            if start == GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    array = _read_stream(gz, path, max_bytes, raw_size=None)
            elif path.suffix == ".gz":
                head = raw.read(16)
                if not head:
                    raise DataFileError(f"{path}: not a gzip file (the file is empty; re-download it)")
                html = head.lstrip().startswith(b"<")
                hint = "an HTML page saved as .gz?" if html else "damaged or mislabelled?"
                raise DataFileError(f"{path}: not a gzip file (starts with {head!r} — {hint} re-download it)")
            else:
                array = _read_stream(raw, path, max_bytes, raw_size=os.fstat(raw.fileno()).st_size)
    except DataFileError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        if start == GZIP_MAGIC:
            raise _gzip_error(path, exc) from exc
        raise DataFileError(f"{path}: cannot read file ({type(exc).__name__}: {exc})") from exc
    return array


def check_gzip(path: str | os.PathLike[str]) -> None:
    """Decompress a gzip file to its end, which checks its CRC and length, and discard the data.

    :func:`read_idx` stops reading once it has what the header declares, so
    a stream damaged inside can look to it like a well-formed file with
    trailing bytes; this check tells such a file apart. Memory stays at one
    chunk whatever the size.

    Raises
    ------
    DataFileError
        If the stream is cut off or corrupt, with the message
        :func:`read_idx` gives for the same fault.
    """
    try:
        with gzip.open(path, "rb") as gz:
            while gz.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(Path(path), exc) from exc


def _gzip_error(path: Path, exc: BaseException) -> DataFileError:
    """The error for a gzip stream that cannot be decompressed (gzip.BadGzipFile is an OSError)."""
    if isinstance(exc, EOFError):  # the stream stops before its end marker
        return DataFileError(
            f"{path}: truncated: the gzip stream ends before its end marker "
            "(an interrupted download? delete it and download it again)"
        )
    return DataFileError(
        f"{path}: corrupt gzip stream ({type(exc).__name__}: {exc}); delete it and download it again"
    )


def _read_stream(stream: BinaryIO | gzip.GzipFile, path: Path, max_bytes: int, raw_size: int | None) -> np.ndarray:
    head = _read_upto(stream, 4)
    if len(head) < 4:
        raise DataFileError(f"{path}: truncated: {len(head)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0:
        raise DataFileError(
            f"{path}: not an IDX file: wrong magic number {head!r} "
            "(expected two zero bytes, a type code, a dimension count)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFileError(f"{path}: not an IDX file: unknown type code 0x{code:02X} (known: {known})")
    if not 1 <= ndim <= MAX_NDIM:
        raise DataFileError(f"{path}: not an IDX file: declares {ndim} dimensions (expected 1 to {MAX_NDIM})")
    dims_raw = _read_upto(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataFileError(f"{path}: truncated: header declares {ndim} dimensions but ends inside them")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    dtype = IDX_DTYPES[code]
    expected = prod(shape) * dtype.itemsize
    declared = f"{'x'.join(map(str, shape))} {dtype.newbyteorder('=').name} ({expected} bytes)"
    # zeros counted as 1: an empty array's other dimensions must still make a shape NumPy can hold
    if prod(max(d, 1) for d in shape) * dtype.itemsize > max_bytes:
        why = "more than" if expected else "empty, but its other dimensions multiply to more than"
        raise DataFileError(f"{path}: header declares {declared}, {why} max_bytes={max_bytes}; corrupt?")
    data = bytearray()
    if raw_size is not None:
        got = raw_size - 4 - 4 * ndim
        if got == expected:
            data = _read_upto(stream, expected)
            got = len(data)  # the file may have shrunk since fstat
    else:
        data = _read_upto(stream, expected + 1)
        got = len(data)
    if got < expected:
        raise DataFileError(f"{path}: truncated: header declares {declared} but only {got} bytes follow")
    if got > expected:
        more = f"{got - expected}" if raw_size is not None else "at least 1"
        raise DataFileError(f"{path}: trailing bytes: header declares {declared} but {more} more bytes follow")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _read_upto(stream: BinaryIO | gzip.GzipFile, n: int) -> bytearray:
    """Read up to ``n`` bytes in chunks, so memory follows the data, not ``n``."""
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(_CHUNK, n - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def check_images(images: np.ndarray, path: str | os.PathLike[str], side: int = 28) -> np.ndarray:
    """Check that an IDX array holds ``uint8`` images of ``side x side`` pixels.

    Parameters
    ----------
    images
        The array read from ``path``.
    path
        The file it came from, for the error message.
    side
        Expected image height and width.

    Returns
    -------
    numpy.ndarray
        ``images`` unchanged.

    Raises
    ------
    DataFileError
        If the array is not 3-D ``(n, side, side)`` ``uint8`` data.
    """
    if images.ndim != 3:
        what = "1-D label data" if images.ndim == 1 else f"{images.ndim}-D data of shape {images.shape}"
        raise DataFileError(f"{path}: expected an image file (3 dimensions), got {what}")
    if images.shape[1:] != (side, side) or images.dtype != np.uint8:
        raise DataFileError(
            f"{path}: expected {side}x{side} uint8 images, got {images.shape[1]}x{images.shape[2]} {images.dtype}"
        )
    return images


def check_labels(labels: np.ndarray, path: str | os.PathLike[str], num_classes: int = 10) -> np.ndarray:
    """Check that an IDX array holds ``uint8`` class labels below ``num_classes``.

    Parameters
    ----------
    labels
        The array read from ``path``.
    path
        The file it came from, for the error message.
    num_classes
        Labels must lie in ``0 .. num_classes - 1``.

    Returns
    -------
    numpy.ndarray
        ``labels`` unchanged.

    Raises
    ------
    DataFileError
        If the array is not 1-D ``uint8`` data with labels in range.
    """
    if labels.ndim != 1:
        shape = "x".join(map(str, labels.shape))
        what = f"3-D image data ({shape})" if labels.ndim == 3 else f"{labels.ndim}-D data ({shape})"
        raise DataFileError(f"{path}: expected a label file (1 dimension), got {what}")
    if labels.dtype != np.uint8:
        raise DataFileError(f"{path}: expected uint8 labels, got {labels.dtype}")
    if labels.size and int(labels.max()) >= num_classes:
        raise DataFileError(f"{path}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return labels


def check_counts(
    images: np.ndarray, labels: np.ndarray, images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> None:
    """Check that an image file and a label file describe the same examples.

    Raises
    ------
    DataFileError
        If the numbers of images and labels differ.
    """
    if len(images) != len(labels):
        raise DataFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels: "
            "the files come from different splits or datasets, or one is damaged"
        )
