"""examples/reproduce_fashion_mnist.py as a user runs it: a tiny run, a time budget, and a resume that equals it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "reproduce_fashion_mnist.py"
DATA = ROOT.parent / "shared" / "data"
TINY = ["--dataset", "mnist", "--model", "default", "--epochs", "3", "--kl-warmup", "2", "--early-stopping", "2",
        "--k", "20", "--test-limit", "60", "--data", str(DATA)]

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_budgeted_run_resumed_equals_an_uninterrupted_one(tmp_path):
    if not (DATA / "mnist").is_dir():
        pytest.skip("../shared/data/mnist is not beside the checkout")
    straight, budget = tmp_path / "straight", tmp_path / "budget"
    run(*TINY, "--out", str(straight))
    first = run(*TINY, "--out", str(budget), "--max-minutes", "0")  # stops after its first epoch
    assert json.loads((budget / "result.json").read_text())["protocol_finished"] is False
    assert first.stdout.count("\nepoch ") + first.stdout.startswith("epoch ") == 1
    run(*TINY, "--out", str(budget), "--resume")
    a, b = (json.loads((d / "result.json").read_text()) for d in (straight, budget))
    assert b["protocol_finished"] is True and a["epochs_trained"] == b["epochs_trained"] == 3
    for key in ("test_log_likelihood", "standard_error", "test_negative_elbo", "active_units", "kl_per_dim"):
        assert a[key] == b[key], key
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (straight, budget))
    assert [r["val_nelbo"] for r in ha] == [r["val_nelbo"] for r in hb]
    assert a["test_log_likelihood"] > -a["test_negative_elbo"] - 1.0  # the k = 20 bound, near or above the ELBO


def test_missing_data_is_one_line_and_exit_2(tmp_path):
    """Data that is not where --data says: one line naming what is missing and where it looked, exit 2, no
    traceback (MNIST's loader would try a download first: the empty folder makes it fail fast here too)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "fashion-mnist", "--data", str(empty),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found in" in lines[0] and str(empty) in lines[0] and "--data" in lines[0], lines
