"""Property tests: on corrupt input the IDX reader raises DataFileError and nothing else.

Every generated file either parses to exactly what its header and payload
say, or raises :class:`DataFileError`; no other exception, and peak traced
memory stays small (the reader must not allocate what a header merely
declares).
"""

from __future__ import annotations

import gzip
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from npvae.datasets.idx import IDX_DTYPES, read_idx
from npvae.errors import DataFileError

PEAK_LIMIT = 4 * 2**20
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def read_checked(path: Path, data: bytes) -> np.ndarray | DataFileError:
    """Write ``data`` to ``path``, read it back, check the outcome and the memory used."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        array = read_idx(path)
    except DataFileError as exc:
        assert str(exc).startswith(str(path))
        array = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak allocation {peak} bytes for a {len(data)}-byte input"
    # --hypothesis-show-statistics counts the two outcomes: only the first is a corrupt file caught
    if currently_in_test_context():
        event("refused: DataFileError" if isinstance(array, DataFileError) else "read: the input was a valid file")
    if isinstance(array, np.ndarray):
        content = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        zero, code, ndim = struct.unpack(">HBB", content[:4])
        shape = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
        payload = content[4 + 4 * ndim :]
        assert zero == 0 and array.shape == shape and array.dtype == IDX_DTYPES[code].newbyteorder("=")
        swap = sys.byteorder == "little" and array.dtype.itemsize > 1
        assert (array.byteswap() if swap else array).tobytes() == payload
    return array


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """A well-formed IDX file with a small random shape, type and payload."""
    code = draw(st.sampled_from(sorted(IDX_DTYPES)))
    shape = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
    size = int(np.prod(shape)) * IDX_DTYPES[code].itemsize
    header = struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    return header + draw(st.binary(min_size=size, max_size=size))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "append", "magic", "dims", "type"]))
    out = bytearray(data)
    if kind == "truncate":
        del out[draw(st.integers(0, max(len(out) - 1, 0))) :]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    elif kind == "append":
        out += draw(st.binary(min_size=1, max_size=64))
    elif kind == "magic":
        out[:2] = draw(st.binary(min_size=2, max_size=2).filter(lambda b: b != b"\x00\x00"))
    elif kind == "dims":
        start = 4 + 4 * draw(st.integers(0, max(min(out[3], (len(out) - 8) // 4), 0)))
        out[start : start + 4] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
    elif kind == "type":
        out[2] = draw(st.integers(0, 255))
    return bytes(out)


@settings(FUZZ, max_examples=300)
@given(data=st.data(), gz=st.sampled_from(["raw", "gz", "gz-then-corrupt"]))
def test_mutated_idx_files(workdir: Path, data: st.DataObject, gz: str) -> None:
    content = data.draw(mutated(data.draw(idx_files())))
    if gz == "raw":
        read_checked(workdir / "x-idx3-ubyte", content)
        return
    packed = gzip.compress(content, mtime=0)
    if gz == "gz-then-corrupt":
        packed = data.draw(mutated(packed))
    read_checked(workdir / "x-idx3-ubyte.gz", packed)


@settings(FUZZ, max_examples=100)
@given(data=idx_files(), gz=st.booleans())
def test_unmutated_idx_files_read_exactly(workdir: Path, data: bytes, gz: bool) -> None:
    """The files the mutations start from are valid: each reads to exactly its header's shape and payload."""
    array = read_checked(workdir / ("ok-idx3-ubyte.gz" if gz else "ok-idx3-ubyte"),
                         gzip.compress(data, mtime=0) if gz else data)
    assert isinstance(array, np.ndarray)


@settings(FUZZ, max_examples=150)
@given(garbage=st.binary(max_size=2048), name=st.sampled_from(["g.gz", "g"]), gzip_magic=st.booleans())
def test_random_garbage(workdir: Path, garbage: bytes, name: str, gzip_magic: bool) -> None:
    data = (b"\x1f\x8b\x08\x00" + garbage) if gzip_magic else garbage
    read_checked(workdir / name, data)


@settings(FUZZ, max_examples=100)
@given(
    code=st.sampled_from(sorted(IDX_DTYPES)),
    dims=st.lists(st.integers(2**20, 2**32 - 1), min_size=1, max_size=4),
    payload=st.binary(max_size=4096),
    gz=st.booleans(),
)
def test_huge_declared_sizes(workdir: Path, code: int, dims: list[int], payload: bytes, gz: bool) -> None:
    header = struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    data = gzip.compress(header + payload) if gz else header + payload
    error = read_checked(workdir / ("h.gz" if gz else "h"), data)
    assert isinstance(error, DataFileError)
    assert "truncated" in str(error) or "max_bytes" in str(error)


def test_gzip_bomb_is_not_decompressed_in_full(workdir: Path) -> None:
    header = struct.pack(">HBBI", 0, 8, 1, 100)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(2**20)
    bomb = compressor.compress(header) + b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 100_000  # 64 MiB of zeros
    error = read_checked(workdir / "bomb.gz", bomb)
    assert isinstance(error, DataFileError) and "trailing bytes" in str(error)
