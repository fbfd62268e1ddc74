"""SIGKILL a training run 20 times, at chosen points, then let it finish.

The child (``_kill_child.py``) pauses before each step's callback returns and
inside each checkpoint write, and waits for the parent's word, so where each
kill lands is chosen here, not by the machine's speed: inside a checkpoint
write (the temporary written and fsynced, the rename not yet done), between
batches, or while the child runs freely for a few milliseconds (mid-step or
mid-write). Each child is killed only after it has saved at least one
checkpoint of its own, so progress must strictly advance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from npvae.checkpoint import load_checkpoint

CHILD = Path(__file__).with_name("_kill_child.py")
KILLS = 20
WHERE = ("write", "batch", "running")

pytestmark = pytest.mark.slow


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    assert proc.returncode == -signal.SIGKILL


def run_until_killed(proc: subprocess.Popen, where: str, saves_first: int, rng: np.random.Generator,
                     folder: Path) -> bool:
    """Let the child save ``saves_first`` checkpoints, then kill it at the next point of kind ``where``.

    Returns whether the kill landed inside a checkpoint write (a finished temporary beside the
    checkpoint, not yet renamed over it).
    """
    saved, writing = 0, False
    while True:
        line = proc.stdout.readline()
        assert line and not line.startswith("done"), f"the child ran out of steps: {line!r} {proc.stderr.read()}"
        if writing:  # the write released last time has been renamed into place
            saved, writing = saved + 1, False
        kind = line.split()[0]
        assert kind in ("write", "batch"), line
        if saved >= saves_first and where == kind:
            during_write = kind == "write"
            if during_write:
                assert list(folder.glob(".run.npz.*.tmp")), "paused inside a write, but no temporary exists"
            kill(proc)
            return during_write
        if saved >= saves_first and where == "running":
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(rng.uniform(0.0, 0.02))
            kill(proc)
            return False
        writing = kind == "write"
        proc.stdin.write("go\n")
        proc.stdin.flush()


def test_sigkill_at_chosen_points_then_resume_bit_for_bit(tmp_path):
    run, straight = tmp_path / "run", tmp_path / "straight"
    run.mkdir()
    straight.mkdir()
    ckpt = run / "run.npz"
    rng = np.random.default_rng(2026)
    progress, during_write = [], 0
    for i in range(KILLS):
        proc = start(str(ckpt), "pause")
        during_write += run_until_killed(proc, WHERE[i % len(WHERE)], int(rng.integers(1, 4)), rng, run)
        vae, _, prog = load_checkpoint(ckpt)  # always loads, never half written
        assert all(np.all(np.isfinite(p)) for p in vae.params.values())
        progress.append((prog["epoch"], prog["batch"]))
        assert prog["checkpoint_every"] == 1  # resumed children keep saving every batch
    assert during_write == sum(WHERE[i % len(WHERE)] == "write" for i in range(KILLS)) == 7
    assert all(a < b for a, b in pairwise(progress)), f"progress did not strictly advance: {progress}"

    finished = start(str(ckpt), "free", str(tmp_path / "resumed.npz"))
    out, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err
    done = out.split()
    assert done[:2] == ["done", "4"], out[-500:]
    assert sorted(p.name for p in run.iterdir()) == ["run.npz"]  # the killed saves' temporaries are gone

    uninterrupted = start(str(straight / "run.npz"), "free", str(tmp_path / "straight.npz"))
    out2, err2 = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err2
    assert out2.split() == done, "the resumed run's last training loss differs from the uninterrupted run's"
    with np.load(tmp_path / "resumed.npz") as a, np.load(tmp_path / "straight.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            if name != "meta":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
