"""Downloading files from a list of mirrors and checking them against digests.

A file is accepted if the MD5 of its bytes as published matches, or the
SHA-256 of its decompressed bytes does (redistributors such as Debian
recompress ``.gz`` files, which changes only the former). Downloads stream
into a temporary file beside the target that is renamed only after the size
and the digests check out, so the final name never holds a partial or wrong
file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from npvae._atomic import atomic_writer
from npvae.datasets.idx import GZIP_MAGIC
from npvae.errors import ChecksumError, DataFileError
from npvae.progress import ProgressBar

_CHUNK = 1 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class DownloadError(OSError):
    """Every mirror failed; ``failures`` holds ``(url, exception)`` pairs."""

    def __init__(self, message: str, failures: Sequence[tuple[str, BaseException]]) -> None:
        super().__init__(message)
        self.failures = list(failures)


class _Digests:
    """MD5 of a byte stream and SHA-256 of its gunzipped content, fed in chunks.

    Data that does not start with the gzip magic bytes is hashed as is. A
    broken gzip stream leaves :attr:`sha256` as ``None`` with the reason in
    :attr:`problem`.
    """

    def __init__(self, md5: bool = True, sha256: bool = True) -> None:
        self._md5 = hashlib.md5() if md5 else None
        self._sha = hashlib.sha256() if sha256 else None
        self._head = b""  # the first bytes, until there are enough to tell gzip from raw
        self._gzip: bool | None = None
        self._z = zlib.decompressobj(_GZIP_WBITS)
        self.problem = ""

    def update(self, chunk: bytes) -> None:
        if self._md5 is not None:
            self._md5.update(chunk)
        if self._sha is None or self.problem:
            return
        if self._gzip is None:
            self._head += chunk
            if len(self._head) < len(GZIP_MAGIC):
                return
            self._gzip = self._head.startswith(GZIP_MAGIC)
            chunk, self._head = self._head, b""
        if not self._gzip:
            self._sha.update(chunk)
            return
        try:
            while chunk:  # members back to back, maybe zero padding, as the gzip module allows
                if self._z.eof:
                    chunk = chunk.lstrip(b"\0")
                    if not chunk:
                        break
                    self._z = zlib.decompressobj(_GZIP_WBITS)
                self._sha.update(self._z.decompress(chunk))
                chunk = self._z.unused_data if self._z.eof else b""
        except zlib.error as exc:
            self.problem = f"corrupt gzip stream: {exc}"

    @property
    def md5(self) -> str | None:
        return None if self._md5 is None else self._md5.hexdigest()

    @property
    def sha256(self) -> str | None:
        if self._sha is None or self.problem:
            return None
        if self._gzip and not self._z.eof:
            self.problem = "gzip stream cut off"
            return None
        sha = self._sha.copy()
        sha.update(self._head)  # a file shorter than the gzip magic
        return sha.hexdigest()


def _check(name: str, digests: _Digests, md5: str | None, sha256: str | None) -> None:
    """Raise :class:`ChecksumError` unless one of the expected digests matches."""
    if md5 is None and sha256 is None:
        return
    if (md5 is not None and digests.md5 == md5.lower()) or (sha256 is not None and digests.sha256 == sha256.lower()):
        return
    expected = [f"MD5 {md5} (of the file as published)"] if md5 else []
    expected += [f"SHA-256 {sha256} (of the decompressed data)"] if sha256 else []
    actual = [f"MD5 {digests.md5}"] if md5 else []
    actual += [f"SHA-256 {digests.sha256 or 'not computable: ' + digests.problem}"] if sha256 else []
    raise ChecksumError(
        f"{name}: checksum mismatch: expected {' or '.join(expected)}, got {', '.join(actual)}. "
        "The file is damaged or not the published one: delete it and download it again."
    )


def verify_file(path: str | os.PathLike[str], md5: str | None = None, sha256: str | None = None) -> None:
    """Check a file against its published digests.

    The file passes if its MD5 equals ``md5`` or the SHA-256 of its content,
    decompressed if it is gzip, equals ``sha256``. With neither given there
    is nothing to check and the call returns.

    Parameters
    ----------
    path
        The file to check.
    md5
        Expected MD5 (hex) of the file's bytes, or ``None``.
    sha256
        Expected SHA-256 (hex) of the decompressed bytes, or ``None``.

    Raises
    ------
    ChecksumError
        If neither digest matches; the message names the file, the expected
        and actual digests, and says to delete and re-download it.
    DataFileError
        If the file cannot be read.
    """
    if md5 is None and sha256 is None:
        return
    try:
        # MD5 alone first: it is cheap and settles files as published without decompressing.
        digests = _hash_file(path, _Digests(md5=md5 is not None, sha256=False))
        if md5 is not None and digests.md5 == md5.lower():
            return
        if sha256 is not None:
            digests = _hash_file(path, _Digests(md5=md5 is not None))
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read file ({exc})") from exc
    _check(str(path), digests, md5, sha256)


def file_digests(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """MD5 of a file's bytes and SHA-256 of its (decompressed) content.

    The SHA-256 is ``None`` if the file is a broken gzip stream.
    """
    digests = _hash_file(path, _Digests())
    assert digests.md5 is not None
    return digests.md5, digests.sha256


def _hash_file(path: str | os.PathLike[str], digests: _Digests) -> _Digests:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digests.update(chunk)
    return digests


def mirrors_from_env(variable: str, default: Sequence[str]) -> list[str]:
    """Mirror URLs from an environment variable (space- or comma-separated), else ``default``."""
    value = os.environ.get(variable, "")
    urls = [u for u in value.replace(",", " ").split() if u]
    return urls or list(default)


def download_file(
    filename: str,
    mirrors: Iterable[str],
    dest_dir: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``filename`` from the first mirror that serves it intact.

    Each mirror URL is joined with ``filename``. The body streams into a
    temporary file in ``dest_dir`` that is renamed to ``dest_dir/filename``
    only after its length matches ``Content-Length`` and its digests match
    (see :func:`verify_file`); on any failure (HTTP error, connection error,
    timeout, short body, checksum mismatch) the next mirror is tried and
    nothing is left behind. ``http``, ``https`` and ``file`` URLs work.

    Parameters
    ----------
    filename
        File name on the mirrors and on disk.
    mirrors
        Base URLs, tried in order.
    dest_dir
        Existing directory to save into.
    md5, sha256
        Expected digests, as in :func:`verify_file`; with neither, the file
        is only checked against ``Content-Length``.
    timeout
        Seconds to wait on connecting and on each read.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    pathlib.Path
        The downloaded file.

    Raises
    ------
    DownloadError
        If every mirror failed; the message lists each URL and why.
    """
    target = Path(dest_dir) / filename
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot download {filename}: directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise PermissionError(f"cannot download {filename}: directory {target.parent} is not writable")
    failures: list[tuple[str, BaseException]] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            _fetch(url, target, md5, sha256, timeout, progress)
            return target
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError covers a malformed URL and DataFileError/ChecksumError.
            failures.append((url, exc))
    if not failures:
        raise DownloadError(f"cannot download {filename}: no mirrors given", failures)
    lines = "\n".join(f"  {url}: {_describe(exc)}" for url, exc in failures)
    raise DownloadError(f"could not download {filename} from any mirror:\n{lines}", failures)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return f"{type(exc).__name__}: {exc}"


def _fetch(url: str, target: Path, md5: str | None, sha256: str | None, timeout: float, progress: bool) -> None:
    digests = _Digests(md5=md5 is not None, sha256=sha256 is not None)
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_writer(target) as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        bar = ProgressBar(total, desc=target.name, unit="B") if progress else None
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digests.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and received != total:
            raise DataFileError(f"{url}: incomplete download: got {received} of {total} bytes")
        _check(url, digests, md5, sha256)
