"""IDX reader: round trips and every error, on small synthetic files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from npvae.datasets.idx import IDX_DTYPES, check_counts, check_gzip, check_images, check_labels, read_idx
from npvae.errors import DataFileError


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Serialise ``array`` as an IDX file with type ``code``."""
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def random_array(code: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = IDX_DTYPES[code].newbyteorder("=")
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("code", sorted(IDX_DTYPES), ids=lambda c: f"0x{c:02X}")
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 28, 28), (2, 3, 4, 5), (0, 28, 28)])
def test_round_trip(tmp_path: Path, gz: bool, code: int, shape: tuple[int, ...]) -> None:
    array = random_array(code, shape)
    path = write(tmp_path / ("x.idx.gz" if gz else "x.idx"), idx_bytes(array, code), gz)
    got = read_idx(path)
    assert got.shape == shape
    assert got.dtype == IDX_DTYPES[code].newbyteorder("=")
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, array)
    got[...] = 0  # writable


def test_gzip_recognised_by_content_not_name(tmp_path: Path) -> None:
    array = random_array(0x08, (3, 4))
    path = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(array), gz=True)
    np.testing.assert_array_equal(read_idx(path), array)


def test_multi_member_gzip(tmp_path: Path) -> None:
    data = idx_bytes(random_array(0x08, (10, 6)))
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(data[:30]) + gzip.compress(data[30:]))
    assert read_idx(path).shape == (10, 6)


def raises(path: Path, *fragments: str) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        read_idx(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_wrong_magic(tmp_path: Path, gz: bool) -> None:
    data = b"\x01\x00" + idx_bytes(np.zeros(4, np.uint8))[2:]
    raises(write(tmp_path / "x.gz" if gz else tmp_path / "x", data, gz), "wrong magic number")


def test_unknown_type_code(tmp_path: Path) -> None:
    data = b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab"
    raises(write(tmp_path / "x", data, False), "unknown type code 0x07")


@pytest.mark.parametrize("ndim", [0, 5, 255])
def test_bad_dimension_count(tmp_path: Path, ndim: int) -> None:
    data = struct.pack(">HBB", 0, 8, ndim) + b"\x00\x00\x00\x01" * ndim + b"x"
    raises(write(tmp_path / "x", data, False), f"declares {ndim} dimensions")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    path = write(tmp_path / "train-images-idx3-ubyte.gz" if gz else tmp_path / "x", data[:-1000], gz)
    raises(path, "truncated: header declares 3x28x28 uint8 (2352 bytes) but only 1352 bytes follow")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_inside_header(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    raises(write(tmp_path / "a.gz" if gz else tmp_path / "a", data[:9], gz), "truncated", "ends inside")
    raises(write(tmp_path / "b.gz" if gz else tmp_path / "b", data[:3], gz), "truncated", "too short")


def test_trailing_bytes_raw(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros(10, np.uint8)) + b"extra"
    raises(write(tmp_path / "x", data, False), "trailing bytes", "(10 bytes) but 5 more bytes follow")


def test_trailing_bytes_gz(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros(10, np.uint8)) + b"\x00" * 10**6
    raises(write(tmp_path / "x.gz", data, True), "trailing bytes", "(10 bytes) but at least 1 more bytes follow")


def test_huge_declared_size_is_rejected_without_reading(tmp_path: Path) -> None:
    data = struct.pack(">HBBIII", 0, 0x0E, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\x00" * 64
    raises(write(tmp_path / "x.gz", data, True), "more than max_bytes")
    path = write(tmp_path / "y", struct.pack(">HBBI", 0, 8, 1, 2**31) + b"\x00" * 64, False)
    raises(path, "truncated", "2147483648 bytes", "only 64 bytes follow")
    with pytest.raises(DataFileError, match="more than max_bytes=100"):
        read_idx(write(tmp_path / "z", idx_bytes(np.zeros(101, np.uint8)), False), max_bytes=100)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_empty_shape_with_huge_dimensions_is_rejected(tmp_path: Path, gz: bool) -> None:
    """0 bytes of data, but dimensions NumPy cannot even hold as a shape (found by the fuzz test)."""
    data = struct.pack(">HBBIIII", 0, 0x08, 4, 2**24, 2**24, 2**24, 0)
    raises(write(tmp_path / "x", data, gz), "empty, but its other dimensions", "16777216x16777216x16777216x0")
    assert read_idx(write(tmp_path / "ok", idx_bytes(np.zeros((0, 28, 28), np.uint8)), gz)).shape == (0, 28, 28)


def test_html_saved_as_gz(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"<!DOCTYPE html>\n<html><body>Access denied</body></html>\n")
    raises(path, "not a gzip file", "starts with b'<!DOCTYPE html>", "HTML page", "re-download")


def test_empty_gz(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b"")
    raises(path, "not a gzip file", "empty")


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(idx_bytes(random_array(0x08, (50, 28, 28)))))
    packed[len(packed) // 2] ^= 0xFF
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(packed))
    error = raises(path, "corrupt gzip stream")
    assert error.__cause__ is not None


def test_cut_off_gzip_stream(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(random_array(0x08, (50, 28, 28))))
    path = tmp_path / "x.gz"
    path.write_bytes(packed[: len(packed) // 2])
    error = raises(path, "truncated: the gzip stream ends before its end marker", "interrupted download")
    assert isinstance(error.__cause__, EOFError)


def test_check_gzip_reads_the_stream_to_its_end(tmp_path: Path) -> None:
    """The CRC at the very end is checked (read_idx stops once it has what the header declares)."""
    data = idx_bytes(random_array(0x08, (50, 28, 28)))
    packed = bytearray(gzip.compress(data + b"\x00" * 100))
    packed[-8] ^= 0xFF  # the CRC-32 of the trailer
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataFileError) as info:
        check_gzip(path)
    assert str(info.value).startswith(f"{path}: corrupt gzip stream (BadGzipFile: CRC check failed")
    raises(path, "trailing bytes")  # what read_idx alone would say about the same file
    path.write_bytes(gzip.compress(data))
    check_gzip(path)
    path.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(DataFileError, match="truncated: the gzip stream ends"):
        check_gzip(path)


def test_missing_file(tmp_path: Path) -> None:
    raises(tmp_path / "nope.gz", "cannot read file", "FileNotFoundError")


def test_label_file_passed_as_images(tmp_path: Path) -> None:
    path = write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.arange(10, dtype=np.uint8)), True)
    with pytest.raises(DataFileError) as info:
        check_images(read_idx(path), path)
    assert str(info.value) == f"{path}: expected an image file (3 dimensions), got 1-D label data"


def test_image_file_passed_as_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((2, 28, 28), np.uint8)), False)
    with pytest.raises(DataFileError,
                       match="expected a label file \\(1 dimension\\), got 3-D image data \\(2x28x28\\)"):
        check_labels(read_idx(path), path)


def test_wrong_image_size_and_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="x.gz: expected 28x28 uint8 images, got 20x20 uint8"):
        check_images(np.zeros((2, 20, 20), np.uint8), "x.gz")
    with pytest.raises(DataFileError, match="expected 28x28 uint8 images, got 28x28 int16"):
        check_images(np.zeros((2, 28, 28), np.int16), "x.gz")
    check_images(np.zeros((2, 28, 28), np.uint8), "x.gz")


def test_labels_out_of_range() -> None:
    with pytest.raises(DataFileError, match="y: label 10 out of range 0..9"):
        check_labels(np.array([0, 10, 3], np.uint8), "y")
    check_labels(np.array([0, 9, 3], np.uint8), "y")


def test_mismatched_counts() -> None:
    images, labels = np.zeros((5, 28, 28), np.uint8), np.zeros(6, np.uint8)
    with pytest.raises(DataFileError) as info:
        check_counts(images, labels, "a/t10k-images.gz", "b/train-labels.gz")
    message = str(info.value)
    assert "a/t10k-images.gz holds 5 images" in message and "b/train-labels.gz holds 6 labels" in message
    check_counts(images, labels[:5], "a", "b")
